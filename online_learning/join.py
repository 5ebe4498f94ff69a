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
- memory is bounded: a finished payment is remembered (a tombstone) until ``predicted_at +
  horizon + grace``, an outcome without prediction until ``at + horizon + grace``; then they are
  dropped and counted (``dropped_tombstones``, ``expired_outcomes``). The largest ``now`` seen is
  the watermark; a prediction older than ``watermark - horizon - grace`` (``stale_predictions``,
  even if its outcome is waiting) or an unmatched outcome as old (``stale_outcomes``) is refused,
  so a replayed record cannot be learned twice after its tombstone is gone. This relies on
  replays carrying the original ``predicted_at``, which they do when the logged record is
  replayed, not recomputed.

Ticks scan the state (O(backlog)); call ``on_horizon`` every few seconds, not per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from freshloop.exceptions import ConfigurationError
from online_learning.exceptions import NaiveDatetimeError, SnapshotError
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

_SNAPSHOT_FORMAT = 1


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


@dataclass(frozen=True, slots=True)
class _Tombstone:
    predicted_at: datetime
    source: LabelSource


class LabelJoin:
    """Joins delayed outcomes to prediction records; emits each payment at most once."""

    def __init__(self, config: JoinConfig | None = None) -> None:
        self.config = config or JoinConfig()
        self._pending: dict[int, PredictionRecord] = {}
        self._waiting: dict[int, _Outcome] = {}
        self._done: dict[int, _Tombstone] = {}
        self._watermark: datetime | None = None
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- events ----------------------------------------------------------------------------

    def on_prediction(self, payment_id: int, record: PredictionRecord) -> list[LabelledExample]:
        """Log a prediction; returns its example if its outcome was already waiting."""
        require_aware(record.predicted_at, "predicted_at")
        self._counts["predictions"] += 1
        if payment_id in self._pending or payment_id in self._done:
            self._counts["duplicate_predictions"] += 1
            return []
        if self._too_old(record.predicted_at):
            self._counts["stale_predictions"] += 1
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
        is_fraud = bool(is_fraud)
        self._counts["outcomes"] += 1
        done = self._done.get(payment_id)
        if done is not None:
            if done.source == "horizon":
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
        for payment_id, stone in list(self._done.items()):
            if stone.predicted_at + cfg.memory <= now:
                del self._done[payment_id]
                self._counts["dropped_tombstones"] += 1
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
        """The join's state as plain JSON-able values (datetimes as ISO-8601 strings)."""
        return {
            "format": _SNAPSHOT_FORMAT,
            "watermark": None if self._watermark is None else self._watermark.isoformat(),
            "pending": [
                [pid, dict(r.features), r.score, r.model_version, r.predicted_at.isoformat()]
                for pid, r in self._pending.items()
            ],
            "waiting": [[pid, o.is_fraud, o.at.isoformat()] for pid, o in self._waiting.items()],
            "done": [[pid, s.predicted_at.isoformat(), s.source] for pid, s in self._done.items()],
            "counts": dict(self._counts),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any], config: JoinConfig | None = None) -> LabelJoin:
        """A join continuing from ``snapshot()`` output, under ``config`` (which may differ)."""
        if state.get("format") != _SNAPSHOT_FORMAT:
            msg = f"join snapshot format {state.get('format')!r} is not {_SNAPSHOT_FORMAT}"
            raise SnapshotError(msg)
        join = cls(config)
        try:
            wm = state["watermark"]
            join._watermark = None if wm is None else _aware(wm)
            for pid, features, score, version, at in state["pending"]:
                join._pending[pid] = PredictionRecord(
                    {str(k): float(v) for k, v in features.items()},
                    float(score),
                    str(version),
                    _aware(at),
                )
            for pid, is_fraud, at in state["waiting"]:
                join._waiting[pid] = _Outcome(bool(is_fraud), _aware(at))
            for pid, at, source in state["done"]:
                if source not in ("outcome", "horizon"):
                    msg = f"unknown label source {source!r}"
                    raise ValueError(msg)
                join._done[pid] = _Tombstone(_aware(at), source)
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
        self._done[payment_id] = _Tombstone(record.predicted_at, source)
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
