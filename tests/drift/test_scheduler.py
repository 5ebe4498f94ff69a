"""The drift scheduler against the real Postgres: the jobs are defined in code under their
explicit ids (nothing stored, nothing unpickled), missed runs coalesce, cycles never overlap, one
scheduler per namespace, and a drifted report runs one retrain, after which the cool-down holds.

The drift check itself is H1's ``drift.check.run_check`` (exercised through the whole stack in
``test_loop_stack.py``); here a scripted check stores a report with a chosen summary, so the
scheduler, the policy, the retrain and their tables are what is tested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from sqlalchemy import Engine, create_engine

from drift.exceptions import SchedulerBusyError
from drift.jobs import CycleResult, JobContext, register, unregister
from drift.ledger import RetrainLedger
from drift.scheduler import build_scheduler, job_id, job_table, prune_job_id, run_scheduler
from freshloop.core.settings import Settings
from online_learning import ModelRegistry
from tests.drift.retrain_fixtures import (
    Concept,
    drift_engine,
    drift_ns,
    insert_examples,
    make_rows,
    trained_model,
)
from tests.online_learning.stack import wait_for

pytestmark = pytest.mark.integration

__all__ = ["drift_engine", "drift_ns"]


@pytest.fixture
def sched_ns(drift_ns: Settings) -> Iterator[Settings]:
    """A namespace whose scheduler checks every second; its job table is dropped afterwards."""
    settings = drift_ns.model_copy(update={"drift_interval_s": 1.0, "retrain_cooldown_s": 600.0})
    yield settings
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{job_table(settings.namespace)}"')


class ScriptedCheck:
    """Stands in for ``run_check``: stores a report with ``summary`` and the policy's decision."""

    def __init__(self, summary: Mapping[str, Any], sleep_s: float = 0.0) -> None:
        self.summary = dict(summary)
        self.sleep_s = sleep_s
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, settings: Settings, *, decide: Any) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.sleep_s)
            decision = decide(self.summary)
            with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
                report_id = conn.execute(
                    "INSERT INTO drift_reports (namespace, status, summary, report, decision, html)"
                    " VALUES (%s, %s, %s::jsonb, '{}'::jsonb, %s::jsonb, '') RETURNING report_id",
                    (
                        settings.namespace,
                        "drift" if decision["drift"] else "ok",
                        orjson.dumps(self.summary).decode(),
                        orjson.dumps(decision).decode(),
                    ),
                ).fetchone()[0]  # type: ignore[index]
            return {"report_id": report_id, "decision": decision}
        finally:
            with self._lock:
                self.active -= 1


def _run_in_thread(
    settings: Settings, check: ScriptedCheck, **kwargs: Any
) -> tuple[threading.Thread, threading.Event, list[CycleResult]]:
    stop = threading.Event()
    cycles: list[CycleResult] = []
    thread = threading.Thread(
        target=run_scheduler,
        args=(settings, stop),
        kwargs={"check": check, "on_cycle": cycles.append, "first_run_in_s": 0.2, **kwargs},
        daemon=True,
    )
    thread.start()
    return thread, stop, cycles


def _job_table_exists(settings: Settings) -> bool:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{job_table(settings.namespace)}"',))
        return row.fetchone()[0] is not None  # type: ignore[index]


def test_the_jobs_are_defined_in_code_and_run_without_overlap(sched_ns: Settings) -> None:
    engine = create_engine(sched_ns.sqlalchemy_url())
    scheduler = build_scheduler(sched_ns, engine)
    scheduler.start(paused=True)  # the job defaults apply once added to a started scheduler
    try:
        jobs = {j.id: j for j in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
        engine.dispose()
    assert set(jobs) == {job_id(sched_ns.namespace), prune_job_id(sched_ns.namespace)}
    prune = jobs[prune_job_id(sched_ns.namespace)]
    assert prune.func_ref == "drift.jobs:prune_job"
    assert prune.args == (sched_ns.namespace,)
    assert prune.trigger.interval.total_seconds() == sched_ns.retention_interval_s
    job = jobs[job_id(sched_ns.namespace)]
    assert job.id == f"drift-check:{sched_ns.namespace}"
    assert job.func_ref == "drift.jobs:drift_check_job"
    assert job.args == (sched_ns.namespace,) and job.kwargs == {}
    assert job.coalesce is True and job.max_instances == 1
    assert job.trigger.interval.total_seconds() == sched_ns.drift_interval_s
    check = ScriptedCheck({"dataset_drift_share": 0.0}, sleep_s=1.5)  # slower than the interval
    thread, stop, cycles = _run_in_thread(sched_ns, check)
    try:
        wait_for(lambda: len(cycles) >= 2, 30, "two cycles")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not _job_table_exists(sched_ns)  # no job store rows: nothing pickled in Postgres
    # A cycle of 1.5 s every 1 s: never two at once (max_instances=1).
    assert check.max_active == 1
    assert all(c.decision["action"] == "none" and c.retrain is None for c in cycles)


def test_runs_missed_while_down_coalesce_into_one(sched_ns: Settings) -> None:
    check = ScriptedCheck({"dataset_drift_share": 0.0})
    engine = create_engine(sched_ns.sqlalchemy_url())
    register(JobContext(sched_ns, engine, check=check))
    # As if the process had been down for five intervals: the job is overdue.
    scheduler = build_scheduler(sched_ns, engine, first_run_in_s=-5.5)
    submitted: list[JobSubmissionEvent] = []
    scheduler.add_listener(submitted.append, EVENT_JOB_SUBMITTED)
    scheduler.start()
    try:
        wait_for(lambda: check.calls >= 1, 20, "the overdue run")
    finally:
        scheduler.shutdown(wait=True)
        unregister(sched_ns.namespace)
        engine.dispose()
    first = submitted[0]
    assert first.job_id == job_id(sched_ns.namespace)
    assert len(first.scheduled_run_times) == 1  # six missed run times, one run
    missed_by = datetime.now(UTC) - first.scheduled_run_times[0]
    assert missed_by.total_seconds() < 5  # the newest missed time, not the oldest


def test_one_scheduler_per_namespace(sched_ns: Settings) -> None:
    check = ScriptedCheck({"dataset_drift_share": 0.0})
    thread, stop, cycles = _run_in_thread(sched_ns, check)
    try:
        wait_for(lambda: len(cycles) >= 1, 30, "the first cycle")
        with pytest.raises(SchedulerBusyError, match="one 'freshloop drift run' per namespace"):
            run_scheduler(sched_ns, threading.Event(), check=check, lock_wait_s=0.5)
    finally:
        stop.set()
        thread.join(30)
    # Once the first one stopped, a new scheduler may run.
    thread, stop, cycles = _run_in_thread(sched_ns, check)
    try:
        wait_for(lambda: len(cycles) >= 1, 30, "a cycle of the second scheduler")
    finally:
        stop.set()
        thread.join(30)


def test_a_drifted_report_runs_one_retrain_then_the_cool_down_holds(
    sched_ns: Settings, drift_engine: Engine
) -> None:
    key = sched_ns.model_signing_key.get_secret_value().encode()
    engine = drift_engine
    registry = ModelRegistry(engine, sched_ns.namespace, key)
    registry.register(
        trained_model(make_rows(3000, Concept("a"), seed=1), "champion-old"), "champion"
    )
    insert_examples(
        sched_ns,
        make_rows(800, Concept("b"), seed=2),
        registry.load("champion-old"),
        end=datetime.now(UTC),
        learn=True,
    )
    check = ScriptedCheck({"dataset_drift_share": 0.8, "n_current": 800})
    thread, stop, cycles = _run_in_thread(sched_ns, check)
    try:
        wait_for(lambda: len(cycles) >= 4, 60, "four cycles")
    finally:
        stop.set()
        thread.join(30)
    first, *rest = cycles
    assert first.decision["action"] == "retrain"
    assert first.retrain is not None and first.retrain.status == "promoted", first.retrain
    assert all(c.decision["action"] == "none" and c.retrain is None for c in rest)
    assert all("cool-down" in (c.decision["blocked"] or "") for c in rest)
    assert all(c.decision["drift"] for c in rest)  # still drifted, still reported
    (row,) = RetrainLedger(engine, sched_ns.namespace).latest()
    assert row["trigger"] == "policy" and row["report_id"] == first.report_id
    assert row["reason"] == "dataset drift share 0.80 >= 0.50"
    assert registry.champion_ref().version == row["challenger_version"]  # type: ignore[union-attr]


def test_stopping_the_scheduler_interrupts_a_retrain_and_records_it(
    sched_ns: Settings, drift_engine: Engine
) -> None:
    settings = sched_ns.model_copy(update={"retrain_epochs": 40})  # a long retrain
    registry = ModelRegistry(
        drift_engine, settings.namespace, settings.model_signing_key.get_secret_value().encode()
    )
    registry.register(
        trained_model(make_rows(500, Concept("a"), seed=1), "champion-old"), "champion"
    )
    insert_examples(
        settings,
        make_rows(4000, Concept("b"), seed=2),
        registry.load("champion-old"),
        end=datetime.now(UTC),
    )
    ledger = RetrainLedger(drift_engine, settings.namespace)
    thread, stop, cycles = _run_in_thread(settings, ScriptedCheck({"dataset_drift_share": 1.0}))
    try:
        wait_for(
            lambda: (ledger.running() or {}).get("progress", {}).get("phase") == "training",
            30,
            "the retrain to train",
        )
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    (row,) = ledger.latest()
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["detail"] == "RetrainStoppedError: the drift scheduler is stopping"
    assert registry.champion_ref().version == "champion-old"  # type: ignore[union-attr]
    assert cycles and cycles[0].error == "the drift scheduler is stopping"
