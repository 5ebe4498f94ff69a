"""The drift scheduler's fencing and job store against the real Postgres: a scheduler whose lock
session was killed while a second one waited stops and prunes nothing; a forged row in the job
store table older versions kept is never unpickled."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy.exc import DatabaseError

from drift.jobs import _CONTEXTS, _LOCK, run_prune
from drift.scheduler import job_table, run_scheduler
from freshloop.core.exceptions import FencedError
from freshloop.core.settings import Settings
from tests.drift.retrain_fixtures import drift_ns
from tests.online_learning.stack import wait_for
from tests.online_learning.test_fencing_learner import kill_session, lock_sessions

pytestmark = pytest.mark.integration

__all__ = ["drift_ns"]


@pytest.fixture
def sched_ns(drift_ns: Settings) -> Iterator[Settings]:
    settings = drift_ns.model_copy(
        update={"drift_interval_s": 600.0, "retention_drift_reports_keep": 1}
    )
    yield settings
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{job_table(settings.namespace)}"')


def _never_called(settings: Settings, *, decide: Any) -> dict[str, Any]:
    msg = "the drift check was not expected to run in this test"
    raise AssertionError(msg)


def _reports(settings: Settings, add: int = 0) -> int:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for _ in range(add):
            conn.execute(
                "INSERT INTO drift_reports (namespace, status, summary, report, decision, html) "
                "VALUES (%s, 'ok', %s::jsonb, '{}'::jsonb, '{}'::jsonb, '')",
                (settings.namespace, orjson.dumps({}).decode()),
            )
        row = conn.execute(
            "SELECT count(*) FROM drift_reports WHERE namespace = %s", (settings.namespace,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _in_thread(
    settings: Settings, **kwargs: Any
) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_scheduler(settings, stop, check=_never_called, first_run_in_s=600, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - what the scheduler ended with
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, errors


def test_a_superseded_scheduler_stops_and_prunes_nothing(
    sched_ns: Settings, tmp_path: Path
) -> None:
    """A second scheduler (another process) waits; the first one's lock session is killed. The
    first one stops, and its engine prunes nothing any more (the old code went on, and pruned
    the namespace's reports down to one)."""
    assert _reports(sched_ns, add=3) == 3
    key = f"freshloop drift scheduler {sched_ns.namespace}"
    thread, stop, errors = _in_thread(sched_ns)
    second = None
    try:
        wait_for(
            lambda: bool(lock_sessions(sched_ns, key, granted=True)),
            20,
            "the first scheduler's lock",
        )
        (first_pid,) = lock_sessions(sched_ns, key, granted=True)
        with _LOCK:
            context = _CONTEXTS[sched_ns.namespace]  # what the first one's jobs run with
        log = (tmp_path / "second.log").open("wb")
        second = subprocess.Popen(  # another process: a scheduler's context is per process
            [sys.executable, "-m", "freshloop.app.cli", "drift", "run"],
            env=sched_ns.environment(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60  # imports, then it waits for the lock
        while time.monotonic() < deadline and not lock_sessions(sched_ns, key, granted=False):
            time.sleep(0.2)
        kill_session(sched_ns, first_pid)
        thread.join(10)
        assert not thread.is_alive(), "the superseded scheduler goes on"
        assert len(errors) == 1 and isinstance(errors[0], FencedError), errors
        assert "is no longer the owner" in str(errors[0])
        with pytest.raises(DatabaseError):  # its prune, run now, is refused...
            run_prune(context)
        assert _reports(sched_ns) == 3  # ...and prunes nothing
        holders = lock_sessions(sched_ns, key, granted=True)
        assert len(holders) == 1 and holders != [first_pid]
        assert second.poll() is None, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        stop.set()
        thread.join(30)
        if second is not None:
            second.terminate()
            second.wait(30)


class _Forged:
    """What a forged job row can hold: unpickling it runs code (here, touches a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_a_forged_job_store_row_is_never_unpickled(sched_ns: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    table = job_table(sched_ns.namespace)
    with psycopg.connect(sched_ns.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(  # APScheduler 3's SQLAlchemyJobStore table, as older versions made it
            f'CREATE TABLE "{table}" (id varchar(191) PRIMARY KEY, '
            "next_run_time double precision, job_state bytea NOT NULL)"
        )
        conn.execute(
            f'INSERT INTO "{table}" VALUES (%s, 0, %s)',  # noqa: S608 - our own test table
            ("forged", pickle.dumps({"version": 1, "id": "forged", "x": _Forged(marker)})),
        )

    def gone() -> bool:
        with psycopg.connect(sched_ns.postgres_conninfo()) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()
        return row is not None and row[0] is None

    thread, stop, errors = _in_thread(sched_ns)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not marker.exists() and not gone():
            time.sleep(0.2)
        time.sleep(2)  # a scheduler that reads its store does so at once
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert not marker.exists(), "a job store row was unpickled"
    assert gone()  # the old table is dropped unread
