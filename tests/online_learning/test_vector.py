"""The vector rule: stable keys, missing indicators, floats only at the model boundary."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from online_learning.exceptions import VectorError
from online_learning.vector import CHANNELS, SERVED_FEATURES, build_vector
from tests.online_learning.fixtures import T0, make_payment

FULL = {name: 3 for name in SERVED_FEATURES} | {"amount_mean_24h": Decimal("12.5")}


def test_keys_are_the_same_whatever_is_served() -> None:
    full = build_vector(make_payment(), FULL)
    empty = build_vector(make_payment(), {})
    assert list(full) == list(empty)
    assert len(full) == 2 + len(CHANNELS) + 1 + 4 + 2 * len(SERVED_FEATURES) + 1


def test_none_and_absent_become_zero_with_missing_indicator() -> None:
    x = build_vector(make_payment(), {"payment_count_1h": None})
    for name in SERVED_FEATURES:
        assert x[name] == 0.0
        assert x[f"{name}_missing"] == 1.0
    assert x["amount_to_mean_24h"] == 0.0


def test_served_values_convert_to_float() -> None:
    x = build_vector(make_payment(amount="50.00"), FULL)
    assert x["payment_count_1h"] == 3.0
    assert x["payment_count_1h_missing"] == 0.0
    assert x["amount_mean_24h"] == 12.5
    assert x["amount_to_mean_24h"] == 4.0
    assert x["amount"] == 50.0
    assert x["log_amount"] == pytest.approx(math.log1p(50.0))
    assert all(type(v) is float for v in x.values())


def test_extra_served_features_are_ignored() -> None:
    assert build_vector(make_payment(), FULL | {"brand_new": 9}) == build_vector(
        make_payment(), FULL
    )


def test_channel_one_hot_and_unknown_channel() -> None:
    app = build_vector(make_payment(channel="app"), {})
    assert [app[f"channel_{c}"] for c in CHANNELS] == [0.0, 1.0, 0.0]
    assert app["channel_other"] == 0.0
    odd = build_vector(make_payment(channel="phone"), {})
    assert [odd[f"channel_{c}"] for c in (*CHANNELS, "other")] == [0.0, 0.0, 0.0, 1.0]


def test_time_of_day_uses_utc() -> None:
    paris = timezone(timedelta(hours=1))
    local = build_vector(make_payment(created_at=T0.astimezone(paris)), {})
    utc = build_vector(make_payment(created_at=T0), {})
    assert local == utc
    assert utc["hour_sin"] == pytest.approx(0.0, abs=1e-12)  # 12:00 UTC
    assert utc["hour_cos"] == pytest.approx(-1.0)


def test_naive_datetime_refused() -> None:
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(VectorError, match="naive"):
        build_vector(make_payment(created_at=naive), {})


@pytest.mark.parametrize("bad", [True, "3", 1.5j])
def test_wrong_served_type_refused(bad: object) -> None:
    with pytest.raises(VectorError, match="payment_count_1h"):
        build_vector(make_payment(), {"payment_count_1h": bad})  # type: ignore[dict-item]


def test_non_finite_decimal_counts_as_missing() -> None:
    x = build_vector(make_payment(), {"amount_sum_1h": Decimal("NaN")})
    assert x["amount_sum_1h"] == 0.0
    assert x["amount_sum_1h_missing"] == 1.0


@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
    values=st.dictionaries(
        st.sampled_from(SERVED_FEATURES),
        st.none()
        | st.integers(-(10**12), 10**12)
        | st.decimals(allow_nan=False, allow_infinity=False, places=4),
    ),
    minutes=st.integers(0, 60 * 24 * 14),
)
def test_deterministic_and_finite(amount: Decimal, values: dict, minutes: int) -> None:
    p = make_payment(amount=str(amount), created_at=T0 + timedelta(minutes=minutes))
    x = build_vector(p, values)
    assert x == build_vector(p, dict(reversed(list(values.items()))))
    assert all(math.isfinite(v) for v in x.values())


@given(
    values=st.dictionaries(
        st.sampled_from(SERVED_FEATURES),
        st.none()
        | st.integers(-(10**15), 10**15)
        | st.decimals(allow_nan=True, allow_infinity=True, places=6).filter(
            lambda d: not d.is_snan()
        )
        | st.floats(allow_nan=True, allow_infinity=True),
    ),
)
def test_each_served_value_follows_the_rule(values: dict) -> None:
    """The fast paths for ints and decimals give what the general rule (``_served_float``)
    gives: the value as a float, or 0.0 with the missing indicator when None or not finite."""
    from online_learning.vector import _served_float

    x = build_vector(make_payment(), values)
    for name in SERVED_FEATURES:
        want = _served_float(name, values.get(name))
        assert x[f"{name}_missing"] == (1.0 if want is None else 0.0)
        assert x[name] == (0.0 if want is None else want)
