"""Decoding real-shaped Debezium envelopes; bad ones raise DecodeError with a reason."""

from __future__ import annotations

from decimal import Decimal, localcontext

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_pipelines import SAMPLE_FEATURES, DecodeError
from feature_pipelines.decode import decode
from feature_pipelines.windows import scaled
from freshloop.core.debezium import _position
from tests.feature_pipelines.fixtures import envelope

KEY = b'{"payment_id":1001}'
ROW = {
    "payment_id": 1001,
    "customer_id": 7,
    "merchant_id": 3,
    "amount": "12.34",
    "currency": "USD",
    "channel": "web",
    "status": "pending",
    "created_at": "2026-11-28T16:47:06.154647Z",
    "updated_at": "2026-11-28T16:47:06Z",
    "new_column_added_later": [1, 2],
}


def test_insert_keeps_needed_columns_and_position() -> None:
    event = decode(envelope("payments", "c", None, ROW, lsn=5000), KEY, SAMPLE_FEATURES)
    assert event is not None
    assert (event.table, event.op, event.key, event.before) == ("payments", "c", "1001", None)
    assert event.after == {k: ROW[k] for k in SAMPLE_FEATURES.needed_columns("payments")}
    assert "new_column_added_later" not in event.after  # unknown columns ignored
    assert event.position == (4999, 5000)


def test_tombstones_and_unread_tables_are_skipped() -> None:
    assert decode(None, KEY, SAMPLE_FEATURES) is None
    customers = envelope("customers", "c", None, {"customer_id": 1}, lsn=9)
    assert decode(customers, b'{"customer_id":1}', SAMPLE_FEATURES) is None


def test_null_last_commit_lsn_orders_first() -> None:
    raw = orjson.loads(envelope("payments", "c", None, ROW, lsn=77))
    raw["source"]["sequence"] = '[null,"77"]'
    event = decode(orjson.dumps(raw), KEY, SAMPLE_FEATURES)
    assert event is not None and event.position == (-1, 77)
    assert event.position < (0, 1)


def test_long_decimals_stay_exact_and_absurd_exponents_are_refused() -> None:
    digits = "1234567890" * 5  # 50 digits: past the text fast path and Decimal's default 28
    assert scaled(f"{digits}.01", 2, "amount") == int(digits + "01")
    assert scaled(f"{digits}E-2", 2, "amount") == int(digits)
    with pytest.raises(DecodeError, match="more than 1000 digits"):
        scaled("1e999999999", 2, "amount")


def test_money_stays_exact() -> None:
    total = scaled("0.10", 2, "amount") + scaled("0.20", 2, "amount")
    assert Decimal(total).scaleb(-2) == Decimal("0.30")
    with pytest.raises(DecodeError, match="exact decimal"):
        scaled(0.1, 2, "amount")
    with pytest.raises(DecodeError, match="more than 2 decimal places"):
        scaled("0.001", 2, "amount")


def _scaled_by_decimal(value: str, scale: int) -> int | None:
    """What ``scaled`` must give: exact units of 10**-scale, or None where it must refuse."""
    try:
        with localcontext() as exact:
            exact.prec = 200
            units = Decimal(value).scaleb(scale)
    except ArithmeticError:
        return None
    if not units.is_finite() or units != units.to_integral_value():
        return None
    return int(units)


@given(
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
        st.from_regex(r"\A-?[0-9]{0,6}\.?[0-9]{0,4}\Z"),
        st.sampled_from(["+5", ".5", "-.5", "5.", "1e2", "٣", "1.2.3", "", "-", ".", " 1"]),
    ),
    st.integers(0, 4),
)
def test_scaled_equals_decimal_arithmetic(text: str, scale: int) -> None:
    expected = _scaled_by_decimal(text, scale)
    if expected is None:
        with pytest.raises(DecodeError):
            scaled(text, scale, "amount")
    else:
        assert scaled(text, scale, "amount") == expected


@given(st.one_of(st.integers(0, 2**63), st.none()), st.integers(0, 2**63))
def test_position_without_json_parse_equals_the_json_one(last: int | None, lsn: int) -> None:
    for first in (f'"{last}"', str(last)) if last is not None else ("null",):
        sequence = f'[{first},"{lsn}"]'
        expected = (-1 if last is None else last, lsn)
        assert _position({"lsn": 1, "sequence": sequence}) == expected
    assert _position({"lsn": lsn}) == (-1, lsn)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "envelope object"),
        (b'{"op":"c","after":{},"source":{}}', "no source.table"),
        (envelope("payments", "c", None, {"payment_id": 1}, lsn=3), "lacks needed column"),
        (envelope("payments", "u", None, ROW, lsn=3), "REPLICA IDENTITY FULL"),
        (envelope("payments", "m", None, None, lsn=3), "not handled"),
    ],
)
def test_bad_events_have_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(value, KEY, SAMPLE_FEATURES)


def test_wrong_type_is_a_decode_error() -> None:
    value = envelope("payments", "c", None, {**ROW, "amount": 12.34}, lsn=3)
    with pytest.raises(DecodeError, match="exact decimal"):
        decode(value, KEY, SAMPLE_FEATURES)
