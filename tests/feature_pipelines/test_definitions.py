"""Feature definitions: the sample catalog exactly as specified, and validation that says how to
fix a bad declaration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from feature_pipelines import (
    SAMPLE_FEATURES,
    Condition,
    DefinitionError,
    Entity,
    Feature,
    FeatureSet,
    Lookup,
)
from feature_pipelines.readout import ReadPlan

H = timedelta(hours=1)
CATALOG = {
    # name: (entity, table, event time, aggregation, value, window, filter)
    "payment_count_10m": ("customer", "payments", "created_at", "count", None, "10m", ()),
    "payment_count_1h": ("customer", "payments", "created_at", "count", None, "1h", ()),
    "payment_count_24h": ("customer", "payments", "created_at", "count", None, "24h", ()),
    "amount_sum_1h": ("customer", "payments", "created_at", "sum", "amount", "1h", ()),
    "amount_sum_24h": ("customer", "payments", "created_at", "sum", "amount", "24h", ()),
    "amount_mean_24h": ("customer", "payments", "created_at", "mean", "amount", "24h", ()),
    "declined_count_24h": (
        "customer", "payments", "created_at", "count", None, "24h", (("status", "declined"),),
    ),
    "distinct_merchants_24h": (
        "customer", "payments", "created_at", "distinct", "merchant_id", "24h", (),
    ),
    "payment_count_lifetime": ("customer", "payments", "created_at", "count", None, None, ()),
    "amount_sum_lifetime": ("customer", "payments", "created_at", "sum", "amount", None, ()),
    "merchant_payment_count_1h": ("merchant", "payments", "created_at", "count", None, "1h", ()),
    "merchant_amount_sum_24h": ("merchant", "payments", "created_at", "sum", "amount", "24h", ()),
    "merchant_fraud_count_7d": (
        "merchant", "payment_outcomes", "reported_at", "count", None, "7d", (("is_fraud", True),),
    ),
}  # fmt: skip
_SPANS = {"10m": timedelta(minutes=10), "1h": H, "24h": 24 * H, "7d": 7 * 24 * H, None: None}


def test_sample_catalog_is_exactly_the_specified_set() -> None:
    assert [f.name for f in SAMPLE_FEATURES] == list(CATALOG)
    for f in SAMPLE_FEATURES:
        entity, table, event_time, agg, value, span, where = CATALOG[f.name]
        assert (f.entity.name, f.table, f.event_time, f.agg, f.value) == (
            entity,
            table,
            event_time,
            agg,
            value,
        )
        assert f.window == _SPANS[span]
        assert tuple((c.column, c.equals) for c in f.where) == where
    assert SAMPLE_FEATURES.entities() == {
        "customer": Entity("customer", "customer_id"),
        "merchant": Entity("merchant", "merchant_id"),
    }
    fraud = SAMPLE_FEATURES.by_name("merchant_fraud_count_7d")
    assert fraud.lookup == Lookup("payment_id", "payments", "payment_id", "merchant_id")
    assert all(f.lookup is None for f in SAMPLE_FEATURES if f is not fraud)


def test_needed_columns_come_from_the_definitions() -> None:
    assert SAMPLE_FEATURES.tables() == {"payments", "payment_outcomes"}
    assert SAMPLE_FEATURES.needed_columns("payments") == {
        "payment_id",  # provides the lookup
        "customer_id",
        "merchant_id",
        "amount",
        "status",
        "created_at",
    }
    assert SAMPLE_FEATURES.needed_columns("payment_outcomes") == {
        "payment_id",
        "is_fraud",
        "reported_at",
    }
    assert SAMPLE_FEATURES.needed_columns("customers") == set()


E = Entity("shop", "shop_id")


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"agg": "mean"}, "needs a value column"),
        ({"agg": "distinct"}, "needs a value column"),
        ({"agg": "sum", "value": "total", "scale": 13}, "scale must be 0..12"),
        ({"agg": "count", "window": timedelta(seconds=30)}, "whole number of minutes"),
        ({"agg": "count", "window": timedelta(minutes=1, seconds=30)}, "whole number of minutes"),
        (
            {"agg": "count", "lookup": Lookup("order_id", "orders", "order_id", "shop_id")},
            "lookup must read another table",
        ),
        ({"agg": "count", "event_time": "Placed At"}, "identifier"),
    ],
)
def test_bad_features_say_what_to_fix(kwargs: dict, hint: str) -> None:
    args = {"name": "f", "entity": E, "table": "orders", "event_time": "placed_at", **kwargs}
    with pytest.raises(DefinitionError, match=hint):
        Feature(**args)


def test_a_feature_set_rejects_clashing_names_and_entities() -> None:
    f = Feature("orders_1h", E, "orders", "placed_at", "count", window=H)
    with pytest.raises(DefinitionError, match="repeated: orders_1h"):
        FeatureSet.of([f, f])
    other = Feature("x", Entity("shop", "store_id"), "orders", "placed_at", "count")
    with pytest.raises(DefinitionError, match="two key columns"):
        FeatureSet.of([f, other])


def test_definitions_are_frozen_values() -> None:
    f = Feature("x", E, "orders", "placed_at", "count", where=(Condition("kind", "sale"),))
    with pytest.raises(AttributeError):
        f.name = "y"  # type: ignore[misc]
    same = Feature("x", E, "orders", "placed_at", "count", where=(Condition("kind", "sale"),))
    assert f == same and hash(f) == hash(same)


_C = Entity("customer", "customer_id")


def _f(name: str, agg: str, value: str | None = None, **kw) -> Feature:
    return Feature(name, _C, "payments", "created_at", agg, value, window=H, **kw)  # type: ignore[arg-type]


def test_a_mean_keeps_only_what_no_feature_over_its_rows_keeps() -> None:
    mean = SAMPLE_FEATURES.by_name("amount_mean_24h")
    assert (mean.total_from, mean.count_from) == ("amount_sum_24h", "payment_count_24h")
    declined = (Condition("status", "declined"),)
    picked = FeatureSet.of(
        [
            _f("m", "mean", "amount"),
            _f("s_other_scale", "sum", "amount", scale=3),  # not the same total
            _f("c_filtered", "count", where=declined),  # not the same rows
            _f("s1", "sum", "amount"),
            _f("s2", "sum", "amount"),
            _f("c1", "count"),
            _f("m_declined", "mean", "amount", where=declined),
            Feature("m_lifetime", _C, "payments", "created_at", "mean", "amount"),
        ]
    )
    m, m_declined, m_lifetime = (picked.by_name(n) for n in ("m", "m_declined", "m_lifetime"))
    assert (m.total_from, m.count_from) == ("s1", "c1")  # the first one declared
    assert (m_declined.total_from, m_declined.count_from) == (None, "c_filtered")
    assert (m_lifetime.total_from, m_lifetime.count_from) == (None, None)  # other window
    # a set made of another's features keeps their layout
    again = FeatureSet.of(picked.features)
    assert again == picked


def test_a_mean_needs_the_features_it_reads_in_its_set() -> None:
    mean = SAMPLE_FEATURES.by_name("amount_mean_24h")
    with pytest.raises(DefinitionError, match="put a sum amount_sum_24h over the same rows"):
        FeatureSet.of([mean, SAMPLE_FEATURES.by_name("payment_count_24h")])
    with pytest.raises(DefinitionError, match="only a mean takes its total or count"):
        _f("s", "sum", "amount", total_from="x")
    with pytest.raises(DefinitionError, match="needs amount_sum_24h, whose fields it reads"):
        ReadPlan([mean, SAMPLE_FEATURES.by_name("payment_count_24h")], 0)
