"""What a batch cannot apply, found before the script (one event's own contribution) and after
its refusal (the events behind a field): exact at the int64 bounds (pure)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from feature_pipelines import Condition, Entity, Feature, FeatureSet
from feature_pipelines.rejects import (
    INT64_MAX,
    INT64_MIN,
    Rejection,
    culprits,
    fits,
    oversized,
    parse_rejection,
)
from tests.feature_pipelines.fixtures import T0, envelope, iso
from tests.feature_pipelines.harness import decode_all

ACCOUNT = Entity("account", "account_id")
SUMS = FeatureSet.of(
    [
        Feature("entries", ACCOUNT, "ledger", "created_at", "count"),
        Feature("total", ACCOUNT, "ledger", "created_at", "sum", "amount"),
        Feature(
            "credits_1h",
            ACCOUNT,
            "ledger",
            "created_at",
            "sum",
            "amount",
            where=(Condition("kind", "credit"),),
            window=timedelta(hours=1),
        ),
    ]
)
EXTREMES = FeatureSet.of(
    [
        Feature("lowest", ACCOUNT, "ledger", "created_at", "min", "amount"),
        Feature("highest", ACCOUNT, "ledger", "created_at", "max", "amount"),
    ]
)
# integers around both bounds, and anywhere
NEAR = st.one_of(
    st.integers(INT64_MAX - 40, INT64_MAX + 40),
    st.integers(INT64_MIN - 40, INT64_MIN + 40),
    st.integers(-(2**64), 2**64),
    st.integers(-1000, 1000),
)


def _row(units: int, kind: str) -> dict:
    sign = "-" if units < 0 else ""
    amount = f"{sign}{abs(units) // 100}.{abs(units) % 100:02d}"
    return {"id": 1, "account_id": 7, "amount": amount, "kind": kind, "created_at": iso(T0)}


def _event(features: FeatureSet, units: int, kind: str = "debit", old: int | None = None):
    """A ledger row of ``units`` cents (scale 2), as the pipeline decodes it; an update from
    ``old`` cents if given."""
    before = None if old is None else _row(old, kind)
    op = "c" if before is None else "u"
    item = (b'{"id":1}', envelope("ledger", op, before, _row(units, kind), 1008))
    (event,) = decode_all(features, [item])
    return event


def test_fits_is_exactly_the_int64_range() -> None:
    assert fits(INT64_MAX) and fits(INT64_MIN) and fits(0)
    assert not fits(INT64_MAX + 1) and not fits(INT64_MIN - 1)
    assert (INT64_MAX, INT64_MIN) == (9223372036854775807, -9223372036854775808)


@given(NEAR)
def test_one_contribution_past_int64_is_refused_before_the_script(units: int) -> None:
    reason = oversized(SUMS, _event(SUMS, units))
    assert (reason is None) == fits(units)
    if reason is not None:
        assert "int64" in reason and "total" in reason and "ledger.amount" in reason


def test_the_bounds_themselves_pass_one_past_them_not() -> None:
    bounds = ((INT64_MAX, True), (INT64_MAX + 1, False), (INT64_MIN, True), (INT64_MIN - 1, False))
    for units, ok in bounds:
        assert (oversized(SUMS, _event(SUMS, units)) is None) is ok, units


def test_a_huge_amount_no_field_adds_is_not_refused() -> None:
    """min and max keep the value in the field's name and count 1: any amount fits."""
    assert oversized(EXTREMES, _event(EXTREMES, 10**30)) is None
    assert oversized(SUMS, _event(SUMS, 10**30)) is not None
    # a windowed sum filtered on another kind: the lifetime sum still adds it
    reason = oversized(SUMS, _event(SUMS, 10**30, kind="credit"))
    assert reason is not None


def test_an_update_whose_old_image_is_huge_is_left_to_the_script() -> None:
    """The old image is retracted only if the row was counted: the script knows that."""
    assert oversized(SUMS, _event(SUMS, 100, old=10**30)) is None
    assert oversized(SUMS, _event(SUMS, 10**30, old=100)) is not None


@given(
    found=st.integers(INT64_MIN, INT64_MAX),
    adds=st.lists(st.tuples(st.integers(0, 6), NEAR), min_size=1, max_size=12),
)
def test_without_the_culprits_the_field_never_leaves_int64(
    found: int, adds: list[tuple[int, int]]
) -> None:
    """Whatever the batch adds to a field, dropping the culprits leaves a running value (and so
    a net sum) inside int64; an event is a culprit only if its own step would leave it."""
    trace = {("e", "total"): sorted(adds, key=lambda item: item[0])}
    net = sum(amount for _i, amount in adds)
    rejection = Rejection("overflow", "e", "total", str(found), str(net))
    out = culprits(trace, rejection)
    by_event: dict[int, int] = {}
    for i, amount in trace[("e", "total")]:
        by_event[i] = by_event.get(i, 0) + amount
    running = found
    for i, amount in by_event.items():
        if i in out:
            assert not fits(running + amount)
            assert "int64" in out[i]
        else:
            running += amount
            assert fits(running)
    if all(fits(found + sum(list(by_event.values())[:n])) for n in range(len(by_event) + 1)):
        assert out == {}  # no step leaves the range: nothing is dropped


def test_a_field_that_is_no_integer_or_a_key_of_another_type_drops_every_writer() -> None:
    trace = {
        ("e", ""): [(0, 0), (2, 0)],
        ("e", "total"): [(0, 5), (2, 7)],
        ("r", ""): [(1, 0)],
    }
    value = Rejection("value", "e", "total", "abc", "12")
    assert set(culprits(trace, value)) == {0, 2}
    assert "not an integer" in culprits(trace, value)[0]
    wrong = Rejection("type", "r", "", "string", "hash")
    assert set(culprits(trace, wrong)) == {1}
    assert "not a hash" in culprits(trace, wrong)[1]
    assert culprits(trace, Rejection("type", "offsets", "", "list", "hash")) == {}


def test_the_script_answer_reads_as_a_rejection() -> None:
    reply = [b"overflow", b"ns:e:{account:3}", b"total", b"", b"10000000000000000000"]
    rejection = parse_rejection(reply)
    assert rejection == Rejection("overflow", "ns:e:{account:3}", "total", "", "1" + "0" * 19)
    assert "holds 0 and the batch adds 10000000000000000000" in rejection.describe()
