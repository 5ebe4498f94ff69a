"""The oracle SQL: derived from the definition, values only as bound parameters."""

from __future__ import annotations

import dataclasses
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.oracle import oracle_query, state_from_row, window_bounds
from feature_pipelines.readout import State, finalize


def _text(query: sql.Composed) -> str:
    return query.as_string(None)  # type: ignore[arg-type]


def test_window_and_filter_are_parameters_not_text() -> None:
    f = SAMPLE_FEATURES.by_name("declined_count_24h")
    t_us = 1_795_000_000 * 1_000_000
    query, params = oracle_query(f, t_us, keys=[7, 8])
    text = _text(query)
    assert "declined" not in text and "%(c0)s" in text and params["c0"] == "declined"
    assert params["keys"] == ["7", "8"]
    assert (params["lo"], params["hi"]) == window_bounds(f, t_us)
    lo, hi = window_bounds(f, t_us)  # type: ignore[misc]
    assert hi - lo == 24 * 3600 and lo % f.bucket_seconds == 0
    assert '"payments" AS "s"' in text and "GROUP BY 1" in text


def test_lookup_feature_joins_the_provider() -> None:
    f = SAMPLE_FEATURES.by_name("merchant_fraud_count_7d")
    text = _text(oracle_query(f, 0)[0])
    assert '"payment_outcomes" AS "s" JOIN "payments" AS "p"' in text
    assert '"p"."merchant_id"' in text and '"s"."reported_at"' in text


def test_lifetime_has_no_time_bounds_and_distinct_lists_values() -> None:
    f = SAMPLE_FEATURES.by_name("payment_count_lifetime")
    query, params = oracle_query(f, 0)
    assert "lo" not in params and "to_timestamp" not in _text(query)
    d = SAMPLE_FEATURES.by_name("distinct_merchants_24h")
    assert "array_agg(DISTINCT" in _text(oracle_query(d, 0)[0])


def test_oracle_rows_finalize_like_online_reads() -> None:
    mean = SAMPLE_FEATURES.by_name("amount_mean_24h")
    assert str(finalize(mean, state_from_row(mean, 3, "10.00", None))) == "3.333333"
    d = SAMPLE_FEATURES.by_name("distinct_merchants_24h")
    assert finalize(d, state_from_row(d, 5, None, ["1", "2"])) == 2


@settings(max_examples=500, deadline=None)
@given(
    total=st.one_of(st.integers(-(10**30), 10**30), st.integers(-50, 50), st.integers(0, 10**9)),
    count=st.integers(1, 10**6),
    scale=st.integers(0, 4),
)
def test_mean_rounds_half_even_to_six_places(total: int, count: int, scale: int) -> None:
    """The integer rounding equals exact decimal division rounded half-even, ties included."""
    mean = dataclasses.replace(SAMPLE_FEATURES.by_name("amount_mean_24h"), scale=scale)
    with localcontext() as ctx:
        ctx.prec = 200  # exact for these sizes: no rounding before the quantize
        want = (Decimal(total) / Decimal(count)).scaleb(-scale)
        want = want.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
    got = finalize(mean, State(count=count, total=total))
    assert got == want
    assert got.as_tuple().exponent == -6


def test_mean_ties_go_to_even() -> None:
    mean = dataclasses.replace(SAMPLE_FEATURES.by_name("amount_mean_24h"), scale=0)
    # 0.0000025 -> 0.000002 and 0.0000035 -> 0.000004 (ties to even), -0.0000025 -> -0.000002
    assert str(finalize(mean, State(count=400_000, total=1))) == "0.000002"
    assert str(finalize(mean, State(count=2_000_000, total=7))) == "0.000004"
    assert finalize(mean, State(count=400_000, total=-1)) == Decimal("-0.000002")
    assert finalize(mean, State(count=0, total=5)) is None
