"""The learner's label join with its state outside the process: O(1) memory in horizon x rate.

``LabelJoin`` keeps every scored payment in memory until its outcome or the horizon. This join
keeps none of them. What each payment needs lives where it already is:

- the logged prediction (vector, score, version, times) is in Redis ``<ns>:pred:{id}`` and in
  the predictions topic; the shell looks it up when an outcome arrives;
- "already labelled" is the payment's row in ``training_examples``, written in the checkpoint's
  transaction; the shell looks it up (``stored``) and this join adds what it emitted since the
  last checkpoint (``recent``, cleared by ``flushed()`` once that checkpoint committed);
- the horizon is ordered by a second reader of the predictions topic (the "horizon cursor")
  behind the head: the shell hands it a prediction (``on_due``) once ``is_due`` says the
  event-time watermark passed ``created_at + horizon``.

What stays here is bounded: outcomes that arrived before their prediction (``parked``, kept until
the prediction shows up or the watermark passes ``reported_at + grace``), the labels emitted
since the last checkpoint, the event clock and the counters (``COUNTERS`` of ``LabelJoin``).

The horizon runs on the payment's event time (``created_at``, which a replay reproduces), never
on ``predicted_at`` (the scorer's wall clock) nor on the learner's clock. A horizon negative is
labelled at ``created_at + horizon``. Each payment is emitted at most once: an outcome for a
payment already emitted as a horizon negative is a late outcome, a second one a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from online_learning.event_clock import EventClock
from online_learning.exceptions import SnapshotError
from online_learning.join import COUNTERS, JoinConfig, require_aware
from online_learning.records import LabelledExample, LabelSource, Prediction

__all__ = ["StreamJoin"]

_SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, slots=True)
class _Outcome:
    is_fraud: bool
    at: datetime


class StreamJoin:
    """Decides each payment's label from lookups the shell makes; keeps no per-payment backlog."""

    def __init__(self, config: JoinConfig | None = None) -> None:
        self.config = config or JoinConfig()
        self.clock = EventClock()
        self.parked: dict[int, _Outcome] = {}
        self._recent: dict[int, LabelSource] = {}
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- events ----------------------------------------------------------------------------

    def on_outcome(
        self,
        payment_id: int,
        is_fraud: bool,
        at: datetime,
        prediction: Prediction | None,
        stored: LabelSource | None,
    ) -> list[LabelledExample]:
        """An outcome; ``prediction`` is the logged one if found, ``stored`` its stored label."""
        require_aware(at, "outcome time")
        is_fraud = bool(is_fraud)
        self._counts["outcomes"] += 1
        done = self._recent.get(payment_id, stored)
        if done is not None:
            if done == "horizon":
                self._counts["late_outcomes"] += 1
                self._counts["late_fraud_outcomes"] += int(is_fraud)
            else:
                self._counts["duplicate_outcomes"] += 1
            return []
        parked = self.parked.get(payment_id)
        if parked is not None:
            self._counts["duplicate_outcomes"] += 1
            self._counts["conflicting_outcomes"] += int(parked.is_fraud != is_fraud)
            return []
        if prediction is not None:
            return [self._label(prediction, is_fraud, at)]
        wm = self.clock.watermark
        if wm is not None and at + self.config.memory <= wm:
            self._counts["stale_outcomes"] += 1
            return []
        self.parked[payment_id] = _Outcome(is_fraud, at)
        return []

    def on_prediction(
        self, prediction: Prediction, stored: LabelSource | None
    ) -> list[LabelledExample]:
        """A prediction at the head of the topic: joins an outcome parked for it."""
        require_aware(prediction.created_at, "created_at")
        self._counts["predictions"] += 1
        if prediction.payment_id not in self.parked:
            return []
        outcome = self.parked.pop(prediction.payment_id)
        if self._recent.get(prediction.payment_id, stored) is not None:
            self._counts["duplicate_predictions"] += 1
            return []
        return [self._label(prediction, outcome.is_fraud, outcome.at)]

    def is_due(self, prediction: Prediction) -> bool:
        """Whether the watermark passed the payment's horizon (``created_at + horizon``; plus
        ``grace`` without horizon negatives, when an unlabelled payment is only forgotten)."""
        wm = self.clock.watermark
        cfg = self.config
        wait = cfg.horizon if cfg.negatives_at_horizon else cfg.memory
        return wm is not None and prediction.created_at + wait <= wm

    def on_due(self, prediction: Prediction, stored: LabelSource | None) -> list[LabelledExample]:
        """The horizon cursor releases a due prediction: a negative unless labelled already."""
        pid = prediction.payment_id
        if self._recent.get(pid, stored) is not None:
            self.parked.pop(pid, None)
            return []
        outcome = self.parked.pop(pid, None)
        if outcome is not None:  # its outcome came before the prediction reached the head
            return [self._label(prediction, outcome.is_fraud, outcome.at)]
        if self.config.negatives_at_horizon:
            due = prediction.created_at + self.config.horizon
            return [self._emit(prediction, False, due, "horizon")]
        self._counts["expired_predictions"] += 1
        return []

    def expire(self) -> int:
        """Drop parked outcomes whose prediction did not come by ``reported_at + grace``."""
        wm = self.clock.watermark
        if wm is None or not self.parked:
            return 0
        old = [pid for pid, o in self.parked.items() if o.at + self.config.grace <= wm]
        for pid in old:
            del self.parked[pid]
        self._counts["expired_outcomes"] += len(old)
        return len(old)

    def flushed(self) -> None:
        """The labels emitted so far are stored (the checkpoint committed): forget them here."""
        self._recent = {}

    # -- introspection ---------------------------------------------------------------------

    def backlog(self) -> dict[str, int]:
        return {"parked_outcomes": len(self.parked), "unstored_labels": len(self._recent)}

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def watermark(self) -> datetime | None:
        return self.clock.watermark

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Clock, parked outcomes and counters; the labels since the last checkpoint are stored
        by the same transaction that stores this snapshot, so they are not part of it."""
        return {
            "format": _SNAPSHOT_FORMAT,
            "clock": self.clock.snapshot(),
            "parked": [[pid, o.is_fraud, o.at.isoformat()] for pid, o in self.parked.items()],
            "counts": dict(self._counts),
        }

    @classmethod
    def restore(cls, state: Mapping[str, Any], config: JoinConfig | None = None) -> StreamJoin:
        if state.get("format") != _SNAPSHOT_FORMAT:
            msg = f"stream join snapshot format {state.get('format')!r} is not {_SNAPSHOT_FORMAT}"
            raise SnapshotError(msg)
        join = cls(config)
        try:
            join.clock = EventClock.restore(state["clock"])
            for pid, is_fraud, at in state["parked"]:
                moment = require_aware(datetime.fromisoformat(at), "parked outcome time")
                join.parked[int(pid)] = _Outcome(bool(is_fraud), moment)
            join._counts.update({k: int(v) for k, v in state["counts"].items() if k in COUNTERS})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"stream join snapshot is malformed: {exc!r}"
            raise SnapshotError(msg) from exc
        return join

    # -- internals -------------------------------------------------------------------------

    def _label(self, prediction: Prediction, is_fraud: bool, at: datetime) -> LabelledExample:
        """The example an outcome makes. Event time decides, not arrival order: an outcome
        reported after the horizon makes the horizon negative (and counts as late) whether it
        is read before or after the horizon cursor reaches the payment."""
        due = prediction.created_at + self.config.horizon
        if self.config.negatives_at_horizon and at > due:
            self._counts["late_outcomes"] += 1
            self._counts["late_fraud_outcomes"] += int(is_fraud)
            return self._emit(prediction, False, due, "horizon")
        return self._emit(prediction, is_fraud, at, "outcome")

    def _emit(
        self, prediction: Prediction, label: bool, labelled_at: datetime, source: LabelSource
    ) -> LabelledExample:
        self._recent[prediction.payment_id] = source
        self._counts["joined" if source == "outcome" else "horizon_negatives"] += 1
        return LabelledExample(
            payment_id=prediction.payment_id,
            features=dict(prediction.features),
            label=label,
            score=prediction.score,
            model_version=prediction.model_version,
            predicted_at=prediction.predicted_at,
            labelled_at=labelled_at,
            source=source,
        )
