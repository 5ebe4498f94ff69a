"""Debezium change events (JsonConverter, no schemas) as plain ``ChangeEvent`` values: the
envelope every stage reads, decoded once here.

A stage says, per table, which columns it needs and how to check a row (``readers``); other
columns are ignored, a needed one that is missing or of the wrong shape makes the event
undecodable (``DecodeError``: the shell dead-letters it with the original bytes). Money never
passes through a float: ``decimal.handling.mode=string`` sends ``"12.34"``, kept as text here.

The de-duplication position is ``(last_commit_lsn, lsn)`` from ``source.sequence`` (falling back
to ``source.lsn``). For one row, changes reach the WAL in this order, so a later change of the
same row always has a larger position; a null last-commit LSN (seen in real events) orders
first, as -1. The position is compared per row key, never per partition: several rows share one
LSN in a multi-row statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import orjson

from freshloop.core.exceptions import DecodeError, SourceTruncatedError

__all__ = [
    "ChangeEvent",
    "Position",
    "Reader",
    "Row",
    "decode_envelope",
    "format_position",
    "parse_position",
]

Position = tuple[int, int]
Row = dict[str, Any]
# a table's reader: the columns kept, and the check of a row (what it parsed on the way, e.g.
# event times and scaled amounts, keyed as the stage likes; raises DecodeError)
Reader = tuple[Set[str], Callable[[Row, str], dict[Any, int]]]
_OPS = {"c", "u", "d", "r"}


@dataclass(slots=True)
class ChangeEvent:
    """One row change: images restricted to the needed columns; commit time in ms since epoch.

    A value: nothing changes an event once decoded (``dataclasses.replace`` makes another). Not
    a frozen dataclass only because its ``__init__`` (``object.__setattr__`` per field) costs
    five times as much, for every change event a stage decodes."""

    table: str
    op: str
    key: str  # the primary-key values joined by ",", e.g. "1001" for {"payment_id":1001}
    before: Row | None
    after: Row | None
    position: Position
    commit_ms: int
    # what the reader's check parsed of each image (event times, scaled amounts), so the
    # stage does not parse it again
    before_parsed: dict[Any, int] = field(default_factory=dict, compare=False, repr=False)
    after_parsed: dict[Any, int] = field(default_factory=dict, compare=False, repr=False)
    # the Kafka partition it came from: event-time watermarks and row-state expiry are kept
    # per partition; tables of a join share partition numbers
    partition: int = 0
    # the source transaction (Debezium's ``source.txId``): which side of a backfill's snapshot
    # the change is on; None when the event carries none
    txid: int | None = field(default=None, compare=False)


def format_position(position: Position) -> str:
    return f"{position[0]}:{position[1]}"


def parse_position(text: str | bytes | None) -> Position | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode()
    first, second = text.split(":")
    return (int(first), int(second))


def _position(source: dict[str, Any]) -> Position:
    sequence = source.get("sequence")
    if type(sequence) is str and sequence[:2] == '["' and sequence[-2:] == '"]':
        # the usual '["<last commit lsn>","<lsn>"]', without a JSON parse
        first, sep, second = sequence[2:-2].partition('","')
        if sep and first.isascii() and first.isdigit() and second.isascii() and second.isdigit():
            return (int(first), int(second))
    lsn = source.get("lsn")
    last_commit: Any = None
    if sequence:
        try:
            parts = orjson.loads(sequence)
        except orjson.JSONDecodeError as exc:
            msg = f"source.sequence is not JSON: {sequence!r}"
            raise DecodeError(msg) from exc
        if not isinstance(parts, list) or len(parts) != 2:
            msg = f"source.sequence must be [last_commit_lsn, lsn], got {sequence!r}"
            raise DecodeError(msg)
        last_commit, current = parts
        lsn = current if current is not None else lsn
    try:
        return (-1 if last_commit is None else int(last_commit), int(lsn))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        msg = f"source position is not numeric: lsn={lsn!r} sequence={sequence!r}"
        raise DecodeError(msg) from exc


def _image(raw: Any, columns: Set[str], where: str) -> Row | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        msg = f"{where} must be an object, got {type(raw).__name__}"
        raise DecodeError(msg)
    try:
        return {c: raw[c] for c in columns}
    except KeyError:
        missing = sorted(c for c in columns if c not in raw)
        msg = f"{where} lacks needed column(s) {', '.join(missing)}"
        raise DecodeError(msg) from None


def decode_envelope(
    value: bytes | None, key: bytes | None, readers: Mapping[str, Reader], partition: int = 0
) -> ChangeEvent | None:
    """The change event in ``value`` (read from Kafka ``partition``); None for a tombstone or
    a table with no reader."""
    if value is None:
        return None
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = f"value is not JSON: {exc}"
        raise DecodeError(msg) from exc
    if type(envelope) is not dict:
        msg = f"value must be a Debezium envelope object, got {type(envelope).__name__}"
        raise DecodeError(msg)
    source = envelope.get("source")
    op = envelope.get("op")
    if type(source) is not dict or type(source.get("table")) is not str:
        msg = "envelope has no source.table"
        raise DecodeError(msg)
    table = source["table"]
    reader = readers.get(table)
    if reader is None:
        return None
    if op == "t":  # TRUNCATE (Debezium sends it when skipped.operations lets it): refused
        try:
            at = _position(source)
        except DecodeError:
            at = (-1, -1)  # refused all the same
        msg = f"TRUNCATE of {table} (a whole table's rows at once) is not applied"
        raise SourceTruncatedError(msg, table, at)
    if op not in _OPS:
        msg = f"op {op!r} is not handled (expected one of c, u, d, r)"
        raise DecodeError(msg)
    columns, check = reader
    before = _image(envelope.get("before"), columns, "before")
    after = _image(envelope.get("after"), columns, "after")
    before_parsed = {} if before is None else check(before, "before")
    after_parsed = {} if after is None else check(after, "after")
    if (
        (op in ("c", "r") and after is None)
        or (op == "d" and before is None)
        or (op == "u" and (after is None or before is None))
    ):
        msg = f"op {op!r} with before={before is not None} after={after is not None}"
        if op in ("u", "d"):
            msg += " (is REPLICA IDENTITY FULL set on the table?)"
        raise DecodeError(msg)
    commit_ms = source.get("ts_ms")
    if type(commit_ms) is not int:
        msg = f"source.ts_ms must be an integer, got {commit_ms!r}"
        raise DecodeError(msg)
    if key is None:
        msg = "change event has no key"
        raise DecodeError(msg)
    return ChangeEvent(
        table,
        op,
        _key_text(key),
        before,
        after,
        _position(source),
        commit_ms,
        before_parsed,
        after_parsed,
        partition,
        txid if type(txid := source.get("txId")) is int else None,
    )


def _key_text(key: bytes) -> str:
    try:
        parsed = orjson.loads(key)
    except orjson.JSONDecodeError as exc:
        msg = f"key is not JSON: {exc}"
        raise DecodeError(msg) from exc
    if type(parsed) is not dict or not parsed:
        msg = f"key must be an object of primary-key columns, got {key[:100]!r}"
        raise DecodeError(msg)
    if len(parsed) == 1:
        for only in parsed.values():
            return str(only)
    return ",".join(str(parsed[k]) for k in sorted(parsed))
