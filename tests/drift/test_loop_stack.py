"""The whole feedback loop through the real stack: the generator's concept change -> a drift
report flags it -> the policy starts a retrain -> the challenger is promoted -> the learner and
the scorers switch to it -> ROC AUC recovers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest

from drift.challenger import roc_auc
from drift.jobs import CycleResult
from drift.scheduler import job_table, run_scheduler
from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from freshloop.simulate.workload import Workload
from online_learning import LearnerService
from tests.online_learning.stack import ScoringPipeline, learn_ns, wait_for

__all__ = ["learn_ns"]

DRIFT_AT = 35.0
# Before the change fraud is bursts of large payments at a few merchants through the app; after
# it, bursts of small, ordinary-looking amounts at other merchants on the web ("card testing"):
# a model that learned "large amount = fraud" ranks the new fraud below normal payments.
WORKLOAD = WorkloadConfig(
    rate=60,
    customers=200,
    merchants=30,
    burst_share=0.03,
    base_fraud_rate=0.002,
    label_delay_s=1.0,
    seed=11,
    drift_at=DRIFT_AT,
    drift_fraud_amount=(5.0, 60.0),
)


def test_the_opt_in_fraud_amount_change_applies_only_after_drift_at() -> None:
    """Same seed with and without the option: the same operations, except the amounts of the
    fraud bursts after ``drift_at``."""
    changed = Workload(WORKLOAD)
    default = Workload(replace(WORKLOAD, drift_fraud_amount=None))
    pairs = [
        (t / 10, a, b)
        for t in range(700)
        for a, b in zip(changed.due(t / 10), default.due(t / 10), strict=True)
    ]
    differ = [(t, a, b) for t, a, b in pairs if a != b]
    assert differ
    for t, a, b in differ:
        assert t >= DRIFT_AT and replace(a, amount=b.amount) == b
        if a.kind == "insert_payment":
            assert a.is_fraud and 5 <= a.amount <= 60 and 400 <= b.amount <= 1500
        else:  # a later correction of such a payment's amount (x 0.9 or x 1.1)
            assert a.kind == "correct_amount" and a.amount <= 66 and b.amount >= 360


@pytest.fixture
def loop_ns(learn_ns: Settings) -> Iterator[Settings]:
    """The learning namespace with a drift check every 6 s and a quick retrain policy."""
    settings = learn_ns.model_copy(
        update={
            "drift_interval_s": 6.0,
            "retrain_cooldown_s": 10.0,
            "retrain_min_examples": 200,
            "retrain_window_s": 15.0,
            "retrain_epochs": 4,
            "retrain_promote_margin": 0.02,
            # the skew audit (tests/drift/test_skew_*) takes seconds under this load: checks
            # 6 s apart would queue behind it
            "skew_sample": 0,
        }
    )
    yield settings
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in ("retrains", "drift_reports"):
            conn.execute(
                f"DELETE FROM {table} WHERE namespace = %s",  # noqa: S608
                (settings.namespace,),
            )
        conn.execute(f'DROP TABLE IF EXISTS "{job_table(settings.namespace)}"')


def _rows(settings: Settings, sql: str) -> list[tuple]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return conn.execute(sql, (settings.namespace,)).fetchall()


def _promoted(settings: Settings, after: datetime) -> tuple | None:
    for row in _rows(
        settings,
        "SELECT retrain_id, challenger_version, report_id, started_at, finished_at, trigger"
        " FROM retrains WHERE namespace = %s AND status = 'promoted' ORDER BY retrain_id",
    ):
        if row[3] >= after:
            return row
    return None


@pytest.mark.integration
def test_concept_change_is_flagged_retrained_promoted_and_auc_recovers(loop_ns: Settings) -> None:
    import drift.check  # noqa: F401  (the real drift check runs in the scheduler's job)

    learner = LearnerService(loop_ns)
    learner_thread = threading.Thread(target=learner.run, daemon=True)
    learner_thread.start()
    wait_for(lambda: learner.counts.checkpoints >= 1, 30, "the learner's first checkpoint")
    stop = threading.Event()
    cycles: list[CycleResult] = []
    scheduler = threading.Thread(
        target=run_scheduler,
        args=(loop_ns, stop),
        kwargs={"on_cycle": cycles.append},
        daemon=True,
    )
    written = threading.Event()
    try:
        with ScoringPipeline(loop_ns) as scoring:
            start = time.monotonic()
            writer = threading.Thread(
                target=lambda: (run_simulation(loop_ns, WORKLOAD, duration_s=70), written.set()),
                daemon=True,
            )
            writer.start()
            scheduler.start()
            wait_for(lambda: time.monotonic() - start > DRIFT_AT, 60, "the concept change")
            drift_started = datetime.now(UTC)
            assert learner.learner is not None
            old_version = learner.learner.model.version  # the champion before the change
            wait_for(
                lambda: _promoted(loop_ns, drift_started) is not None,
                75,
                "a promoted retrain after the change",
            )
            promoted = _promoted(loop_ns, drift_started)
            assert promoted is not None
            retrain_id, version, report_id, _, promoted_at, trigger = promoted
            wait_for(
                lambda: (
                    learner.learner is not None and learner.learner.model.version != old_version
                ),
                15,
                "the learner to swap",
            )
            wait_for(
                lambda: scoring.scorer.source.current().model.version != old_version,
                15,
                "the scorers to swap",
            )
            wait_for(written.is_set, 90, "the workload")
            time.sleep(3)  # the last outcomes are learned
    finally:
        stop.set()
        scheduler.join(60)
        learner.stop.set()
        learner_thread.join(30)

    # The report that triggered it flagged drift, and the retrain says why and on what.
    assert trigger == "policy" and report_id is not None
    ((status, decision),) = _rows(
        loop_ns,
        f"SELECT status, decision FROM drift_reports WHERE namespace = %s "  # noqa: S608
        f"AND report_id = {int(report_id)}",
    )
    assert status == "drift" and decision["action"] == "retrain" and decision["reasons"]
    ((reason, n_train, champion_metrics, challenger_metrics),) = _rows(
        loop_ns,
        "SELECT reason, n_train, champion_metrics, challenger_metrics FROM retrains"
        f" WHERE namespace = %s AND retrain_id = {int(retrain_id)}",  # noqa: S608
    )
    assert reason == "; ".join(decision["reasons"]) and n_train > 0
    assert challenger_metrics["roc_auc"] >= champion_metrics["roc_auc"] + 0.02
    # No storm: retrains are at least a cool-down apart and never overlap.
    starts = [
        r[0]
        for r in _rows(
            loop_ns, "SELECT started_at FROM retrains WHERE namespace = %s ORDER BY started_at"
        )
    ]
    assert all((b - a).total_seconds() >= 10 for a, b in zip(starts, starts[1:], strict=False))
    assert all(c.error is None or "already running" not in c.error for c in cycles)

    # AUC recovers: what the new champion served vs what the old one served after the change.
    # (a later policy retrain may have been promoted too on a slow run: any promoted model counts)
    assert learner.learner is not None and learner.learner.model.version != old_version
    examples = _rows(
        loop_ns,
        "SELECT predicted_at, label, score, model_version FROM"
        " training_examples WHERE namespace = %s",
    )
    drifted = [
        (y, p) for at, y, p, v in examples if drift_started <= at < promoted_at and v == old_version
    ]
    recovered = [(y, p) for at, y, p, v in examples if at >= promoted_at and v != old_version]
    auc_drifted = roc_auc([y for y, _ in drifted], [p for _, p in drifted])
    auc_recovered = roc_auc([y for y, _ in recovered], [p for _, p in recovered])
    print(
        f"retrain={retrain_id} champion={champion_metrics} challenger={challenger_metrics} "
        f"served AUC after the change {auc_drifted} (n={len(drifted)}), after the promotion "
        f"{auc_recovered} (n={len(recovered)}); cycles={len(cycles)} retrains={len(starts)}"
    )
    assert auc_drifted is not None and auc_recovered is not None
    assert sum(y for y, _ in recovered) >= 10
    # Served AUC is back near 0.85-0.95 with the promoted model, and above what the old champion
    # scored on the post-change holdout by at least the promotion margin. How far above depends
    # on timing, so it is not asserted: the champion keeps learning online after the change, and
    # on a slow run the retrain comes later, when it has half adapted (holdout AUC 0.6-0.87 seen).
    # For the same reason the old champion's served AUC between the change and the promotion is
    # printed, not asserted (the writer lags behind the switch on a loaded machine: ~0.5-0.95).
    assert auc_recovered >= champion_metrics["roc_auc"] + 0.02
    assert auc_recovered >= 0.8
