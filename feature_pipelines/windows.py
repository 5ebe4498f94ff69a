"""Bucketed sliding windows and the Redis field names of feature state (pure).

The window rule. A feature with window W keeps buckets of width w = W / 60 (whole seconds).
An event with event time e (microseconds since the epoch, UTC) goes to bucket
b = floor(e / w). A value read at time t counts the buckets b with

    floor((t - W) / w) < b <= floor(t / w)

that is, events with event time in [(floor((t - W) / w) + 1) * w, (floor(t / w) + 1) * w).
Compared with the exact window (t - W, t], the value misses at most the part of one bucket at
the old edge, and also counts events later than t that fall in t's own bucket. The SQL oracle
applies the same rule, so online values and recomputation agree exactly. Buckets with
b <= floor((t - W) / w) are expired: no read counts them again, and the sweeper drops them.

Field names inside one entity's hash (``<ns>:e:{<entity>:<key>}``):
- count and sum: ``name`` (lifetime) or ``name@<bucket>``; sums are integers scaled by
  10**scale, so money stays exact;
- mean: ``name:s`` / ``name:n`` (sum and count), with ``@<bucket>`` when windowed;
- distinct: ``name#<value>`` or ``name@<bucket>#<value>``, each a count of rows with that value;
- freshness: ``_commit_ms`` (commit time of the newest change applied), ``_written_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from feature_pipelines.exceptions import DecodeError
from feature_pipelines.spec import Feature

__all__ = [
    "COMMIT_FIELD",
    "WRITTEN_FIELD",
    "FieldRef",
    "bucket_range",
    "contribution",
    "event_micros",
    "parse_field",
    "scaled",
]

COMMIT_FIELD = "_commit_ms"
WRITTEN_FIELD = "_written_ms"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def event_micros(value: Any, column: str) -> int:
    """Microseconds since the epoch of a Debezium time value (ISO text, or epoch micros)."""
    if isinstance(value, bool):
        msg = f"{column} must be a timestamp, got {value!r}"
        raise DecodeError(msg)
    if isinstance(value, int):
        return value  # timestamp without time zone, adaptive mode: epoch micros (UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            msg = f"{column} is not an ISO timestamp: {value!r}"
            raise DecodeError(msg) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MICRO
    msg = f"{column} must be a timestamp, got {type(value).__name__}"
    raise DecodeError(msg)


def scaled(value: Any, scale: int, column: str) -> int:
    """An exact decimal (text or int, never float) as an integer of 10**-scale units."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"{column} must be an exact decimal (text or integer), got {value!r}"
        raise DecodeError(msg)
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        msg = f"{column} is not a decimal: {value!r}"
        raise DecodeError(msg) from exc
    units = number.scaleb(scale)
    if not number.is_finite() or units != units.to_integral_value():
        msg = f"{column}={value!r} has more than {scale} decimal places"
        raise DecodeError(msg)
    return int(units)


def bucket_range(feature: Feature, t_micros: int) -> tuple[int, int]:
    """The buckets a read at ``t`` counts: ``lo < b <= hi``."""
    w = feature.bucket_seconds * 1_000_000
    return ((t_micros - feature.window_seconds * 1_000_000) // w, t_micros // w)


def contribution(
    feature: Feature, row: dict[str, Any] | None, memo: dict[Any, int] | None = None
) -> list[tuple[str, int]]:
    """The (field, increment) pairs one row adds to its entity's hash for this feature.

    ``memo`` caches parsed times and scaled amounts across the features of one row.
    """
    if row is None:
        return []
    memo = {} if memo is None else memo
    for cond in feature.where:
        if row[cond.column] != cond.equals:
            return []
    suffix = ""
    if feature.window is not None:
        micros = memo.get(feature.event_time)
        if micros is None:
            raw = row[feature.event_time]
            if raw is None:
                return []  # no event time: in no window, as in SQL
            micros = memo[feature.event_time] = event_micros(raw, feature.event_time)
        suffix = f"@{micros // (feature.bucket_seconds * 1_000_000)}"
    name = feature.name
    if feature.agg == "count":
        return [(name + suffix, 1)]
    value = row[feature.value]  # type: ignore[index]
    if feature.agg == "distinct":
        if value is None:
            return []
        return [(f"{name}{suffix}#{value}", 1)]
    if value is None:
        return []  # SQL sum/avg ignore NULLs too
    memo_key = (feature.value, feature.scale)
    units = memo.get(memo_key)
    if units is None:
        units = memo[memo_key] = scaled(value, feature.scale, feature.value or "")
    if feature.agg == "sum":
        return [(name + suffix, units)]
    return [(f"{name}:s{suffix}", units), (f"{name}:n{suffix}", 1)]


@dataclass(frozen=True)
class FieldRef:
    """A parsed field name: feature name, part ('' | 's' | 'n'), bucket or None, distinct value."""

    name: str
    part: str
    bucket: int | None
    value: str | None


def parse_field(field: str) -> FieldRef | None:
    """The parts of a feature field name; None for freshness and other bookkeeping fields."""
    if field.startswith("_"):
        return None
    head, sep, value = field.partition("#")
    head, at, bucket = head.partition("@")
    name, colon, part = head.partition(":")
    return FieldRef(name, part, int(bucket) if at else None, value if sep else None)
