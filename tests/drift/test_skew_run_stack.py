"""The skew audit after a simulated run through the real stack: payments written by the
simulator (updates, refunds, corrections and deletes included), applied by the feature
pipeline, scored, labelled and logged by the learner; then ``freshloop skew report`` and the
scheduled drift check find no input differing beyond the tolerance.

What the audit compares is the logged vector (Redis, read after the batch that applied the
insert) with the history's at the payment's own commit: they differ only where another change
of the same customer or merchant shared the batch, within ``FRESHLOOP_SKEW_TOLERANCE_S``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine

from drift.jobs import JobContext, run_cycle
from drift.skew_audit import audit
from drift.store import load_report
from freshloop.app.cli import cli
from freshloop.core.settings import Settings, load_settings
from freshloop.simulate import WorkloadConfig, run_simulation
from online_learning import LearnerService
from tests.online_learning.stack import ScoringPipeline, learn_ns, wait_for

# about a minute on the shared 2 cores (simulation, learning, the audits): not in make test
pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["learn_ns"]  # the fixture, re-exported for pytest

WORKLOAD = WorkloadConfig(
    rate=30,
    customers=60,
    merchants=12,
    label_delay_s=1.0,
    refund_share=0.05,
    correction_share=0.05,
    delete_share=0.02,
    seed=29,
)


def _logged(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM training_examples WHERE namespace = %s", (settings.namespace,)
        ).fetchone()
    return int(row[0]) if row else 0


def _outcomes(settings: Settings, ids: set[int]) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM payment_outcomes WHERE payment_id = ANY(%s)", (list(ids),)
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def run_ns(learn_ns: Settings) -> Iterator[tuple[Settings, Engine]]:
    """A simulated run scored and learned in the test's namespace; no policy retrain (the
    scheduled check below only reports)."""
    settings = learn_ns.model_copy(
        update={
            "skew_sample": 1000,
            "retrain_on_concept_alarm": False,
            "retrain_drift_share": 1.0,
            "retrain_auc_drop": 1.0,
        }
    )
    learner = LearnerService(settings)
    thread = threading.Thread(target=learner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: learner.counts.checkpoints >= 1, 30, "the learner's first checkpoint")
        with ScoringPipeline(settings):
            report = run_simulation(settings, WORKLOAD, duration_s=8)
            outcomes = _outcomes(settings, report.payment_ids)
            wait_for(lambda: _logged(settings) >= outcomes, 40, "every outcome learned")
    finally:
        learner.stop.set()
        thread.join(timeout=30)
    engine = create_engine(settings.sqlalchemy_url())
    yield settings, engine
    engine.dispose()


def test_a_simulated_run_has_no_skew_beyond_the_tolerance(
    run_ns: tuple[Settings, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, engine = run_ns
    logged = _logged(settings)
    assert logged >= 100

    started = time.perf_counter()
    summary = audit(settings)
    print(
        f"skew after a simulated run: examples={summary.examples} of {summary.sampled} "
        f"seconds={time.perf_counter() - started:.2f}"
    )
    assert summary.sampled == logged and summary.no_history == 0
    assert summary.compared == logged
    assert summary.examples.get("beyond", 0) == 0, {
        name: s.to_dict()["largest"] for name, s in summary.inputs.items() if s.beyond
    }
    assert summary.status == "ok" and summary.skewed_inputs == []
    assert summary.examples.get("exact", 0) >= 0.5 * logged  # the rest: batching
    assert len(summary.inputs) >= 10  # every input of the service was compared
    assert all(s.compared == logged for s in summary.inputs.values())
    assert summary.unmatched == {}  # logged and recomputed under the same service

    # The command, over a range (--from/--to): exit 0, the same verdict.
    start, end = summary.window
    assert start is not None and end is not None
    for key, value in settings.environment({}).items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    try:
        out = CliRunner().invoke(
            cli, ["skew", "report", "--json", "--from", start[:19], "--to", "2100-01-01T00:00:00"]
        )
    finally:
        load_settings.cache_clear()
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["status"] == "ok" and body["compared"] == logged
    assert body["examples"].get("beyond", 0) == 0

    # The scheduled check (the drift scheduler's cycle): the report holds the audit's section,
    # its summary the status the dashboard shows.
    cycle = run_cycle(JobContext(settings, engine))
    assert cycle.report_id is not None and cycle.retrain is None
    stored = load_report(engine, settings.namespace, cycle.report_id)
    assert stored.report["skew"]["status"] == "ok"
    assert stored.report["skew"]["compared"] == logged
    assert stored.summary["skew_status"] == "ok" and stored.summary["skew_beyond_share"] == 0.0
    assert "Online/offline skew" in stored.html
