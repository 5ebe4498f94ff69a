"""Prediction messages round-trip exactly; bad messages and outcome events raise MessageError."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_pipelines.decode import ChangeEvent
from online_learning.exceptions import MessageError
from online_learning.messages import (
    decode_outcome,
    decode_prediction,
    encode_prediction,
    payment_from_event,
)
from online_learning.records import Prediction
from tests.online_learning.fixtures import T0

_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _prediction(features: dict[str, float], score: float = 0.25) -> Prediction:
    return Prediction(7, score, features, "v1", T0, T0 + timedelta(milliseconds=3))


@given(st.dictionaries(st.text(min_size=1, max_size=20), _FLOATS, max_size=30))
def test_the_logged_vector_reads_back_bit_for_bit(features: dict[str, float]) -> None:
    back = decode_prediction(encode_prediction(_prediction(features), served_from="registry"))
    assert back == _prediction(features)
    assert all(
        math.copysign(1, back.features[k]) == math.copysign(1, v) for k, v in features.items()
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"not json", "not JSON"),
        (b"[1]", "must be an object"),
        (b'{"payment_id": 1}', "lacks"),
        (orjson.dumps({**orjson.loads(encode_prediction(_prediction({}))), "score": 2}), "[0, 1]"),
        (
            orjson.dumps(
                {**orjson.loads(encode_prediction(_prediction({}))), "features": {"a": "x"}}
            ),
            "finite numbers",
        ),
        (
            orjson.dumps(
                {
                    **orjson.loads(encode_prediction(_prediction({}))),
                    "predicted_at": "2026-01-01T00:00:00",
                }
            ),
            "timezone",
        ),
        (
            orjson.dumps({**orjson.loads(encode_prediction(_prediction({}))), "payment_id": True}),
            "integer",
        ),
    ],
)
def test_bad_prediction_messages_are_refused(value: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_prediction(value)


def _outcome(op: str = "c", **after: object) -> bytes:
    row = {"payment_id": 5, "is_fraud": True, "reported_at": "2026-11-28T12:00:01.5Z", **after}
    return orjson.dumps(
        {
            "op": op,
            "before": row if op in ("u", "d") else None,
            "after": None if op == "d" else row,
            "source": {"table": "payment_outcomes", "lsn": 10, "ts_ms": 1},
        }
    )


def test_outcomes_decode_with_aware_times() -> None:
    outcome = decode_outcome(_outcome(), b'{"payment_id":5}')
    assert outcome is not None
    assert (outcome.payment_id, outcome.is_fraud) == (5, True)
    assert outcome.at == datetime(2026, 11, 28, 12, 0, 1, 500000, tzinfo=UTC)


def test_tombstones_and_deletes_are_nothing_to_learn() -> None:
    assert decode_outcome(None, b'{"payment_id":5}') is None
    assert decode_outcome(_outcome("d"), b'{"payment_id":5}') is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "not JSON"),
        (_outcome(is_fraud="yes"), "is_fraud must be a boolean"),
        (_outcome(reported_at="2026-11-28T12:00:00"), "timezone"),
        (_outcome(reported_at=17), "ISO-8601"),
    ],
)
def test_bad_outcomes_are_refused(value: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_outcome(value, b'{"payment_id":5}')


def _payment_event(**after: object) -> ChangeEvent:
    row = {
        "payment_id": 9,
        "customer_id": 1,
        "merchant_id": 2,
        "amount": "12.30",
        "channel": "app",
        "status": "pending",
        "created_at": "2026-11-28T12:00:00Z",
        **after,
    }
    return ChangeEvent("payments", "c", "9", None, row, (1, 1), 1)


def test_payments_keep_exact_money_and_aware_time() -> None:
    payment = payment_from_event(_payment_event())
    assert str(payment.amount) == "12.30" and payment.channel == "app"
    assert payment.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        ({"amount": "x"}, "decimal"),
        ({"customer_id": "1"}, "integer"),
        ({"created_at": "2026-11-28T12:00:00"}, "timezone"),
    ],
)
def test_bad_payments_are_refused(after: dict[str, object], reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        payment_from_event(_payment_event(**after))
