"""The out-of-process label join: bounded state, event-time horizon, order-independent labels."""

from __future__ import annotations

import pickle
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from online_learning.event_clock import EventClock
from online_learning.join import JoinConfig, LabelJoin
from online_learning.records import Prediction
from online_learning.stream_join import StreamJoin
from tests.online_learning.fixtures import T0

H = timedelta(hours=1)
CFG = JoinConfig(horizon=H, grace=timedelta(minutes=5))
PRED, OUT = "p.predictions:0", "p.public.payment_outcomes:0"
FEATURES = {f"f{i}": float(i) for i in range(12)}


def _prediction(pid: int, created_at: datetime, predicted_at: datetime | None = None) -> Prediction:
    return Prediction(pid, 0.1, FEATURES, "v1", created_at, predicted_at or created_at)


def _fresh() -> StreamJoin:
    join = StreamJoin(CFG)
    for partition in (PRED, OUT):
        join.clock.expect(partition)
    return join


def test_the_in_memory_join_grows_with_pending_payments_the_stream_join_does_not() -> None:
    """The issue, confirmed: every pending payment is in LabelJoin's memory and snapshot."""
    sizes = {}
    for n in (1_000, 4_000):
        old, new = LabelJoin(CFG), _fresh()
        for pid in range(n):
            p = _prediction(pid, T0 + timedelta(seconds=pid))
            old.on_prediction(pid, p.record())
            new.clock.observe(PRED, p.created_at)
            new.on_prediction(p, None)
        sizes[n] = (len(pickle.dumps(old.snapshot())), len(pickle.dumps(new.snapshot())))
    assert old.backlog()["pending_predictions"] == 4_000
    assert sizes[4_000][0] > 3.5 * sizes[1_000][0]  # linear in pending payments
    assert sizes[4_000][1] == sizes[1_000][1] < 1_000  # constant: nothing per payment
    assert new.backlog() == {"parked_outcomes": 0, "unstored_labels": 0}


def test_the_watermark_waits_for_every_busy_partition_and_skips_idle_ones() -> None:
    clock = EventClock()
    clock.expect(PRED)
    clock.expect(OUT)
    clock.observe(PRED, T0 + 5 * H)
    assert clock.watermark is None  # the outcomes partition has said nothing yet
    clock.observe(OUT, T0 + H)
    assert clock.watermark == T0 + H  # held back by the outcomes still being drained
    clock.at_end(OUT)
    assert clock.watermark == T0 + 5 * H
    clock.observe(OUT, T0 + 2 * H)  # a late message: the watermark never goes back
    assert clock.watermark == T0 + 5 * H
    restored = EventClock.restore(clock.snapshot())
    assert restored.watermark == T0 + 5 * H


def test_a_drained_backlog_does_not_turn_an_outcome_still_in_it_into_a_negative() -> None:
    """Predictions read far ahead of the outcomes: no payment passes its horizon until the
    outcomes partition has caught up, so the fraud outcome still in the backlog is learned."""
    join = _fresh()
    predictions = [_prediction(pid, T0 + pid * timedelta(minutes=10)) for pid in range(30)]
    for p in predictions:  # the predictions backlog first: 5 hours of event time
        join.clock.observe(PRED, p.created_at)
        join.on_prediction(p, None)
    join.clock.observe(OUT, T0 + timedelta(minutes=5))  # the outcomes partition starts
    assert not any(join.is_due(p) for p in predictions)
    # The fraud outcome of payment 0, reported 50 minutes after it, read later.
    join.clock.observe(OUT, T0 + timedelta(minutes=50))
    (example,) = join.on_outcome(0, True, T0 + timedelta(minutes=50), predictions[0], None)
    assert (example.label, example.source) == (True, "outcome")
    join.clock.at_end(OUT)  # the outcomes are drained: the watermark is 4h50 now
    due = [p for p in predictions if join.is_due(p)]
    assert [p.payment_id for p in due] == list(range(24))  # created_at + 1 h <= 4h50
    negatives = [ex for p in due for ex in join.on_due(p, None)]
    assert [ex.payment_id for ex in negatives] == list(range(1, 24))  # 0 is labelled already
    assert all(ex.labelled_at == ex.predicted_at + H and not ex.label for ex in negatives)


def test_the_horizon_runs_on_the_payments_event_time_not_the_scorers_clock() -> None:
    join = _fresh()
    late_scored = _prediction(1, T0, predicted_at=T0 + 3 * H)  # scored by a lagging scorer
    join.clock.observe(PRED, T0 + H)
    join.clock.at_end(OUT)
    assert join.is_due(late_scored)
    (ex,) = join.on_due(late_scored, None)
    assert (ex.source, ex.labelled_at, ex.predicted_at) == ("horizon", T0 + H, T0 + 3 * H)


def test_stored_labels_and_parked_outcomes() -> None:
    join = _fresh()
    p = _prediction(7, T0)
    join.clock.observe(OUT, T0 + timedelta(minutes=1))
    assert join.on_outcome(7, True, T0 + timedelta(minutes=1), None, None) == []  # not logged yet
    assert join.backlog()["parked_outcomes"] == 1
    join.clock.observe(PRED, T0)
    (ex,) = join.on_prediction(p, None)
    assert ex.label and ex.source == "outcome"
    assert join.on_due(p, None) == []  # labelled since the last checkpoint: not again
    join.flushed()
    assert join.on_due(p, "outcome") == []  # ... nor once it is stored
    assert join.on_outcome(7, True, T0, p, "outcome") == []
    assert join.on_outcome(8, True, T0, _prediction(8, T0), "horizon") == []
    counts = join.counts()
    assert (counts["joined"], counts["duplicate_outcomes"], counts["late_fraud_outcomes"]) == (
        1,
        1,
        1,
    )
    # A parked outcome whose prediction never comes is forgotten after reported_at + grace.
    join.on_outcome(9, False, T0 + 2 * H, None, None)
    join.clock.at_end(PRED)
    join.clock.observe(OUT, T0 + 2 * H + timedelta(minutes=5))
    join.clock.at_end(OUT)
    assert join.expire() == 1 and join.backlog()["parked_outcomes"] == 0


@settings(max_examples=200, deadline=None)
@given(offsets=st.lists(st.integers(0, 120), min_size=1, max_size=12))
def test_labels_depend_on_event_time_not_on_what_is_read_first(offsets: list[int]) -> None:
    """Outcome read before or after the horizon cursor reaches the payment: same example."""
    for pid, minutes in enumerate(offsets):
        p = _prediction(pid, T0)
        at = T0 + timedelta(minutes=minutes)
        results = []
        for cursor_first in (False, True):
            join = _fresh()
            join.clock.observe(PRED, T0 + 3 * H)
            join.clock.at_end(OUT)
            if cursor_first and at > T0 + H:  # the cursor can only be first for a late outcome
                got = join.on_due(p, None) + join.on_outcome(pid, True, at, p, None)
            else:
                got = join.on_outcome(pid, True, at, p, None) + join.on_due(p, None)
            results.append([(e.label, e.source, e.labelled_at) for e in got])
        assert results[0] == results[1]
        assert len(results[0]) == 1
        assert results[0][0][0] is (at <= T0 + H)


def test_snapshot_round_trip() -> None:
    join = _fresh()
    join.clock.observe(OUT, T0)
    join.on_outcome(3, True, T0, None, None)
    restored = StreamJoin.restore(join.snapshot(), CFG)
    assert restored.snapshot() == join.snapshot()
    assert restored.parked.keys() == {3}
    assert restored.watermark == join.watermark
