"""Bucketed sliding windows and the Redis field names of feature state (pure).

The window rule. A feature with window W keeps buckets of width w = W / 60 (whole seconds).
An event with event time e (microseconds since the epoch, UTC) goes to bucket
b = floor(e / w). A value read at time t counts the buckets b with

    floor((t - W) / w) < b <= floor(t / w)

that is, events with event time in [(floor((t - W) / w) + 1) * w, (floor(t / w) + 1) * w).
Compared with the exact window (t - W, t], the value misses at most the part of one bucket at
the old edge, and also counts events later than t that fall in t's own bucket. The SQL oracle
applies the same rule, so online values and recomputation agree exactly. Buckets with
b <= floor((t - W) / w) are expired: no read at or after t counts them again, and the batch
write of an entity drops them as the event-time watermark passes t (``planner.sweep_steps``).

Field names inside one entity's hash (``<ns>:e:{<entity>:<key>}``) are
``name[:part][@bucket][#value]``; which parts and values a feature writes is its aggregation
kind's business (``aggregations``):
- counter kinds (count, sum, mean): ``name`` or ``name:<part>``, with ``@<bucket>`` when
  windowed; sums are integers scaled by 10**scale, so money stays exact; a mean keeps
  ``:s`` / ``:n``, or reads them from a sum's or count's fields (``aggregations.counters``);
- keyed kinds (distinct, ...): ``name#<value>`` or ``name@<bucket>#<value>``, each a count of
  rows with that value;
- freshness: ``_commit_ms`` (commit time of the newest change applied), ``_written_ms``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Any, Protocol

from feature_pipelines.aggregations import kind_of
from feature_pipelines.exceptions import DecodeError
from feature_pipelines.spec import Feature

__all__ = [
    "COMMIT_FIELD",
    "WRITTEN_FIELD",
    "FieldRef",
    "bucket_range",
    "compile_group",
    "event_micros",
    "parse_field",
    "scaled",
]

COMMIT_FIELD = "_commit_ms"
WRITTEN_FIELD = "_written_ms"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


_TIMES: dict[str, int] = {}  # ISO text -> micros; a row's time is seen again on its updates


def event_micros(value: Any, column: str) -> int:
    """Microseconds since the epoch of a Debezium time value (ISO text, or epoch micros)."""
    if isinstance(value, str):
        known = _TIMES.get(value)
        if known is not None:
            return known
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as exc:
            msg = f"{column} is not an ISO timestamp: {value!r}"
            raise DecodeError(msg) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        micros = (moment - _EPOCH) // _MICRO
        if len(_TIMES) >= 100_000:
            _TIMES.clear()
        _TIMES[value] = micros
        return micros
    if isinstance(value, bool):
        msg = f"{column} must be a timestamp, got {value!r}"
        raise DecodeError(msg)
    if isinstance(value, int):
        return value  # timestamp without time zone, adaptive mode: epoch micros (UTC)
    msg = f"{column} must be a timestamp, got {type(value).__name__}"
    raise DecodeError(msg)


def scaled(value: Any, scale: int, column: str) -> int:
    """An exact decimal (text or int, never float) as an integer of 10**-scale units."""
    if type(value) is str:
        # fast path for plain text like "12.34" / "-0.5"; anything else goes through Decimal
        whole, _dot, frac = value.partition(".")
        places = len(frac)
        if places <= scale:
            negative = whole[:1] == "-"
            digits = (whole[1:] if negative else whole) + frac
            if 0 < len(digits) <= 40 and digits.isascii() and digits.isdigit():
                units = int(digits) * 10 ** (scale - places)
                return -units if negative else units
    elif type(value) is int:
        return value * 10**scale
    if isinstance(value, bool) or not isinstance(value, str | int):
        msg = f"{column} must be an exact decimal (text or integer), got {value!r}"
        raise DecodeError(msg)
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        msg = f"{column} is not a decimal: {value!r}"
        raise DecodeError(msg) from exc
    if number.is_finite() and number.adjusted() > _MAX_DIGITS:
        msg = f"{column}={str(value)[:40]!r}... has more than {_MAX_DIGITS} digits"
        raise DecodeError(msg)
    units = number.scaleb(scale, _EXACT)  # the default context would round past 28 digits
    if not number.is_finite() or units != units.to_integral_value():
        msg = f"{column}={value!r} has more than {scale} decimal places"
        raise DecodeError(msg)
    return int(units)


# Decimal arithmetic that never rounds; and a bound on the digits before the point, so that
# text like "1e999999999" is refused instead of becoming an integer of a billion digits
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_MAX_DIGITS = 1000


def bucket_range(feature: Feature, t_micros: int) -> tuple[int, int]:
    """The buckets a read at ``t`` counts: ``lo < b <= hi``."""
    w = feature.bucket_seconds * 1_000_000
    return ((t_micros - feature.window_seconds * 1_000_000) // w, t_micros // w)


class GroupFn(Protocol):
    """``contribute(row, memo, lo=None)``: what ``row`` adds, as (field, amount) pairs; with
    ``lo`` (windowed feature name -> bucket), without the buckets at or below the feature's
    ``lo``: buckets no read at or after a watermark counts (``planner``)."""

    def __call__(
        self, row: dict[str, Any], memo: dict[Any, int], lo: Mapping[str, int] | None = None, /
    ) -> list[tuple[str, int]]: ...


_GROUPS: dict[tuple[Feature, ...], GroupFn] = {}


def compile_group(features: tuple[Feature, ...]) -> GroupFn:
    """One function giving what a row adds for all of ``features`` (same pairs, same order, as
    ``reference.contribution`` feature by feature), generated once as straight-line Python.

    The hot path calls it once per row image and entity instead of once per feature: each event
    time and amount is parsed (or taken from the decoder's memo) once, each filter tested inline.
    Names are validated identifiers and constants are embedded with ``repr``.
    """
    found = _GROUPS.get(features)
    if found is not None:
        return found
    lines = ["def contribute(row, memo, lo=None):", "    out = []"]
    times: dict[str, str] = {}
    amounts: dict[tuple[str, int], str] = {}
    for f in features:
        if f.window is not None and f.event_time not in times:
            var = times[f.event_time] = f"t{len(times)}"
            col = repr(f.event_time)
            lines += [
                f"    {var} = memo.get({col})",
                f"    if {var} is None and row[{col}] is not None:",
                f"        {var} = memo[{col}] = event_micros(row[{col}], {col})",
            ]
        if kind_of(f.agg).decimal and (f.value, f.scale) not in amounts:
            assert f.value is not None  # noqa: S101 - a decimal kind has a value column
            var = amounts[(f.value, f.scale)] = f"u{len(amounts)}"
            col, memo_key = repr(f.value), repr((f.value, f.scale))
            lines += [
                f"    {var} = memo.get({memo_key})",
                f"    if {var} is None and row[{col}] is not None:",
                f"        {var} = memo[{memo_key}] = scaled(row[{col}], {f.scale}, {col})",
            ]
    for f in features:
        tests = [f"row[{c.column!r}] == {c.equals!r}" for c in f.where]
        suffix = "''"
        if f.window is not None:
            tvar, width = times[f.event_time], f.bucket_seconds * 1_000_000
            tests.append(f"{tvar} is not None")
            tests.append(f"(lo is None or {tvar} // {width} > lo[{f.name!r}])")
            suffix = f"'@' + str({tvar} // {width})"
        # the kind's fragment: the same pairs, in the same order, as its ``pairs``
        more, body = kind_of(f.agg).write_code(f, suffix, amounts.get((f.value or "", f.scale), ""))
        tests += more
        lines.append(f"    if {' and '.join(tests) or 'True'}:")
        lines += [f"        {line}" for line in body]
    lines.append("    return out")
    namespace: dict[str, Any] = {"event_micros": event_micros, "scaled": scaled}
    exec(compile("\n".join(lines), f"<features {features[0].table}>", "exec"), namespace)  # noqa: S102
    found = _GROUPS[features] = namespace["contribute"]
    return found


@dataclass(frozen=True)
class FieldRef:
    """A parsed field name: feature name, part ('' | 's' | 'n' | 'z'), bucket or None, and the
    value of a keyed kind (distinct, ...)."""

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
