"""The delayed-label join: exactly once, no leakage, bounded memory, snapshot-able."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from freshloop.exceptions import ConfigurationError
from online_learning.exceptions import NaiveDatetimeError, SnapshotError
from online_learning.join import JoinConfig, LabelJoin
from online_learning.records import LabelledExample, PredictionRecord
from tests.online_learning.fixtures import T0

H = timedelta(minutes=60)
G = timedelta(minutes=30)
CONFIG = JoinConfig(horizon=H, grace=G)


def rec(minute: int = 0, tag: float = 1.0, version: str = "m1") -> PredictionRecord:
    return PredictionRecord({"f": tag}, 0.25, version, T0 + timedelta(minutes=minute))


def at(minute: float) -> object:
    return T0 + timedelta(minutes=minute)


def test_prediction_then_outcome_joins_with_logged_features() -> None:
    join = LabelJoin(CONFIG)
    assert join.on_prediction(1, rec(tag=7.0)) == []
    (ex,) = join.on_outcome(1, True, at(5))
    assert ex == LabelledExample(1, {"f": 7.0}, True, 0.25, "m1", at(0), at(5), "outcome")
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 1}


def test_outcome_before_prediction_waits_for_it() -> None:
    join = LabelJoin(CONFIG)
    assert join.on_outcome(1, True, at(1)) == []
    assert join.backlog()["waiting_outcomes"] == 1
    (ex,) = join.on_prediction(1, rec())
    assert ex.label is True and ex.source == "outcome" and ex.labelled_at == at(1)


def test_duplicates_ignored_and_counted() -> None:
    join = LabelJoin(CONFIG)
    join.on_prediction(1, rec(tag=1.0))
    assert join.on_prediction(1, rec(tag=2.0)) == []
    (ex,) = join.on_outcome(1, False, at(2))
    assert ex.features == {"f": 1.0}
    assert join.on_outcome(1, False, at(3)) == []
    assert join.on_prediction(1, rec(tag=3.0)) == []
    join.on_outcome(2, True, at(1))
    join.on_outcome(2, False, at(2))
    c = join.counts()
    assert (c["duplicate_predictions"], c["duplicate_outcomes"], c["conflicting_outcomes"]) == (
        2,
        2,
        1,
    )


def test_horizon_negative_then_late_outcome_not_learned_twice() -> None:
    join = LabelJoin(CONFIG)
    join.on_prediction(1, rec(minute=0))
    join.on_prediction(2, rec(minute=30))
    assert join.on_horizon(at(59)) == []
    (ex,) = join.on_horizon(at(60))
    assert (ex.payment_id, ex.label, ex.source, ex.labelled_at) == (1, False, "horizon", at(60))
    assert join.on_outcome(1, True, at(61)) == []
    c = join.counts()
    assert (c["late_outcomes"], c["late_fraud_outcomes"], c["horizon_negatives"]) == (1, 1, 1)
    assert join.backlog()["pending_predictions"] == 1


def test_without_negatives_predictions_expire_after_grace() -> None:
    join = LabelJoin(JoinConfig(horizon=H, grace=G, negatives_at_horizon=False))
    join.on_prediction(1, rec(minute=0))
    join.on_prediction(2, rec(minute=0))
    assert join.on_horizon(at(70)) == []
    (ex,) = join.on_outcome(1, True, at(71))  # inside the grace: still learned
    assert ex.label is True
    assert join.on_horizon(at(90)) == []
    assert join.counts()["expired_predictions"] == 1
    assert join.backlog()["pending_predictions"] == 0


def test_memory_is_bounded_and_stale_replays_refused() -> None:
    join = LabelJoin(CONFIG)
    join.on_prediction(1, rec(minute=0))
    join.on_outcome(1, False, at(1))
    join.on_outcome(9, True, at(0))  # its prediction never comes
    join.on_horizon(at(90))
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 0}
    assert join.on_prediction(1, rec(minute=0)) == []  # a replay after the tombstone is gone
    assert join.on_outcome(1, False, at(0)) == []  # as old as the memory bound
    c = join.counts()
    assert (c["dropped_tombstones"], c["expired_outcomes"]) == (1, 1)
    assert (c["stale_predictions"], c["stale_outcomes"]) == (1, 1)


def test_clock_going_back_does_not_move_the_watermark() -> None:
    join = LabelJoin(CONFIG)
    join.on_horizon(at(100))
    join.on_horizon(at(10))
    assert join.watermark == at(100)


def test_naive_times_and_bad_config_refused() -> None:
    join = LabelJoin(CONFIG)
    naive = T0.replace(tzinfo=None)
    with pytest.raises(NaiveDatetimeError):
        join.on_horizon(naive)
    with pytest.raises(NaiveDatetimeError):
        join.on_outcome(1, True, naive)
    with pytest.raises(NaiveDatetimeError):
        join.on_prediction(1, PredictionRecord({}, 0.5, "m", naive))
    with pytest.raises(ConfigurationError):
        JoinConfig(horizon=timedelta(0))


def test_snapshot_is_json_and_restores_behaviour() -> None:
    join = LabelJoin(CONFIG)
    join.on_prediction(1, rec(tag=4.0))
    join.on_outcome(2, True, at(3))
    join.on_prediction(3, rec())
    join.on_outcome(3, False, at(4))
    join.on_horizon(at(10))
    restored = LabelJoin.restore(json.loads(json.dumps(join.snapshot())), CONFIG)
    assert restored.snapshot() == join.snapshot()
    assert restored.on_outcome(1, True, at(20)) == join.on_outcome(1, True, at(20))
    assert restored.on_prediction(2, rec()) == join.on_prediction(2, rec())
    assert restored.on_prediction(3, rec()) == []


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"format": 2},
        {"format": 1, "watermark": None},
        {**LabelJoin().snapshot(), "done": [[1]]},
    ],
)
def test_malformed_snapshot_refused(state: dict) -> None:
    with pytest.raises(SnapshotError):
        LabelJoin.restore(state)


# -- property: any interleaving -------------------------------------------------------------

N_PAYMENTS = 4
predicted_minute = st.lists(st.integers(0, 120), min_size=N_PAYMENTS, max_size=N_PAYMENTS)
pid = st.integers(0, N_PAYMENTS - 1)
prediction = st.tuples(st.just("pred"), pid)
outcome = st.tuples(st.just("out"), pid, st.booleans(), st.integers(0, 100))
# Predictions and outcomes are drawn more often than clock ticks and snapshots.
operation = st.one_of(
    prediction,
    outcome,
    prediction,
    outcome,
    st.tuples(st.just("tick"), st.integers(0, 200)),
    st.tuples(st.just("snap")),
)


@settings(max_examples=400, deadline=None)
@given(
    minutes=predicted_minute,
    ops=st.lists(operation, min_size=8, max_size=30),
    negatives=st.booleans(),
)
def test_any_interleaving_learns_each_payment_once_with_logged_features(
    minutes: list[int], ops: list[tuple], negatives: bool
) -> None:
    config = JoinConfig(horizon=H, grace=G, negatives_at_horizon=negatives)
    join = LabelJoin(config)
    emitted: list[LabelledExample] = []
    watermark = None
    first_pred: dict[int, tuple[dict[str, float], bool]] = {}  # features, accepted
    first_out: dict[int, bool] = {}
    horizon_seen: dict[int, bool] = {}  # whether a tick >= predicted_at + H had passed
    both_before_horizon: set[int] = set()
    for n, op in enumerate(ops):
        if op[0] == "pred":
            pid = op[1]
            record = PredictionRecord({"f": float(n)}, 0.5, "m", at(minutes[pid]))
            if pid not in first_pred:
                stale = watermark is not None and record.predicted_at + H + G <= watermark
                first_pred[pid] = ({"f": float(n)}, not stale)
            emitted += join.on_prediction(pid, record)
        elif op[0] == "out":
            _, pid, is_fraud, delay = op
            first_out.setdefault(pid, is_fraud)
            emitted += join.on_outcome(pid, is_fraud, at(minutes[pid] + delay))
        elif op[0] == "tick":
            now = at(op[1])
            watermark = now if watermark is None else max(watermark, now)
            emitted += join.on_horizon(now)
        else:
            join = LabelJoin.restore(json.loads(json.dumps(join.snapshot())), config)
        for pid in range(N_PAYMENTS):
            due = watermark is not None and watermark >= at(minutes[pid]) + H
            if not horizon_seen.get(pid) and pid in first_pred and pid in first_out and not due:
                both_before_horizon.add(pid)
            horizon_seen[pid] = due

    ids = [ex.payment_id for ex in emitted]
    assert len(ids) == len(set(ids)), "a payment was learned twice"
    for ex in emitted:
        features, accepted = first_pred[ex.payment_id]
        assert accepted
        assert ex.features == features, "learned with features other than the logged ones"
        assert ex.predicted_at == at(minutes[ex.payment_id])
        if ex.source == "outcome":
            assert ex.label == first_out[ex.payment_id]
        else:
            assert negatives and ex.label is False
    by_id = {ex.payment_id: ex for ex in emitted}
    for pid in both_before_horizon:
        assert by_id[pid].source == "outcome" and by_id[pid].label == first_out[pid]
    c = join.counts()
    assert c["joined"] + c["horizon_negatives"] == len(emitted)
    event(f"joined before horizon: {min(len(both_before_horizon), 2)}")
    event(f"duplicates or late: {bool(c['duplicate_outcomes'] + c['late_outcomes'])}")

    # Far in the future: with negatives on, every accepted prediction has been learned once.
    emitted += join.on_horizon(at(10_000))
    if negatives:
        accepted = {pid for pid, (_, ok) in first_pred.items() if ok}
        assert {ex.payment_id for ex in emitted} == accepted
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 0}
