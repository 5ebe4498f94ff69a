"""Oracle SQL for every feature: identifiers only from definitions, every value bound."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from feature_pipelines import (
    SAMPLE_FEATURES,
    Condition,
    DefinitionError,
    Entity,
    Feature,
    Lookup,
    describe,
)
from feature_pipelines.oracle import oracle_query, window_bounds
from tests.feature_pipelines.fold_hashes import EVERY_KIND

SHOP = Entity("shop", "shop_id")
USER_FEATURES = [
    Feature(
        "big_refunds_1h",
        SHOP,
        "orders",
        "placed_at",
        "sum",
        "total",
        where=(Condition("kind", "refund' OR 1=1 --"), Condition("flagged", True)),
        window=timedelta(hours=1),
        scale=4,
    ),
    Feature("buyers_lifetime", SHOP, "orders", "placed_at", "distinct", "buyer_id"),
]
ALL = [*SAMPLE_FEATURES, *USER_FEATURES, *EVERY_KIND]
T_US = 1_795_000_123 * 1_000_000 + 456_789
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _text(query: sql.Composed) -> str:
    return query.as_string(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("keys", [None, [7, "8"]])
@pytest.mark.parametrize("feature", ALL, ids=lambda f: f.name)
def test_values_are_bound_and_identifiers_quoted(feature: Feature, keys: list | None) -> None:
    query, params = oracle_query(feature, T_US, keys)
    text = _text(query)
    assert set(_PLACEHOLDER.findall(text)) == set(params)
    assert "'" not in text  # no string literal at all: values never reach the text
    for cond in feature.where:
        assert str(cond.equals) not in text or isinstance(cond.equals, bool)
    idents = {feature.table, *(c.column for c in feature.where)}
    idents |= {feature.event_time} if feature.window else set()
    idents |= {feature.value} if feature.value else set()
    idents |= {feature.lookup.table, feature.lookup.provides} if feature.lookup else set()
    for ident in idents:
        assert f'"{ident}"' in text
    assert text.startswith("SELECT ") and text.endswith(" GROUP BY 1")
    assert (keys is not None) == ("= ANY(%(keys)s)" in text)
    if keys is not None:
        assert params["keys"] == ["7", "8"]  # compared as text: any key type works


@pytest.mark.parametrize("feature", ALL, ids=lambda f: f.name)
def test_measures_follow_the_aggregation(feature: Feature) -> None:
    text = _text(oracle_query(feature, T_US)[0])
    expected = {
        "count": "count(*)",
        "sum": 'sum("s"."{v}")::text',
        "mean": 'sum("s"."{v}")::text',  # mean = exact sum / count, finalized like online
        "distinct": 'array_agg(DISTINCT "s"."{v}"::text)',
        "min": 'count("s"."{v}"), min("s"."{v}")::text',
        "max": 'count("s"."{v}"), max("s"."{v}")::text',
    }[feature.agg].format(v=feature.value)
    assert expected in text
    assert ("to_timestamp" in text) == (feature.window is not None)


@settings(max_examples=200, deadline=None)
@given(feature=st.sampled_from([f for f in ALL if f.window]), t_us=st.integers(0, 2 * 10**15))
def test_sql_bounds_are_the_online_window_rule(feature: Feature, t_us: int) -> None:
    bounds = window_bounds(feature, t_us)
    assert bounds is not None
    lo, hi = bounds
    w, big_w = feature.bucket_seconds, feature.window_seconds
    assert lo == ((t_us // 1_000_000 - big_w) // w + 1) * w
    assert hi == (t_us // 1_000_000 // w + 1) * w
    assert hi - lo == big_w and lo * 1_000_000 > t_us - big_w * 1_000_000
    _query, params = oracle_query(feature, t_us)
    assert (params["lo"], params["hi"]) == (lo, hi)


def test_lifetime_features_have_no_bounds() -> None:
    for feature in ALL:
        if feature.window is None:
            assert window_bounds(feature, T_US) is None
            assert "lo" not in oracle_query(feature, T_US)[1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Feature('x"; drop table payments; --', SHOP, "orders", "placed_at", "count"),
        lambda: Feature("x", SHOP, "orders; --", "placed_at", "count"),
        lambda: Feature("x", SHOP, "orders", "placed_at", "sum", "total) --"),
        lambda: Condition("kind = kind OR", "x"),
        lambda: Entity("shop", 'shop_id"'),
        lambda: Lookup("payment_id", "payments", "payment_id", "Merchant"),
    ],
)
def test_identifiers_are_validated_at_definition(make) -> None:
    with pytest.raises(DefinitionError, match="identifier"):
        make()


def test_describe_is_one_line_per_feature() -> None:
    lines = [describe(f) for f in ALL]
    assert all(
        "\n" not in line and line.startswith(f"{f.entity.name}.{f.name}:")
        for f, line in zip(ALL, lines, strict=True)
    )
    fraud = describe(SAMPLE_FEATURES.by_name("merchant_fraud_count_7d"))
    assert "via payments.merchant_id" in fraud and "is_fraud = True" in fraud and "7d" in fraud
    assert "lifetime" in describe(SAMPLE_FEATURES.by_name("amount_sum_lifetime"))
    assert describe(SAMPLE_FEATURES.by_name("amount_mean_24h")).endswith(
        "; reads the fields of amount_sum_24h and payment_count_24h"
    )
    assert "reads the fields" not in describe(SAMPLE_FEATURES.by_name("amount_sum_24h"))
