"""The retrain policy: which summaries trigger a retrain, and what blocks one (no storms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drift.policy import Decision, RetrainPolicy
from freshloop.core.settings import Settings

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy(
    drift_share=0.5, concept_alarm=True, auc_drop=0.05, cooldown_s=600, min_examples=200
)
QUIET = {
    "dataset_drift_share": 0.1,
    "concept_alarms": 0,
    "auc": 0.9,
    "baseline_auc": 0.91,
    "auc_drop": 0.01,
    "n_current": 1000,
}


def _decide(
    summary: dict,
    *,
    last: datetime | None = None,
    running: bool = False,
    policy: RetrainPolicy = POLICY,
) -> Decision:
    return policy.decide(summary, last_retrain_at=last, running=running, now=NOW)


def test_a_quiet_summary_triggers_nothing() -> None:
    decision = _decide(QUIET)
    assert decision.action == "none" and decision.reasons == [] and decision.blocked is None
    assert decision.to_dict()["drift"] is False


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dataset_drift_share": 0.5}, "dataset drift share 0.50 >= 0.50"),
        ({"concept_alarms": 2}, "2 new concept-drift alarms"),
        ({"concept_alarms": [17]}, "1 new concept-drift alarm"),
        ({"auc": 0.80, "auc_drop": 0.11}, "ROC AUC dropped 0.110 >= 0.050 (0.910 -> 0.800)"),
    ],
)
def test_each_trigger_alone_asks_for_a_retrain(change: dict, reason: str) -> None:
    decision = _decide({**QUIET, **change})
    assert decision.action == "retrain"
    assert decision.reasons == [reason]
    assert decision.reason == reason


def test_all_triggers_are_listed_in_order() -> None:
    decision = _decide({**QUIET, "dataset_drift_share": 0.9, "concept_alarms": 1, "auc_drop": 0.2})
    assert [r.split()[0] for r in decision.reasons] == ["dataset", "1", "ROC"]


def test_concept_alarms_can_be_switched_off() -> None:
    policy = RetrainPolicy(concept_alarm=False)
    assert _decide({**QUIET, "concept_alarms": 3}, policy=policy).action == "none"


def test_missing_or_null_values_trigger_nothing() -> None:
    assert _decide({}).action == "none"
    assert (
        _decide(
            {"dataset_drift_share": None, "auc_drop": float("nan"), "concept_alarms": None}
        ).action
        == "none"
    )
    assert _decide({"dataset_drift_share": True}).action == "none"  # a bool is not a share


def test_a_running_retrain_blocks_another() -> None:
    decision = _decide({**QUIET, "dataset_drift_share": 0.8}, running=True)
    assert decision.action == "none"
    assert decision.drift  # the drift is still reported
    assert decision.blocked == "a retrain is already running"


def test_cool_down_blocks_until_it_has_passed() -> None:
    drifted = {**QUIET, "dataset_drift_share": 0.8}
    blocked = _decide(drifted, last=NOW - timedelta(seconds=599))
    assert blocked.action == "none" and blocked.blocked is not None
    assert "cool-down" in blocked.blocked
    assert _decide(drifted, last=NOW - timedelta(seconds=600)).action == "retrain"


def test_too_few_current_rows_block() -> None:
    decision = _decide({**QUIET, "concept_alarms": 1, "n_current": 50})
    assert decision.action == "none"
    assert decision.blocked == "only 50 rows in the current window, need 200"


@given(st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=40))
def test_no_storm_at_most_one_retrain_per_cool_down(gaps: list[float]) -> None:
    """A report every few seconds that always shows drift: retrains stay a cool-down apart."""
    now, last, started = NOW, None, []
    for gap in gaps:
        now += timedelta(seconds=gap)
        decision = POLICY.decide(
            {**QUIET, "dataset_drift_share": 1.0}, last_retrain_at=last, running=False, now=now
        )
        if decision.action == "retrain":
            started.append(now)
            last = now
    assert all((b - a).total_seconds() >= 600 for a, b in zip(started, started[1:], strict=False))
    assert started  # the first check always may retrain


def test_from_settings_reads_the_retrain_fields() -> None:
    settings = Settings(
        retrain_drift_share=0.3,
        retrain_on_concept_alarm=False,
        retrain_auc_drop=0.1,
        retrain_cooldown_s=30,
        retrain_min_examples=50,
    )
    assert RetrainPolicy.from_settings(settings) == RetrainPolicy(0.3, False, 0.1, 30, 50)
    assert _decide(QUIET).to_dict()["policy"]["cooldown_s"] == 600
