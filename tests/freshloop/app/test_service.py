"""``freshloop serve`` when one of its threads dies: the process exits non-zero naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from freshloop.core.settings import Settings
from tests.fixtures import drop_namespace

pytestmark = pytest.mark.integration


@pytest.fixture
def serve_ns(pipeline: Settings) -> Iterator[Settings]:
    tag = f"t{uuid.uuid4().hex[:10]}"
    quiet = urlunsplit(urlsplit(pipeline.redis_url)._replace(path="/3"))  # few keys to clean
    settings = pipeline.model_copy(
        update={
            "redis_namespace": tag,
            "redis_url": quiet,
            "predictions_topic": f"{tag}.predictions",
        }
    )
    yield settings
    drop_namespace(settings, tag)


def test_a_dead_thread_stops_the_process_with_an_error(serve_ns: Settings) -> None:
    """Another learner holds the namespace: the learner thread ends with LearnerBusyError, and
    instead of serving on without it, ``freshloop serve`` exits non-zero saying so."""
    env = {
        **os.environ,
        "FRESHLOOP_REDIS_NAMESPACE": serve_ns.namespace,
        "FRESHLOOP_REDIS_URL": serve_ns.redis_url,
        "FRESHLOOP_PREDICTIONS_TOPIC": serve_ns.predictions_topic_name,
        "FRESHLOOP_METRICS_PORT": "0",
        "FRESHLOOP_API_PORT": "0",
        "FRESHLOOP_LEARNER_START": "latest",
    }
    with psycopg.connect(serve_ns.postgres_conninfo(), autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtext(%s))", (f"freshloop learner {serve_ns.namespace}",)
        )
        proc = subprocess.run(
            [sys.executable, "-m", "freshloop.app.cli", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "thread_died thread=learner error=LearnerBusyError" in proc.stderr
    assert "error: thread learner died: LearnerBusyError" in proc.stderr
