"""The window rule at bucket edges, expiry, and the contract every aggregation keeps."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_pipelines import DefinitionError, Entity, Feature
from feature_pipelines.aggregations import KINDS
from feature_pipelines.reference import contribution, expired_fields, read_values
from feature_pipelines.windows import bucket_range, compile_group, event_micros
from tests.feature_pipelines.fold_hashes import FEATURES

E = Entity("customer", "customer_id")
W10 = timedelta(minutes=10)
S = 1_000_000


def _row(t_s: int, amount: str = "1.00", merchant: int = 1) -> dict:
    return {
        "customer_id": 1,
        "merchant_id": merchant,
        "amount": amount,
        "created_at": t_s * S,
    }  # epoch micros, as Debezium sends a timestamp


def _fold(feature: Feature, rows: list[dict]) -> dict[str, str]:
    fields: dict[str, int] = {}
    for row in rows:
        for name, n in contribution(feature, row):
            fields[name] = fields.get(name, 0) + n
    return {k: str(v) for k, v in fields.items()}


def test_bucket_is_window_over_60_and_edges_follow_the_rule() -> None:
    f = Feature("c", E, "payments", "created_at", "count", window=W10)
    assert f.bucket_seconds == 10
    t = 1_000_000_005  # seconds; buckets of 10 s; read covers [t-600 rounded up, bucket end)
    lo, hi = bucket_range(f, t * S)
    assert (lo, hi) == ((t - 600) // 10, t // 10)
    fields = _fold(f, [_row(s) for s in (t - 606, t - 600, t - 595, t - 594, t, t + 4, t + 5)])
    # (t-606) and (t-600) fall in the expired bucket [t-605, t-595) ... by the rule:
    first_in = ((t - 600) // 10 + 1) * 10
    counted = [
        s
        for s in (t - 606, t - 600, t - 595, t - 594, t, t + 4, t + 5)
        if first_in <= s < (t // 10 + 1) * 10
    ]
    assert read_values([f], fields, t * S) == {"c": len(counted)}
    assert len(counted) == 4


def test_expired_fields_are_listed_for_the_sweeper() -> None:
    f = Feature("c", E, "payments", "created_at", "count", window=W10)
    fields = _fold(f, [_row(1000), _row(2000)])
    assert expired_fields([f], list(fields), 1700 * S) == ["c@100"]
    assert expired_fields([f], list(fields), 900 * S) == []


@pytest.mark.parametrize("window", [None, W10])
@pytest.mark.parametrize("agg", list(KINDS))
def test_every_aggregation_retracts_exactly(agg: str, window: timedelta | None) -> None:
    kind = KINDS[agg]
    value = ("amount" if kind.decimal else "merchant_id") if kind.takes_value else None
    f = Feature("x", E, "payments", "created_at", agg, value, window=window)
    rows = [_row(100, "1.10", 1), _row(101, "2.25", 2), _row(102, "0.05", 2)]
    t = 105 * S
    full = read_values([f], _fold(f, rows), t)["x"]
    expected = {
        "count": 3,
        "sum": Decimal("3.40"),
        "mean": Decimal("1.133333"),
        "distinct": 2,
        "min": Decimal("0.05"),
        "max": Decimal("2.25"),
    }
    assert full == expected[agg]
    # adding a row and retracting it again leaves the state as it was
    extra = _row(103, "9.99", 3)
    fields = _fold(f, [*rows, extra])
    for name, n in contribution(f, extra):
        fields[name] = str(int(fields[name]) - n)
    assert read_values([f], fields, t)["x"] == full
    # no rows: count 0, sums 0, mean, min and max None
    empty = {"count": 0, "sum": Decimal("0.00"), "distinct": 0}
    assert read_values([f], {}, t)["x"] == empty.get(agg)


def test_iso_and_epoch_times_agree() -> None:
    assert event_micros("1970-01-01T00:00:01.5Z", "t") == 1_500_000
    assert event_micros(1_500_000, "t") == 1_500_000


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"agg": "sum"}, "needs a value column"),
        ({"agg": "count", "value": "amount"}, "takes no value column"),
        ({"agg": "count", "window": timedelta(seconds=90)}, "whole number of minutes"),
        ({"agg": "median"}, "aggregation must be one of count, sum, mean, distinct"),
        ({"agg": "count", "name": "Bad-Name"}, "SQL identifier"),
    ],
)
def test_bad_definitions_say_what_to_fix(kwargs: dict, hint: str) -> None:
    args = {"name": "f", "entity": E, "table": "payments", "event_time": "created_at", **kwargs}
    with pytest.raises(DefinitionError, match=hint):
        Feature(**args)


_LAYOUTS = FEATURES  # a mean of every layout, and every registered kind
_AMOUNTS = st.one_of(st.none(), st.decimals("-999", "999", places=2).map(str), st.integers(-9, 9))
_TIMES = st.one_of(st.none(), st.integers(0, 4_000_000_000 * S))


@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "payment_id": st.integers(1, 5),
                "customer_id": st.one_of(st.none(), st.integers(1, 3)),
                "merchant_id": st.one_of(st.none(), st.integers(1, 3), st.text(max_size=3)),
                "amount": _AMOUNTS,
                "status": st.sampled_from(["declined", "approved", None]),
                "channel": st.sampled_from(["web", "pos"]),
                "created_at": _TIMES,
                "is_fraud": st.booleans(),
                "reported_at": _TIMES,
            }
        ),
        max_size=5,
    )
)
def test_compiled_groups_give_exactly_the_per_feature_contributions(rows: list[dict]) -> None:
    """The planner's generated code and the reference ``contribution`` never disagree."""
    for table in _LAYOUTS.tables():
        feats = _LAYOUTS.for_table(table)
        if not feats:
            continue
        contribute = compile_group(feats)
        for row in rows:
            expected = [pair for f in feats for pair in contribution(f, row)]
            assert contribute(row, {}) == expected
