"""The delayed-label join: labels arrive long after scoring and must meet the logged features.

A pure state machine, fed by the shell in arrival order:

- ``on_prediction(payment_id, record)``: the features, score and model version logged when the
  payment was scored. Waits for its outcome, or joins an outcome that arrived first.
- ``on_outcome(payment_id, is_fraud, at)``: the label. Joins a waiting prediction, or waits for
  one (an outcome can overtake the prediction log).
- ``on_horizon(now)``: the clock. A prediction still unlabelled ``horizon`` after
  ``predicted_at`` becomes a negative (``source="horizon"``, ``labelled_at = predicted_at +
  horizon``) when ``negatives_at_horizon``; otherwise it keeps waiting until
  ``horizon + grace`` and is then dropped as ``expired_predictions``.

Every method returns the ``LabelledExample`` values it completes. Each payment is emitted at most
once, always with the features of the FIRST prediction record accepted for it:

- a second prediction or outcome for a payment already waiting or emitted is ignored and counted
  (``duplicate_predictions``, ``duplicate_outcomes``; an outcome contradicting the first one is
  also counted in ``conflicting_outcomes``);
- an outcome for a payment already emitted as a horizon negative is counted in ``late_outcomes``
  (and ``late_fraud_outcomes`` when it says fraud) and NOT learned again: the negative stands,
  and the count tells how often the horizon is too short;
- memory is bounded: a finished payment is remembered (a tombstone) for at least
  ``horizon + grace`` after its ``predicted_at``, an outcome without prediction until ``at +
  horizon + grace``; then they are dropped and counted (``dropped_tombstones``,
  ``expired_outcomes``). The largest ``now`` seen is the watermark; a prediction older than
  ``watermark - horizon - grace`` (``stale_predictions``, even if its outcome is waiting or its
  tombstone is still kept) or an unmatched outcome as old (``stale_outcomes``) is refused, so a
  replayed record cannot be learned twice after its tombstone is gone. This relies on replays
  carrying the original ``predicted_at``, which they do when the logged record is replayed, not
  recomputed.

Tombstones are compact (~8-11 bytes each in memory and ~11 in a checkpoint, instead of ~180 and
~50-60 as one dict entry with a datetime each): they are grouped in buckets by the UTC hour of
``predicted_at``, and a bucket holds only integers ``payment_id * 2 + (1 if the source was
"horizon" else 0)``, in a sorted ``array('q')`` searched by bisection plus a small set of recent
additions merged into it in batches. The price is that a bucket is dropped as a whole, once the
end of its hour plus ``horizon + grace`` has passed, so a tombstone lives up to one hour longer
than ``predicted_at + horizon + grace``: the safe direction, nothing is learned that exact
expiry would refuse. Within that extra hour a replayed prediction is still counted as stale (the
watermark check comes before the tombstones), but an outcome for the payment is counted as a
duplicate or late outcome, where exact expiry would have counted it stale or kept it waiting
(later ``expired_outcomes``); and ``dropped_tombstones`` grows up to an hour later. Payment ids
must lie in ``[-2**62, 2**62)`` to be packed this way; others raise ``MessageError`` (the shells
dead-letter the event).

Ticks scan pending predictions and waiting outcomes (O(backlog)) and tombstones by bucket;
call ``on_horizon`` every few seconds, not per event.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from freshloop.core.exceptions import ConfigurationError
from online_learning.exceptions import MessageError, NaiveDatetimeError, SnapshotError
from online_learning.records import LabelledExample, LabelSource, PredictionRecord

__all__ = ["COUNTERS", "JoinConfig", "LabelJoin", "require_aware"]

COUNTERS: tuple[str, ...] = (
    "predictions",
    "outcomes",
    "joined",
    "horizon_negatives",
    "duplicate_predictions",
    "duplicate_outcomes",
    "conflicting_outcomes",
    "late_outcomes",
    "late_fraud_outcomes",
    "stale_predictions",
    "stale_outcomes",
    "expired_predictions",
    "expired_outcomes",
    "dropped_tombstones",
)

# 2: tombstones as "done_buckets" (hour, base64 of packed ids); 1: as "done" [id, time, source].
_SNAPSHOT_FORMAT = 2
_SNAPSHOT_FORMATS = (1, 2)


def require_aware(value: datetime, what: str) -> datetime:
    """``value`` itself, or ``NaiveDatetimeError`` if it has no timezone."""
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{what} must be timezone-aware, got naive {value.isoformat()}; decode it as UTC"
        raise NaiveDatetimeError(msg)
    return value


@dataclass(frozen=True)
class JoinConfig:
    """How long to wait for a label, and how long to remember a payment after that."""

    horizon: timedelta = timedelta(days=1)
    grace: timedelta = timedelta(hours=1)
    negatives_at_horizon: bool = True

    def __post_init__(self) -> None:
        if self.horizon <= timedelta(0) or self.grace < timedelta(0):
            msg = f"label horizon must be > 0 and grace >= 0, got {self.horizon}, {self.grace}"
            raise ConfigurationError(msg)

    @property
    def memory(self) -> timedelta:
        return self.horizon + self.grace


@dataclass(frozen=True, slots=True)
class _Outcome:
    is_fraud: bool
    at: datetime


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
# Packed keys are payment_id * 2 + (source == "horizon") in a signed 64-bit integer.
_MIN_ID, _MAX_ID = -(1 << 62), (1 << 62) - 1
# A bucket's set of recent keys is merged into its sorted array past this many entries, or past
# 1/64 of the array if larger (so a merge costs O(64) moves per tombstone added, and the set,
# ~70 bytes per entry, stays a small part of the memory).
_MERGE_MIN = 4096


def _hour_of(at: datetime) -> int:
    """The bucket of ``at``: whole hours since the Unix epoch (UTC), rounded down."""
    return (at - _EPOCH) // _HOUR


def _check_id(payment_id: int) -> None:
    if not isinstance(payment_id, int) or not _MIN_ID <= payment_id <= _MAX_ID:
        msg = f"payment_id {payment_id!r} is not an integer in [-2**62, 2**62): cannot be joined"
        raise MessageError(msg)


class _Bucket:
    """The tombstones of one hour: packed keys, in a sorted array and a set of recent ones."""

    __slots__ = ("hi", "keys", "lo", "recent")

    def __init__(self, keys: array[int] | None = None) -> None:
        self.keys: array[int] = array("q") if keys is None else keys
        self.recent: set[int] = set()
        # Smallest and largest key held: payment ids grow with time, so most lookups skip most
        # buckets on these two comparisons.
        self.lo = self.keys[0] if self.keys else _MAX_ID * 2 + 1
        self.hi = self.keys[-1] if self.keys else _MIN_ID * 2

    def __len__(self) -> int:
        return len(self.keys) + len(self.recent)

    def add(self, key: int) -> None:
        self.recent.add(key)
        if key < self.lo:
            self.lo = key
        if key > self.hi:
            self.hi = key
        if len(self.recent) > max(_MERGE_MIN, len(self.keys) >> 6):
            self.merge()

    def source_of(self, payment_id: int) -> LabelSource | None:
        """The source of the payment's tombstone here, if any (its key is ``id*2`` or ``+1``)."""
        key = payment_id * 2
        if key in self.recent:
            return "outcome"
        if key + 1 in self.recent:
            return "horizon"
        keys = self.keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] >> 1 == payment_id:
            return "horizon" if keys[i] & 1 else "outcome"
        return None

    def merge(self) -> None:
        """Move the recent keys into the sorted array (the set of keys held is unchanged)."""
        if not self.recent:
            return
        keys = self.keys
        # Ids mostly grow with time: usually only a short tail of the array is re-sorted.
        start = bisect_left(keys, min(self.recent))
        tail = keys[start:].tolist()
        tail.extend(self.recent)
        tail.sort()
        del keys[start:]
        keys.extend(array("q", tail))
        self.recent = set()  # a new set: clear() would keep the large table allocated

    def to_text(self) -> str:
        """Base64 of the sorted keys as little-endian int64 (merges the recent keys first)."""
        self.merge()
        keys = self.keys
        if sys.byteorder == "big":  # pragma: no cover - the format is little-endian everywhere
            keys = array("q", keys)
            keys.byteswap()
        return base64.b64encode(keys.tobytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> _Bucket:
        if not isinstance(text, str):
            msg = f"tombstone bucket must be a base64 string, got {type(text).__name__}"
            raise TypeError(msg)
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            msg = f"tombstone bucket is not base64: {exc}"
            raise ValueError(msg) from exc
        if len(raw) % 8:
            msg = f"tombstone bucket holds {len(raw)} bytes, not a multiple of 8"
            raise ValueError(msg)
        keys = array("q")
        keys.frombytes(raw)
        if sys.byteorder == "big":  # pragma: no cover
            keys.byteswap()
        # Sorted, and no payment twice (which also rules out one id with both sources).
        if any(a >> 1 >= b >> 1 for a, b in pairwise(keys)):
            msg = "tombstone bucket is not sorted by payment id or repeats one"
            raise ValueError(msg)
        return cls(keys)


class _Tombstones:
    """Payments already emitted, with their label source, in buckets by hour of predicted_at."""

    def __init__(self) -> None:
        self._buckets: dict[int, _Bucket] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, payment_id: int) -> bool:
        return self.source_of(payment_id) is not None

    def add(self, payment_id: int, predicted_at: datetime, source: LabelSource) -> None:
        hour = _hour_of(predicted_at)
        bucket = self._buckets.get(hour)
        if bucket is None:
            bucket = self._buckets[hour] = _Bucket()
        bucket.add(payment_id * 2 + (source == "horizon"))
        self._size += 1

    def source_of(self, payment_id: int) -> LabelSource | None:
        key = payment_id * 2
        for bucket in self._buckets.values():
            if bucket.lo <= key + 1 and key <= bucket.hi:
                source = bucket.source_of(payment_id)
                if source is not None:
                    return source
        return None

    def expire(self, now: datetime, memory: timedelta) -> int:
        """Drop the buckets whose hour ended at least ``memory`` before ``now``; how many keys."""
        # Bucket h ends at _EPOCH + (h + 1) hours; dropped once that + memory <= now.
        last = (now - memory - _EPOCH) // _HOUR - 1
        dropped = 0
        for hour in [h for h in self._buckets if h <= last]:
            dropped += len(self._buckets.pop(hour))
        self._size -= dropped
        return dropped

    def buckets(self) -> Iterator[tuple[int, _Bucket]]:
        """The buckets by hour, oldest first."""
        for hour in sorted(self._buckets):
            yield hour, self._buckets[hour]

    def load(self, hour: int, bucket: _Bucket) -> None:
        """Add a whole bucket read from a snapshot."""
        if isinstance(hour, bool) or not isinstance(hour, int) or hour in self._buckets:
            msg = f"tombstone bucket hour {hour!r} is not an integer or is repeated"
            raise ValueError(msg)
        if bucket:
            self._buckets[hour] = bucket
            self._size += len(bucket)


class LabelJoin:
    """Joins delayed outcomes to prediction records; emits each payment at most once."""

    def __init__(self, config: JoinConfig | None = None) -> None:
        self.config = config or JoinConfig()
        self._pending: dict[int, PredictionRecord] = {}
        self._waiting: dict[int, _Outcome] = {}
        self._done = _Tombstones()
        self._watermark: datetime | None = None
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- events ----------------------------------------------------------------------------

    def on_prediction(self, payment_id: int, record: PredictionRecord) -> list[LabelledExample]:
        """Log a prediction; returns its example if its outcome was already waiting."""
        require_aware(record.predicted_at, "predicted_at")
        _check_id(payment_id)
        self._counts["predictions"] += 1
        if payment_id in self._pending:
            self._counts["duplicate_predictions"] += 1
            return []
        # Before the tombstones, which may outlive the memory bound by up to an hour: a replay
        # as old as the bound is stale, as it would be had its tombstone expired exactly.
        if self._too_old(record.predicted_at):
            self._counts["stale_predictions"] += 1
            return []
        if payment_id in self._done:
            self._counts["duplicate_predictions"] += 1
            return []
        outcome = self._waiting.pop(payment_id, None)
        record = PredictionRecord(
            dict(record.features), record.score, record.model_version, record.predicted_at
        )
        if outcome is None:
            self._pending[payment_id] = record
            return []
        return [self._emit(payment_id, record, outcome.is_fraud, outcome.at, "outcome")]

    def on_outcome(self, payment_id: int, is_fraud: bool, at: datetime) -> list[LabelledExample]:
        """Record a label; returns the example if the payment's prediction was waiting."""
        require_aware(at, "outcome time")
        _check_id(payment_id)
        is_fraud = bool(is_fraud)
        self._counts["outcomes"] += 1
        done = self._done.source_of(payment_id)
        if done is not None:
            if done == "horizon":
                self._counts["late_outcomes"] += 1
                self._counts["late_fraud_outcomes"] += int(is_fraud)
            else:
                self._counts["duplicate_outcomes"] += 1
            return []
        waiting = self._waiting.get(payment_id)
        if waiting is not None:
            self._counts["duplicate_outcomes"] += 1
            self._counts["conflicting_outcomes"] += int(waiting.is_fraud != is_fraud)
            return []
        record = self._pending.pop(payment_id, None)
        if record is not None:
            return [self._emit(payment_id, record, is_fraud, at, "outcome")]
        if self._too_old(at):
            self._counts["stale_outcomes"] += 1
            return []
        self._waiting[payment_id] = _Outcome(is_fraud, at)
        return []

    def on_horizon(self, now: datetime) -> list[LabelledExample]:
        """Advance the clock: emit horizon negatives and forget what is past the memory bound."""
        require_aware(now, "horizon tick")
        if self._watermark is None or now > self._watermark:
            self._watermark = now
        now = self._watermark
        cfg = self.config
        out: list[LabelledExample] = []
        for payment_id, record in list(self._pending.items()):
            due = record.predicted_at + cfg.horizon
            if due > now:
                continue
            if cfg.negatives_at_horizon:
                del self._pending[payment_id]
                out.append(self._emit(payment_id, record, False, due, "horizon"))
            elif due + cfg.grace <= now:
                del self._pending[payment_id]
                self._counts["expired_predictions"] += 1
        self._counts["dropped_tombstones"] += self._done.expire(now, cfg.memory)
        for payment_id, outcome in list(self._waiting.items()):
            if outcome.at + cfg.memory <= now:
                del self._waiting[payment_id]
                self._counts["expired_outcomes"] += 1
        return out

    # -- introspection ---------------------------------------------------------------------

    def backlog(self) -> dict[str, int]:
        """Sizes of the join's state, for ``learn status``."""
        return {
            "pending_predictions": len(self._pending),
            "waiting_outcomes": len(self._waiting),
            "tombstones": len(self._done),
        }

    def counts(self) -> dict[str, int]:
        """Event counters (see ``COUNTERS``)."""
        return dict(self._counts)

    @property
    def watermark(self) -> datetime | None:
        return self._watermark

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The join's state as plain JSON-able values (datetimes as ISO-8601 strings).

        Tombstones are ``"done_buckets": [[hour, base64], ...]``, oldest hour first: ``hour``
        counts whole hours since the Unix epoch, the base64 text is the bucket's packed keys
        (``payment_id * 2 + (1 if source == "horizon" else 0)``) as sorted little-endian int64.
        Taking a snapshot merges each bucket's recent keys into its array, which changes nothing
        the join does.
        """
        return {
            "format": _SNAPSHOT_FORMAT,
            "watermark": None if self._watermark is None else self._watermark.isoformat(),
            "pending": [
                [pid, dict(r.features), r.score, r.model_version, r.predicted_at.isoformat()]
                for pid, r in self._pending.items()
            ],
            "waiting": [[pid, o.is_fraud, o.at.isoformat()] for pid, o in self._waiting.items()],
            "done_buckets": [[hour, bucket.to_text()] for hour, bucket in self._done.buckets()],
            "counts": dict(self._counts),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any], config: JoinConfig | None = None) -> LabelJoin:
        """A join continuing from ``snapshot()`` output, under ``config`` (which may differ).

        Reads format 2 and format 1 (written before tombstones were packed, whose ``"done"`` is
        a list of ``[payment_id, predicted_at, source]``).
        """
        fmt = state.get("format")
        if isinstance(fmt, bool) or fmt not in _SNAPSHOT_FORMATS:
            msg = f"join snapshot format {fmt!r} is not one of {_SNAPSHOT_FORMATS}"
            raise SnapshotError(msg)
        join = cls(config)
        try:
            wm = state["watermark"]
            join._watermark = None if wm is None else _aware(wm)
            for pid, features, score, version, at in state["pending"]:
                join._pending[_snapshot_id(pid)] = PredictionRecord(
                    {str(k): float(v) for k, v in features.items()},
                    float(score),
                    str(version),
                    _aware(at),
                )
            for pid, is_fraud, at in state["waiting"]:
                join._waiting[_snapshot_id(pid)] = _Outcome(bool(is_fraud), _aware(at))
            if fmt == 1:
                seen: set[int] = set()
                for pid, at, source in state["done"]:
                    if source not in ("outcome", "horizon"):
                        msg = f"unknown label source {source!r}"
                        raise ValueError(msg)
                    pid = _snapshot_id(pid)
                    if pid in seen:
                        msg = f"payment {pid} has two tombstones"
                        raise ValueError(msg)
                    seen.add(pid)
                    join._done.add(pid, _aware(at), source)
            else:
                if "done" in state:
                    msg = "a format 2 snapshot keeps tombstones in done_buckets, not done"
                    raise ValueError(msg)
                for hour, text in state["done_buckets"]:
                    join._done.load(hour, _Bucket.from_text(text))
            join._counts.update({k: int(v) for k, v in state["counts"].items() if k in COUNTERS})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"join snapshot is malformed: {exc!r}"
            raise SnapshotError(msg) from exc
        return join

    # -- internals -------------------------------------------------------------------------

    def _too_old(self, at: datetime) -> bool:
        return self._watermark is not None and at + self.config.memory <= self._watermark

    def _emit(
        self,
        payment_id: int,
        record: PredictionRecord,
        label: bool,
        labelled_at: datetime,
        source: LabelSource,
    ) -> LabelledExample:
        self._done.add(payment_id, record.predicted_at, source)
        self._counts["joined" if source == "outcome" else "horizon_negatives"] += 1
        return LabelledExample(
            payment_id=payment_id,
            features=dict(record.features),
            label=label,
            score=record.score,
            model_version=record.model_version,
            predicted_at=record.predicted_at,
            labelled_at=labelled_at,
            source=source,
        )


def _aware(text: str) -> datetime:
    return require_aware(datetime.fromisoformat(text), "snapshot timestamp")


def _snapshot_id(payment_id: Any) -> int:
    try:
        _check_id(payment_id)
    except MessageError as exc:
        raise ValueError(str(exc)) from exc
    return int(payment_id)
