"""Retention decisions (pure): which days of training examples go, measured in event time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from drift.retention import Span, day_bounds, partition_day, partition_name, plan_days

D0 = date(2001, 1, 1)


def _days(first: int, last: int) -> set[date]:
    return {D0 + timedelta(days=i) for i in range(first, last + 1)}


def test_a_day_goes_only_when_all_of_it_is_older_than_the_retention() -> None:
    watermark = datetime(2001, 1, 11, 6, tzinfo=UTC)  # cutoff 2001-01-01 06:00 with 10 days
    plan = plan_days(
        _days(0, 10), set(), watermark=watermark, retention_days=10, ahead_days=0, protected=[]
    )
    assert plan.drop == ()  # Jan 1 still holds rows newer than the cutoff
    later = plan_days(
        _days(0, 10),
        set(),
        watermark=watermark + timedelta(hours=18),
        retention_days=10,
        ahead_days=0,
        protected=[],
    )
    assert later.drop == (D0,)


def test_protected_spans_hold_their_days_and_default_rows_are_split_or_purged() -> None:
    watermark = datetime(2001, 1, 31, tzinfo=UTC)
    reference = Span(datetime(2001, 1, 3, 12, tzinfo=UTC), datetime(2001, 1, 4, 1, tzinfo=UTC))
    plan = plan_days(
        _days(0, 5),
        _days(6, 30),
        watermark=watermark,
        retention_days=20,
        ahead_days=1,
        protected=[reference],
    )
    assert plan.held == (D0 + timedelta(days=2), D0 + timedelta(days=3))
    assert plan.drop == tuple(sorted(_days(0, 5) - set(plan.held)))
    assert plan.purge == tuple(sorted(_days(6, 9)))  # expired, only in the default partition
    assert plan.split == tuple(sorted(_days(10, 30)))
    assert plan.create == (date(2001, 2, 1),)  # Jan 31 is split, Feb 1 is ahead


def test_an_open_span_holds_everything_after_its_start_and_no_watermark_drops_nothing() -> None:
    plan = plan_days(
        _days(0, 40),
        set(),
        watermark=datetime(2001, 3, 1, tzinfo=UTC),
        retention_days=1,
        ahead_days=0,
        protected=[Span(None, None)],
    )
    assert plan.drop == () and len(plan.held) == 41
    empty = plan_days(
        _days(0, 3), _days(4, 4), watermark=None, retention_days=1, ahead_days=3, protected=[]
    )
    assert empty.drop == () and empty.create == () and empty.split == (D0 + timedelta(days=4),)


def test_partition_names_round_trip() -> None:
    assert partition_name(date(2026, 3, 9)) == "training_examples_p20260309"
    assert partition_day("training_examples_p20260309") == date(2026, 3, 9)
    assert partition_day("training_examples_default") is None
    assert day_bounds(date(2026, 3, 9))[1] - day_bounds(date(2026, 3, 9))[0] == timedelta(days=1)


@given(
    offsets=st.sets(st.integers(0, 60), max_size=30),
    in_default=st.sets(st.integers(0, 60), max_size=30),
    water_h=st.integers(0, 70 * 24),
    retention=st.integers(1, 40),
    span=st.none() | st.tuples(st.integers(0, 60 * 24), st.integers(0, 5 * 24)),
)
def test_plan_keeps_every_row_within_retention_and_every_protected_day(
    offsets: set[int],
    in_default: set[int],
    water_h: int,
    retention: int,
    span: tuple[int, int] | None,
) -> None:
    existing = {D0 + timedelta(days=o) for o in offsets}
    default = {D0 + timedelta(days=o) for o in in_default} - existing
    watermark = datetime.combine(D0, datetime.min.time(), tzinfo=UTC) + timedelta(hours=water_h)
    spans = []
    if span is not None:
        start = watermark - timedelta(days=70) + timedelta(hours=span[0])
        spans.append(Span(start, start + timedelta(hours=span[1])))
    plan = plan_days(
        existing,
        default,
        watermark=watermark,
        retention_days=retention,
        ahead_days=2,
        protected=spans,
    )
    cutoff = watermark - timedelta(days=retention)
    gone = set(plan.drop) | set(plan.purge)
    for day in gone:
        assert day_bounds(day)[1] <= cutoff  # nothing at or after the cutoff
        assert not any(s.touches(day) for s in spans)
    assert set(plan.drop) <= existing and set(plan.purge) <= default
    # every default day is either purged or split into its own partition, never both
    assert set(plan.purge) | set(plan.split) == default
    assert not set(plan.purge) & set(plan.split)
    assert not set(plan.create) & (existing | default)
