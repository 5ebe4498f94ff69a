"""A source that goes back, through the real stack: the feature pipeline runs, its Postgres is
replaced by an older copy of itself (same cluster, same timeline, a lower WAL position: a restore
from a file-level backup), and the pipeline stops with the sentence naming the rebuild; after
``freshloop features rebuild --reset-connector`` and a restart, verify finds 0 mismatches over
every entity. And a real TRUNCATE of a captured table is refused loudly, not skipped.

Both replace or empty the stack's database: run them on a stack of their own (``make faults``
with FRESHLOOP_* settings naming other ports and another FRESHLOOP_HOME), never a shared one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connectors import ConnectClient
from feature_pipelines import SAMPLE_FEATURES, FeatureStore, verify_until_clean
from feature_pipelines.cluster_read import store_for
from feature_pipelines.source import source_key
from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from tests.feature_pipelines.test_pipeline_stack import _start_at_end
from tests.fixtures import drop_namespace
from tests.redis_layout import client_for, drop_keys
from tests.system.fixtures import Proc, settings_env, stack_of, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

_WORKLOAD = WorkloadConfig(
    rate=40, customers=40, merchants=8, label_delay_s=1.0, correction_share=0.1, seed=23
)


@pytest.fixture
def own(pipeline: Settings) -> Iterator[Settings]:
    """A namespace of the test's own whose group starts at the change topics' end."""
    tag = f"rw{uuid.uuid4().hex[:8]}"
    settings = pipeline.model_copy(update={"redis_namespace": tag, "metrics_port": 0})
    _start_at_end(settings)
    yield settings
    drop_keys(client_for(settings), f"{tag}:*")  # every primary of a cluster too
    drop_namespace(settings, tag)


def _run(settings: Settings, tmp: Path, name: str) -> Proc:
    return Proc(
        name,
        ["--log-level", "INFO", "features", "run"],
        settings_env(settings),
        tmp / f"{name}.log",
    )


def _store(settings: Settings) -> FeatureStore:
    return store_for(settings, SAMPLE_FEATURES)  # one Redis or a Redis Cluster


def _wal(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def _connector_running(settings: Settings) -> None:
    with ConnectClient(settings.connect_url) as client:
        client.wait_running(settings.connector_name, wait_s=180)


def _recorded_lsn(settings: Settings) -> int:
    client = client_for(settings)
    raw = client.hget(source_key(settings.namespace, f"{settings.namespace}-features"), "lsn")
    return int(raw or 0)


def test_a_database_replaced_by_an_older_copy_stops_the_pipeline_until_rebuilt(
    own: Settings, tmp_path: Path
) -> None:
    stack = stack_of(own)
    [postgres] = stack.select(["postgres"])
    older = postgres.data.parent / f"older-{uuid.uuid4().hex[:6]}"
    newer = postgres.data.parent / f"newer-{uuid.uuid4().hex[:6]}"

    # the backup: a file-level copy of the stopped cluster
    stack.down(["postgres"])
    subprocess.run(["cp", "-a", str(postgres.data), str(older)], check=True)
    stack.up(["postgres"])
    _connector_running(own)
    copied_at = _wal(own)

    first = _run(own, tmp_path, "features-1")
    try:
        report = run_simulation(own, _WORKLOAD, 6)
        result = verify_until_clean(
            own.postgres_conninfo(),
            _store(own),
            wait_s=120,
            only={"customer": report.customers, "merchant": report.merchants},
        )
        assert result.mismatches == [] and result.entities_checked > 0
        wait_for(lambda: _recorded_lsn(own) > copied_at, 30, "the WAL position recorded")

        # the database goes back: the older copy comes back in its place
        stack.down(["postgres"])
        postgres.data.rename(newer)
        older.rename(postgres.data)
        stack.up(["postgres"])
        assert _wal(own) < _recorded_lsn(own)
        wait_for(lambda: not first.alive(), 120, "the pipeline to stop on the rewound source")
    finally:
        code = first.stop()
    log = first.log()
    assert code == 2, log[-3000:]
    assert "The change source of namespace" in log, log[-3000:]
    assert "is below" in log and "the highest position already applied" in log
    assert "freshloop features rebuild --reset-connector" in log

    # a restart alone is refused with the same sentence
    again = _run(own, tmp_path, "features-2")
    wait_for(lambda: not again.alive(), 120, "the restarted pipeline to refuse")
    assert again.stop() == 2 and "freshloop features rebuild --reset-connector" in again.log()

    # the documented rebuild
    rebuild = subprocess.run(
        [sys.executable, "-m", "freshloop.app.cli", "features", "rebuild", "--reset-connector"],
        env=settings_env(own),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    third = _run(own, tmp_path, "features-3")
    try:
        wait_for(lambda: "redis_rebuild_started" in third.log(), 120, "the rebuild to start")
        after = run_simulation(own, _WORKLOAD, 4)
        wait_for(lambda: "redis_rebuild_finished" in third.log(), 600, "the rebuild to finish")
        result = verify_until_clean(own.postgres_conninfo(), _store(own), wait_s=180)
        assert result.entities_checked >= len(after.customers)
        assert result.mismatches == [], result.mismatches[:10]
        assert third.alive(), third.log()[-3000:]
    finally:
        assert third.stop() == 0, third.log()[-3000:]
        shutil.rmtree(newer, ignore_errors=True)


def test_a_truncate_of_a_captured_table_is_refused_loudly(own: Settings, tmp_path: Path) -> None:
    stack_of(own)  # a stack of our own: the table is emptied
    proc = _run(own, tmp_path, "features")
    try:
        run_simulation(own, _WORKLOAD, 3)
        with psycopg.connect(own.postgres_conninfo(), autocommit=True) as conn:
            conn.execute("TRUNCATE payment_outcomes")
        wait_for(lambda: "source_truncated" in proc.log(), 120, "the truncate to be refused")
        assert proc.alive()
    finally:
        proc.stop()
    log = proc.log()
    assert "table payment_outcomes at" in log and "freshloop features rebuild" in log
    client = client_for(own)
    key = source_key(own.namespace, f"{own.namespace}-features")
    assert (client.hget(key, "truncated") or b"").startswith(b"payment_outcomes at ")

    # the rebuild the sentence names: exact again, and the refusal forgotten
    rebuild = subprocess.run(
        [sys.executable, "-m", "freshloop.app.cli", "features", "rebuild"],
        env=settings_env(own),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rebuild.returncode == 0, rebuild.stdout + rebuild.stderr
    again = _run(own, tmp_path, "features-again")
    try:
        wait_for(lambda: "redis_rebuild_finished" in again.log(), 600, "the rebuild to finish")
        result = verify_until_clean(own.postgres_conninfo(), _store(own), wait_s=180)
        assert result.entities_checked > 0
        assert result.mismatches == [], result.mismatches[:10]
        assert client.hget(key, "truncated") is None
        assert "source_truncated" not in again.log()
    finally:
        assert again.stop() == 0, again.log()[-3000:]
