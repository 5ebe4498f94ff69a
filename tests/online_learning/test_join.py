"""The delayed-label join: exactly once, no leakage, bounded memory, snapshot-able."""

from __future__ import annotations

import base64
import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from freshloop.core.exceptions import ConfigurationError
from online_learning import join as join_module
from online_learning.exceptions import MessageError, NaiveDatetimeError, SnapshotError
from online_learning.join import COUNTERS, JoinConfig, LabelJoin
from online_learning.learner import OnlineLearner
from online_learning.model import OnlineModel
from online_learning.records import LabelledExample, LabelSource, PredictionRecord
from tests.online_learning.fixtures import KEY, T0

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
    # Tombstones are dropped by hour of predicted_at: payment 1's (hour 12:00-13:00) is kept
    # until 13:00 + horizon + grace, up to an hour past its own bound; a replay is stale anyway.
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 1}
    assert join.on_prediction(1, rec(minute=0)) == []
    join.on_horizon(at(149))
    assert join.backlog()["tombstones"] == 1
    join.on_horizon(at(150))
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 0}
    assert join.on_prediction(1, rec(minute=0)) == []  # a replay after the tombstone is gone
    assert join.on_outcome(1, False, at(0)) == []  # as old as the memory bound
    c = join.counts()
    assert (c["dropped_tombstones"], c["expired_outcomes"]) == (1, 1)
    assert (c["stale_predictions"], c["stale_outcomes"], c["duplicate_predictions"]) == (2, 1, 0)


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


# -- compact tombstones: the old format, the reference semantics, the size -------------------

BIG = 2**62 - 1  # the largest payment id a tombstone can hold

# A format-1 snapshot as the version before packed tombstones wrote it (watermark 13:10; T0 is
# 12:00 UTC, hour 12 holds payments 1, 2 and BIG, hour 13 holds payment 3).
V1_SNAPSHOT = {
    "format": 1,
    "watermark": "2026-11-28T13:10:00+00:00",
    "pending": [[5, {"f": 5.0}, 0.25, "m1", "2026-11-28T12:25:00+00:00"]],
    "waiting": [[6, True, "2026-11-28T13:05:00+00:00"]],
    "done": [
        [1, "2026-11-28T12:00:00+00:00", "horizon"],
        [2, "2026-11-28T12:05:00+00:00", "outcome"],
        [BIG, "2026-11-28T12:02:00+00:00", "horizon"],
        [3, "2026-11-28T13:01:00+00:00", "outcome"],
    ],
    "counts": {
        **dict.fromkeys(COUNTERS, 0),
        **{"predictions": 5, "outcomes": 3, "joined": 2, "horizon_negatives": 2},
    },
}


def check_v1_behaviour(join: LabelJoin) -> None:
    """What the join restored from ``V1_SNAPSHOT`` must do (exact expiry gives the same)."""
    assert join.backlog() == {"pending_predictions": 1, "waiting_outcomes": 1, "tombstones": 4}
    assert join.counts() == V1_SNAPSHOT["counts"]
    assert join.watermark == at(70)
    assert join.on_prediction(2, rec(minute=5)) == []  # learned already
    assert join.on_prediction(3, rec(minute=61)) == []
    assert join.on_outcome(2, False, at(71)) == []  # its outcome again
    assert join.on_outcome(1, True, at(72)) == []  # after its horizon negative: late, fraud
    assert join.on_outcome(BIG, False, at(72)) == []  # late, not fraud
    (ex,) = join.on_prediction(6, rec(minute=60, tag=6.0))  # its outcome was waiting
    assert (ex.payment_id, ex.label, ex.features, ex.labelled_at) == (6, True, {"f": 6.0}, at(65))
    (neg,) = join.on_horizon(at(89))
    assert (neg.payment_id, neg.source, neg.features) == (5, "horizon", {"f": 5.0})
    c = join.counts()
    assert (c["duplicate_predictions"], c["duplicate_outcomes"]) == (2, 1)
    assert (c["late_outcomes"], c["late_fraud_outcomes"], c["joined"]) == (2, 1, 3)
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": 6}


def test_format_1_snapshot_restores_and_behaves_the_same() -> None:
    check_v1_behaviour(LabelJoin.restore(json.loads(json.dumps(V1_SNAPSHOT)), CONFIG))


def test_format_1_snapshot_converts_to_format_2() -> None:
    join = LabelJoin.restore(V1_SNAPSHOT, CONFIG)
    state = json.loads(json.dumps(join.snapshot()))
    assert state["format"] == 2 and "done" not in state
    hour = int(T0.timestamp()) // 3600
    assert [h for h, _ in state["done_buckets"]] == [hour, hour + 1]
    check_v1_behaviour(LabelJoin.restore(state, CONFIG))
    # Hour 12's bucket (payments 1, 2, BIG, and 5 once its horizon passes) goes at 13:00 + 90
    # minutes, hour 13's (payment 3) an hour later.
    assert [ex.payment_id for ex in join.on_horizon(at(149))] == [5]
    assert join.backlog()["tombstones"] == 5
    join.on_horizon(at(150))
    assert (join.backlog()["tombstones"], join.counts()["dropped_tombstones"]) == (1, 4)
    join.on_horizon(at(210))
    assert (join.backlog()["tombstones"], join.counts()["dropped_tombstones"]) == (0, 5)


def test_learner_checkpoint_with_format_1_join_restores() -> None:
    state = {**OnlineLearner(OnlineModel(), KEY, CONFIG).snapshot(), "join": V1_SNAPSHOT}
    learner = OnlineLearner.restore(state, KEY, CONFIG)
    check_v1_behaviour(learner.join)
    assert learner.snapshot()["join"]["format"] == 2


def test_format_2_round_trip_keeps_every_tombstone_and_source() -> None:
    join = LabelJoin(CONFIG)
    n = 5000  # more than a bucket keeps unmerged: both the array and the recent set are used
    for i in range(n):
        join.on_prediction(i, rec(minute=i * 60 // n, tag=float(i)))  # spread over 12:00-13:00
    assert len(join.on_horizon(at(89))) == n // 2  # predicted 12:00-12:29: horizon negatives
    for i in range(n // 2, n):
        join.on_outcome(i, i % 3 == 0, at(61))
    join.on_prediction(-7, rec(minute=61))
    join.on_outcome(-7, True, at(62))
    restored = LabelJoin.restore(json.loads(json.dumps(join.snapshot())), CONFIG)
    assert restored.snapshot() == join.snapshot()
    assert restored.backlog() == join.backlog()
    assert join.backlog() == {"pending_predictions": 0, "waiting_outcomes": 0, "tombstones": n + 1}
    for j in (join, restored):
        for i in [*range(-8, n + 1), BIG]:
            assert j.on_outcome(i, True, at(63)) == []
        c = j.counts()
        assert (c["late_outcomes"], c["duplicate_outcomes"]) == (n // 2, n // 2 + 1)
        # The 9 ids never predicted (-8, -6..-1, n, BIG) wait for their prediction.
        assert j.backlog()["waiting_outcomes"] == 9
    assert restored.snapshot() == join.snapshot()


def test_payment_ids_outside_the_packed_range_are_refused() -> None:
    join = LabelJoin(CONFIG)
    for pid in (2**62, -(2**62) - 1):
        with pytest.raises(MessageError):
            join.on_prediction(pid, rec())
        with pytest.raises(MessageError):
            join.on_outcome(pid, True, at(1))
    assert join.counts() == LabelJoin().counts()
    for pid in (BIG, -(2**62)):
        join.on_prediction(pid, rec())
        assert len(join.on_outcome(pid, True, at(1))) == 1
        assert join.on_prediction(pid, rec()) == []
    assert join.counts()["duplicate_predictions"] == 2


def packed(*keys: int) -> str:
    return base64.b64encode(b"".join(k.to_bytes(8, "little", signed=True) for k in keys)).decode()


@pytest.mark.parametrize(
    "patch_state",
    [
        {"format": 3},
        {"format": True},
        {"done_buckets": [[1]]},
        {"done_buckets": [["1", packed(2)]]},
        {"done_buckets": [[1, packed(2)], [1, packed(4)]]},  # an hour twice
        {"done_buckets": [[1, "not base64!"]]},
        {"done_buckets": [[1, packed(2)[:-4]]]},  # not whole int64s
        {"done_buckets": [[1, packed(4, 2)]]},  # not sorted
        {"done_buckets": [[1, packed(2, 3)]]},  # one payment with both sources
        {"done_buckets": [[1, 2]]},
        {"done": []},  # format 1's list in a format 2 snapshot
        {"format": 1, "done": [[1, T0.isoformat(), "retrained"]]},
        {"format": 1, "done": [[2**62, T0.isoformat(), "outcome"]]},
        {"format": 1, "done": [["1", T0.isoformat(), "outcome"]]},
        {"pending": [[2**62, {}, 0.5, "m", T0.isoformat()]]},  # could never be learned
        {"waiting": [[2**62, True, T0.isoformat()]]},
        {"format": 1, "done": [[1, T0.isoformat(), "outcome"], [1, T0.isoformat(), "horizon"]]},
    ],
)
def test_malformed_tombstones_refused(patch_state: dict) -> None:
    state = {k: v for k, v in LabelJoin().snapshot().items() if k != "done_buckets"}
    state.setdefault("done_buckets", [[1, packed(2, 5)]])
    assert LabelJoin.restore(state).backlog()["tombstones"] == 2
    with pytest.raises(SnapshotError):
        LabelJoin.restore({**state, **patch_state})


class OldJoin:
    """The join's semantics before tombstones were packed (a re-statement, for comparison): one
    dict entry per tombstone, dropped exactly at ``predicted_at + horizon + grace``.

    With ``bucketed``, the rule LabelJoin documents instead: a tombstone is dropped at the end of
    its UTC hour + horizon + grace, and a prediction is checked against the watermark before the
    tombstones."""

    def __init__(self, config: JoinConfig, bucketed: bool = False) -> None:
        self.config = config
        self.bucketed = bucketed
        self.pending: dict[int, PredictionRecord] = {}
        self.waiting: dict[int, tuple[bool, datetime]] = {}
        self.done: dict[int, tuple[datetime, LabelSource]] = {}
        self.watermark: datetime | None = None
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))

    def on_prediction(self, pid: int, r: PredictionRecord) -> list[LabelledExample]:
        self.counts["predictions"] += 1
        if pid in self.pending or (pid in self.done and not self.bucketed):
            self.counts["duplicate_predictions"] += 1
            return []
        if self.too_old(r.predicted_at):
            self.counts["stale_predictions"] += 1
            return []
        if pid in self.done:
            self.counts["duplicate_predictions"] += 1
            return []
        if pid in self.waiting:
            is_fraud, t = self.waiting.pop(pid)
            return self.emit(pid, r, is_fraud, t, "outcome")
        self.pending[pid] = r
        return []

    def on_outcome(self, pid: int, is_fraud: bool, t: datetime) -> list[LabelledExample]:
        self.counts["outcomes"] += 1
        if pid in self.done:
            if self.done[pid][1] == "horizon":
                self.counts["late_outcomes"] += 1
                self.counts["late_fraud_outcomes"] += is_fraud
            else:
                self.counts["duplicate_outcomes"] += 1
            return []
        if pid in self.waiting:
            self.counts["duplicate_outcomes"] += 1
            self.counts["conflicting_outcomes"] += self.waiting[pid][0] != is_fraud
            return []
        if pid in self.pending:
            return self.emit(pid, self.pending.pop(pid), is_fraud, t, "outcome")
        if self.too_old(t):
            self.counts["stale_outcomes"] += 1
            return []
        self.waiting[pid] = (is_fraud, t)
        return []

    def on_horizon(self, now: datetime) -> list[LabelledExample]:
        self.watermark = now = now if self.watermark is None else max(self.watermark, now)
        cfg, out = self.config, []
        for pid, r in list(self.pending.items()):
            due = r.predicted_at + cfg.horizon
            if due <= now and cfg.negatives_at_horizon:
                del self.pending[pid]
                out += self.emit(pid, r, False, due, "horizon")
            elif due + cfg.grace <= now:
                del self.pending[pid]
                self.counts["expired_predictions"] += 1
        for pid, (predicted_at, _) in list(self.done.items()):
            if (hour_end(predicted_at) if self.bucketed else predicted_at) + cfg.memory <= now:
                del self.done[pid]
                self.counts["dropped_tombstones"] += 1
        for pid, (_, t) in list(self.waiting.items()):
            if t + cfg.memory <= now:
                del self.waiting[pid]
                self.counts["expired_outcomes"] += 1
        return out

    def too_old(self, t: datetime) -> bool:
        return self.watermark is not None and t + self.config.memory <= self.watermark

    def emit(
        self, pid: int, r: PredictionRecord, label: bool, at: datetime, source: LabelSource
    ) -> list[LabelledExample]:
        self.done[pid] = (r.predicted_at, source)
        self.counts["joined" if source == "outcome" else "horizon_negatives"] += 1
        features = dict(r.features)
        return [
            LabelledExample(
                pid, features, label, r.score, r.model_version, r.predicted_at, at, source
            )
        ]

    def backlog(self) -> dict[str, int]:
        return {
            "pending_predictions": len(self.pending),
            "waiting_outcomes": len(self.waiting),
            "tombstones": len(self.done),
        }


def hour_end(t: datetime) -> datetime:
    """The end of ``t``'s UTC hour: when its tombstone bucket starts its memory bound."""
    return t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


# Neighbouring ids (0, 1, -1: adjacent packed keys), a large id and both ends of the range;
# each example uses a few of them, so that most payments see several events.
IDS = (0, 1, -1, 10**12, BIG, -(2**62))
N_PICKED = 2
id_index = st.integers(0, N_PICKED - 1)


def payments(minute: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple[int, int]]]:
    """(payment id, minute it was predicted at) for N_PICKED distinct ids."""
    ids = st.permutations(IDS).map(lambda p: p[:N_PICKED])
    minutes = st.lists(minute, min_size=N_PICKED, max_size=N_PICKED)
    return st.builds(lambda i, m: list(zip(i, m, strict=True)), ids, minutes)


# Counters that differ from exact expiry only when an outcome meets a tombstone kept past its
# exact bound (counted duplicate or late instead of stale or waiting), and the tombstone count.
WINDOW_COUNTERS = {
    "duplicate_outcomes",
    "conflicting_outcomes",
    "late_outcomes",
    "late_fraud_outcomes",
    "stale_outcomes",
    "expired_outcomes",
    "dropped_tombstones",
}


def compare_with_old(
    config: JoinConfig, pays: list[tuple[int, int]], ops: list[tuple], merge_min: int, exact: bool
) -> None:
    """Run the same events through LabelJoin (round-tripped through JSON on "snap"), OldJoin and
    OldJoin(bucketed=True). LabelJoin must emit what both emit, and match the bucketed one in
    every counter and backlog. Against exact expiry: with ``exact`` (ticks where both rules drop
    the same tombstones) everything agrees too; otherwise all but WINDOW_COUNTERS, and no more
    tombstones dropped."""
    new, old, ref = LabelJoin(config), OldJoin(config), OldJoin(config, bucketed=True)
    same = [k for k in COUNTERS if k not in WINDOW_COUNTERS]
    clock = 0  # minutes; ticks move it by their step (backwards too)
    kept_longer = False
    with patch.object(join_module, "_MERGE_MIN", merge_min):
        for n, op in enumerate(ops):
            if op[0] == "pred":
                pid, minute = pays[op[1]]
                record = PredictionRecord({"f": float(n)}, 0.5, "m", at(minute))
                results = [j.on_prediction(pid, record) for j in (new, old, ref)]
            elif op[0] == "out":
                _, i, is_fraud, delay = op
                pid, minute = pays[i]
                results = [j.on_outcome(pid, is_fraud, at(minute + delay)) for j in (new, old, ref)]
            elif op[0] == "tick":
                clock += op[1]
                results = [j.on_horizon(at(clock)) for j in (new, old, ref)]
            else:
                new = LabelJoin.restore(json.loads(json.dumps(new.snapshot())), config)
                results = []
            assert all(r == results[0] for r in results)
            kept_longer = kept_longer or len(ref.done) > len(old.done)
            counts = new.counts()
            assert counts == ref.counts and new.backlog() == ref.backlog()
            if exact:
                assert counts == old.counts and new.backlog() == old.backlog()
            else:
                assert {k: counts[k] for k in same} == {k: old.counts[k] for k in same}
                assert counts["dropped_tombstones"] <= old.counts["dropped_tombstones"]
    event(f"tombstones kept past the exact bound: {kept_longer}")
    event(f"late outcomes: {counts['late_outcomes'] > 0}")
    event(f"counts differ from exact expiry: {counts != old.counts}")


# Ticks as often as predictions and outcomes (so that horizons pass between them), snapshots
# less often.
def operations(tick: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple]]:
    pred = st.tuples(st.just("pred"), id_index)
    out = st.tuples(st.just("out"), id_index, st.booleans(), st.integers(-10, 150))
    tick_op, snap = st.tuples(st.just("tick"), tick), st.tuples(st.just("snap"))
    return st.lists(
        st.one_of(pred, out, tick_op, pred, out, tick_op, snap), min_size=12, max_size=40
    )


merge_min = st.sampled_from([0, 1, 4096])


@settings(max_examples=250, deadline=None)
@given(
    pays=payments(st.integers(0, 90)),
    ops=operations(st.integers(-30, 120)),
    grace=st.sampled_from([0, 30, 60, 120]),
    negatives=st.sampled_from([True, True, False]),
    merge_min=merge_min,
)
def test_same_examples_as_exact_expiry_tombstones_at_most_an_hour_longer(
    pays: list[tuple[int, int]], ops: list[tuple], grace: int, negatives: bool, merge_min: int
) -> None:
    config = JoinConfig(horizon=H, grace=timedelta(minutes=grace), negatives_at_horizon=negatives)
    compare_with_old(config, pays, ops, merge_min, exact=False)


@settings(max_examples=250, deadline=None)
@given(
    # Predictions never on the hour, ticks only on the hour, memory whole hours: then a bucket
    # goes at the very tick its exact bound would, and nothing at all may differ.
    pays=payments(st.builds(lambda h, m: 60 * h + m, st.integers(0, 1), st.integers(1, 59))),
    ops=operations(st.sampled_from([-60, 0, 60, 60, 120])),
    horizon=st.sampled_from([60, 120]),
    grace=st.sampled_from([0, 120, 180]),
    negatives=st.sampled_from([True, True, False]),
    merge_min=merge_min,
)
def test_same_examples_and_counts_as_exact_expiry_when_ticks_fall_on_the_hour(
    pays: list[tuple[int, int]],
    ops: list[tuple],
    horizon: int,
    grace: int,
    negatives: bool,
    merge_min: int,
) -> None:
    config = JoinConfig(timedelta(minutes=horizon), timedelta(minutes=grace), negatives)
    compare_with_old(config, pays, ops, merge_min, exact=True)


def test_tombstones_are_compact_in_checkpoints_and_memory() -> None:
    n = 100_000
    # Payments learned one every 0.9 s for 25 h (26 hourly buckets), read from an old checkpoint.
    start = datetime(2026, 11, 28, 11, 30, tzinfo=UTC)
    sources = ("outcome", "horizon")
    done = [
        [3 * i, (start + timedelta(milliseconds=900 * i)).isoformat(), sources[i % 2]]
        for i in range(n)
    ]
    v1 = {"format": 1, "watermark": None, "pending": [], "waiting": [], "done": done, "counts": {}}
    join = LabelJoin.restore(v1)
    assert join.backlog()["tombstones"] == n
    state = join.snapshot()
    assert len(state["done_buckets"]) == 26
    assert len(json.dumps(state)) <= 12 * n  # 8 bytes as base64, and ~20 bytes per hour
    buckets = join._done._buckets.values()
    assert all(not b.recent for b in buckets)  # merged by the snapshot
    assert sum(sys.getsizeof(b.keys) + sys.getsizeof(b.recent) for b in buckets) <= 12 * n
    assert join.on_outcome(3 * (n - 1), True, start) == []
    assert join.on_outcome(3 * (n - 2), True, start) == []
    assert (join.counts()["late_outcomes"], join.counts()["duplicate_outcomes"]) == (1, 1)
