"""Event time of a fast simulated run: the clock's mapping, and the workload's outcome share and
label delays measured in event seconds (pure: no database)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshloop.simulate import EventClock, Op, Workload, WorkloadConfig

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _ops(config: WorkloadConfig, wall_s: float, step_wall: float = 0.5) -> list[Op]:
    """Everything a run of ``wall_s`` wall seconds writes, stepping its clock like the writer."""
    workload = Workload(config)
    scale = config.time_scale or 1.0
    out: list[Op] = []
    t = 0.0
    while t < wall_s:
        out += workload.due(t * scale)
        t += step_wall
    workload.stop_payments()
    out += workload.due(float("inf"))
    return out


def test_clock_maps_wall_seconds_to_event_time_ending_now() -> None:
    clock = EventClock.ending_at(NOW, 3600, wall_span_s=720)  # 720 wall s = 30 days
    assert clock.start == NOW - timedelta(days=30)
    assert clock.event_seconds(1.0) == 3600
    assert clock.at(clock.event_seconds(720)) == NOW
    assert clock.at(clock.event_seconds(24)) == NOW - timedelta(days=29)
    assert clock.wall_seconds(86_400) == 24


def test_clock_refuses_naive_start_and_bad_scale() -> None:
    with pytest.raises(ValueError, match="aware"):
        EventClock(datetime(2025, 1, 1), 10)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="positive"):
        EventClock(NOW, 0)
    with pytest.raises(ValueError, match="time_scale"):
        Workload(WorkloadConfig(time_scale=-1))
    with pytest.raises(ValueError, match="outcome_share"):
        Workload(WorkloadConfig(outcome_share=1.5))


@settings(max_examples=30)
@given(
    scale=st.sampled_from([1.0, 60.0, 2160.0, 3600.0]),
    rate=st.floats(min_value=1, max_value=200),
)
def test_rate_is_per_wall_second_and_payments_are_spaced_in_event_time(
    scale: float, rate: float
) -> None:
    config = WorkloadConfig(rate=rate, time_scale=scale, seed=5)
    workload = Workload(config)
    payments = [op for op in workload.due(10 * scale) if op.kind == "insert_payment"]
    # 10 wall seconds at `rate` per wall second, whatever the scale (the first one at 0)
    assert len(payments) == int(10 * rate) + 1 or len(payments) == int(10 * rate)
    gaps = {round(b.at - a.at, 6) for a, b in zip(payments, payments[1:], strict=False)}
    assert gaps <= {round(scale / rate, 6)} | {round(scale / rate, 6) + d for d in (-1e-6, 1e-6)}


def test_outcome_share_and_uniform_delay_up_to_the_horizon_in_event_time() -> None:
    horizon = 86_400.0
    config = WorkloadConfig(
        rate=200,
        customers=2000,
        merchants=50,
        time_scale=2160,
        outcome_share=0.02,
        label_delay_s=horizon,
        label_delay_spread="uniform",
        seed=13,
    )
    ops = _ops(config, wall_s=200)  # 40,000 payments over 5 simulated days
    created = {op.payment: op.at for op in ops if op.kind == "insert_payment"}
    deleted = {op.payment for op in ops if op.kind == "delete_payment"}
    outcomes = [op for op in ops if op.kind == "insert_outcome"]
    assert 39_900 <= len(created) <= 40_001  # the last step is at 199.5 wall s
    share = len(outcomes) / len(created)
    assert 0.016 < share < 0.024  # 2% +- 4.5 standard deviations of a binomial over 40,000
    assert Counter(op.payment for op in outcomes).most_common(1)[0][1] == 1
    assert not {op.payment for op in outcomes} & deleted
    delays = sorted(op.at - created[op.payment] for op in outcomes)
    assert 0 <= delays[0] and delays[-1] < horizon
    # uniform over [0, horizon): each quarter holds about a quarter (800 outcomes: +- 5 sd)
    for q in range(4):
        inside = sum(q * horizon / 4 <= d < (q + 1) * horizon / 4 for d in delays)
        assert abs(inside / len(delays) - 0.25) < 0.08, (q, inside, len(delays))
    # status changes come seconds (in event time) after their payment, not hours
    status = [op.at - created[op.payment] for op in ops if op.kind == "update_status"]
    assert max(status) <= 2.5 * config.status_delay_s + 0.1
    assert Workload(config).max_follow_up_s() == horizon


def test_around_spread_and_full_share_keep_the_old_delays() -> None:
    config = WorkloadConfig(rate=50, label_delay_s=4.0, seed=2)
    ops = _ops(config, wall_s=20, step_wall=0.05)
    created = {op.payment: op.at for op in ops if op.kind == "insert_payment"}
    deleted = {op.payment for op in ops if op.kind == "delete_payment"}
    delays = [op.at - created[op.payment] for op in ops if op.kind == "insert_outcome"]
    assert len(delays) == len(created) - len(deleted)
    assert 2.0 <= min(delays) and max(delays) < 6.0
    assert Workload(config).max_follow_up_s() == 6.0
