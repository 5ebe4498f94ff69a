"""The as-of statements built from feature definitions (pure): the oracle's measures over the
row versions visible at each scored row's commit position, with the same window rule."""

from __future__ import annotations

import pytest
from psycopg import sql

from feature_pipelines.aggregations import State
from feature_pipelines.catalog import SAMPLE_FEATURES
from feature_pipelines.history import as_of_query, history_table, states_from_row
from feature_pipelines.oracle import window_bounds


def _text(query: sql.Composable) -> str:
    # Identifiers and literals without a connection: enough to read the statement's shape.
    return query.as_string(None)


def test_one_lateral_per_feature_over_history_tables_only() -> None:
    q, params = as_of_query(list(SAMPLE_FEATURES))
    text = _text(q)
    assert text.count("CROSS JOIN LATERAL (SELECT count(") == len(SAMPLE_FEATURES)
    assert '"payments_history"' in text and '"payment_outcomes_history"' in text
    assert ' "payments" ' not in text and ' "payment_outcomes" ' not in text
    assert params == {"f6_c0": "declined", "f12_c0": True}
    for name in ("ids", "pos", "t_us"):
        assert f"%({name})s" in text


def test_every_version_is_filtered_by_visibility_and_the_lookup_too() -> None:
    fraud = SAMPLE_FEATURES.by_name("merchant_fraud_count_7d")
    text = _text(as_of_query([fraud])[0])
    for alias in ('"s"', '"l"'):
        assert (
            f"{alias}._valid_from <= p._pos AND ({alias}._valid_to IS NULL OR "
            f"{alias}._valid_to > p._pos)" in text
        )
    assert '"l"."merchant_id" = p."merchant_id"' in text
    assert '"s"."reported_at" >= to_timestamp' in text


def test_lifetime_features_have_no_window() -> None:
    text = _text(as_of_query([SAMPLE_FEATURES.by_name("payment_count_lifetime")])[0])
    assert "to_timestamp" not in text


@pytest.mark.parametrize("name", ["payment_count_10m", "amount_sum_1h", "merchant_fraud_count_7d"])
@pytest.mark.parametrize("offset_us", [0, 1, 9_999_999, 10_000_000, 123_456_789_012])
def test_the_window_arithmetic_is_the_oracles(name: str, offset_us: int) -> None:
    """The SQL's integer arithmetic, evaluated here, gives the oracle's [lo, hi)."""
    f = SAMPLE_FEATURES.by_name(name)
    t_us = 1_780_000_000_000_000 + offset_us
    w_us, big_w = f.bucket_seconds * 1_000_000, f.window_seconds * 1_000_000
    lo = ((t_us - big_w) // w_us + 1) * f.bucket_seconds
    hi = (t_us // w_us + 1) * f.bucket_seconds
    assert (lo, hi) == window_bounds(f, t_us)
    text = _text(as_of_query([f])[0])
    assert f"((p._t_us - {big_w}) / {w_us} + 1) * {f.bucket_seconds}" in text
    assert f"(p._t_us / {w_us} + 1) * {f.bucket_seconds}" in text


def test_rows_become_the_oracles_states() -> None:
    feats = [
        SAMPLE_FEATURES.by_name(n)
        for n in ("payment_count_1h", "amount_sum_1h", "distinct_merchants_24h")
    ]
    states = states_from_row(feats, [2, None, None, 2, "30.50", None, 2, None, ["7", "9"]])
    assert states["payment_count_1h"] == State(count=2)
    assert states["amount_sum_1h"] == State(count=2, total=3050)
    assert states["distinct_merchants_24h"].values == {"7": 1, "9": 1}


def test_history_table_names() -> None:
    assert history_table("payments") == "payments_history"
