"""The main job, short: the demo runs the whole loop through the real stack and its summary shows
features equal to the oracle, every payment scored, outcomes learned with a useful ROC AUC, and
drift reports written by the scheduler while the fraud pattern changed."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from rich.console import Console

from drift.scheduler import job_table
from freshloop.demo import run_demo
from freshloop.settings import Settings

pytestmark = pytest.mark.integration

_TABLES = (
    "retrains",
    "drift_reports",
    "training_examples",
    "learner_checkpoints",
    "model_registry",
)


@pytest.fixture
def demo_ns(pipeline: Settings) -> Iterator[Settings]:
    tag = f"demo{uuid.uuid4().hex[:8]}"
    settings = pipeline.model_copy(
        update={
            "redis_namespace": tag,
            "predictions_topic": f"{tag}.predictions",
            "metrics_port": 0,
            "api_port": 0,
        }
    )
    yield settings
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(match=f"{tag}:*", count=1000):
        client.delete(key)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (tag,))  # noqa: S608
        conn.execute(f"DROP TABLE IF EXISTS {job_table(tag)}")


def test_short_demo_shows_the_loop(demo_ns: Settings) -> None:
    out = io.StringIO()
    summary = run_demo(
        demo_ns,
        rate=40,
        duration=60,
        drift_at=30,
        console=Console(file=out, width=120),
    )
    text = out.getvalue()
    assert summary.mismatches == 0, text
    assert summary.verified_entities > 0
    snap = summary.snapshot
    assert snap.errors == [], text
    assert summary.payments > 1000
    assert snap.scored >= 0.95 * summary.payments, text
    assert snap.learned > 0.5 * summary.payments, text
    assert snap.auc is not None and snap.auc > 0.7, text
    assert snap.drift_reports >= 1, text
    assert summary.dashboard is not None and summary.dashboard.startswith("http://127.0.0.1:")
    assert "summary" in text and "verify" in text
