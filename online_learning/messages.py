"""What crosses Kafka: prediction messages (our JSON) and outcome change events (Debezium).

Pure functions over bytes and plain values. A prediction message carries the exact vector the
model scored, so the learner trains on what was served; floats go through orjson, whose output
reads back to the same float. Anything malformed raises ``MessageError``, which the shells turn
into a dead letter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from feature_pipelines.decode import ChangeEvent, decode
from feature_pipelines.exceptions import DecodeError
from online_learning.exceptions import MessageError
from online_learning.features import SCORING_FEATURES
from online_learning.records import Payment, Prediction

__all__ = [
    "Outcome",
    "decode_outcome",
    "decode_prediction",
    "encode_prediction",
    "foreign_namespace",
    "payment_from_event",
]


@dataclass(frozen=True)
class Outcome:
    """A label as it arrived: ``None`` from ``decode_outcome`` means nothing to learn."""

    payment_id: int
    is_fraud: bool
    at: datetime


def _aware(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        msg = f"{what} must be an ISO-8601 string, got {value!r}"
        raise MessageError(msg)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"{what} is not ISO-8601: {value!r}"
        raise MessageError(msg) from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        msg = f"{what} must carry a timezone, got {value!r}"
        raise MessageError(msg)
    return parsed


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what} must be an integer, got {value!r}"
        raise MessageError(msg)
    return value


def encode_prediction(prediction: Prediction, **extra: Any) -> bytes:
    """The JSON logged for a prediction; ``extra`` adds context (customer, served_from, ...)."""
    return orjson.dumps(
        {
            **extra,
            "payment_id": prediction.payment_id,
            "score": prediction.score,
            "features": dict(prediction.features),
            "model_version": prediction.model_version,
            "created_at": prediction.created_at.isoformat(),
            "predicted_at": prediction.predicted_at.isoformat(),
        }
    )


def foreign_namespace(value: bytes | None, namespace: str) -> str | None:
    """The namespace a prediction message names when it is not ``namespace``, else None.

    A message without ``ns`` (written before messages carried it) counts as the reader's own;
    one that cannot be read is left to ``decode_prediction`` to reject.

    >>> foreign_namespace(b'{"ns": "demo", "payment_id": 1}', "freshloop")
    'demo'
    >>> foreign_namespace(b'{"ns": "demo"}', "demo") is None
    True
    >>> foreign_namespace(b'{"payment_id": 1}', "demo") is None
    True
    """
    if value is None or b'"ns"' not in value:
        return None
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    ns = raw.get("ns") if isinstance(raw, dict) else None
    return ns if isinstance(ns, str) and ns != namespace else None


def decode_prediction(value: bytes | None) -> Prediction:
    """The prediction in a message written by ``encode_prediction``."""
    if value is None:
        msg = "prediction message has no value"
        raise MessageError(msg)
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = f"prediction message is not JSON: {exc}"
        raise MessageError(msg) from exc
    if not isinstance(raw, dict):
        msg = f"prediction message must be an object, got {type(raw).__name__}"
        raise MessageError(msg)
    try:
        features = raw["features"]
        score = raw["score"]
        version = raw["model_version"]
        payment_id = _int(raw["payment_id"], "payment_id")
        created_at = _aware(raw["created_at"], "created_at")
        predicted_at = _aware(raw["predicted_at"], "predicted_at")
    except KeyError as exc:
        msg = f"prediction message lacks {exc.args[0]!r}"
        raise MessageError(msg) from exc
    if not isinstance(features, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in features.values()
    ):
        msg = "prediction features must map names to finite numbers"
        raise MessageError(msg)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
        msg = f"prediction score must be a number in [0, 1], got {score!r}"
        raise MessageError(msg)
    if not isinstance(version, str) or not version:
        msg = f"prediction model_version must be a non-empty string, got {version!r}"
        raise MessageError(msg)
    return Prediction(
        payment_id=payment_id,
        score=float(score),
        features={str(k): float(v) for k, v in features.items()},
        model_version=version,
        created_at=created_at,
        predicted_at=predicted_at,
    )


def decode_outcome(value: bytes | None, key: bytes | None) -> Outcome | None:
    """The label in a ``payment_outcomes`` change event; None for tombstones and deletes.

    An update is a corrected label: it is passed on and the join counts it as a duplicate (and
    a conflict when it flips), since a payment is learned once.
    """
    try:
        event = decode(value, key, SCORING_FEATURES)
    except DecodeError as exc:
        raise MessageError(str(exc)) from exc
    if event is None or event.op == "d":
        return None
    if event.table != "payment_outcomes":
        msg = f"expected a payment_outcomes event, got one of {event.table!r}"
        raise MessageError(msg)
    row = event.after or {}
    is_fraud = row.get("is_fraud")
    if not isinstance(is_fraud, bool):
        msg = f"is_fraud must be a boolean, got {is_fraud!r}"
        raise MessageError(msg)
    payment_id = _int(row.get("payment_id"), "payment_id")
    return Outcome(payment_id, is_fraud, _aware(row.get("reported_at"), "reported_at"))


def payment_from_event(event: ChangeEvent) -> Payment:
    """The payment inserted by a ``payments`` create event."""
    row: Mapping[str, Any] = event.after or {}
    try:
        amount = Decimal(str(row["amount"]))
        channel, status = row["channel"], row["status"]
        payment = Payment(
            payment_id=_int(row["payment_id"], "payment_id"),
            customer_id=_int(row["customer_id"], "customer_id"),
            merchant_id=_int(row["merchant_id"], "merchant_id"),
            amount=amount,
            channel=str(channel),
            status=str(status),
            created_at=_aware(row["created_at"], "created_at"),
        )
    except KeyError as exc:
        msg = f"payment event lacks column {exc.args[0]!r}"
        raise MessageError(msg) from exc
    except InvalidOperation as exc:
        msg = f"payment amount is not a decimal: {row.get('amount')!r}"
        raise MessageError(msg) from exc
    return payment
