"""When does a drift check call for a batch retrain? A pure decision over a report's summary.

A retrain is WANTED when any enabled trigger fires: the share of drifted features reached
``drift_share``, the learner raised a new concept-drift alarm, or ROC AUC fell at least
``auc_drop`` below its baseline. It is BLOCKED (no storms) while another retrain runs, during the
cool-down after the previous one started (whatever became of it), or when the window holds too
few labelled examples to train and judge a challenger. Manual retrains skip the policy (the
one-at-a-time guard still holds).

>>> from datetime import UTC, datetime
>>> policy = RetrainPolicy(drift_share=0.5, cooldown_s=600)
>>> now = datetime(2026, 1, 1, tzinfo=UTC)
>>> d = policy.decide({"dataset_drift_share": 0.6, "n_current": 900},
...                   last_retrain_at=None, running=False, now=now)
>>> d.action, d.reasons
('retrain', ['dataset drift share 0.60 >= 0.50'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from freshloop.core.settings import Settings

__all__ = ["Action", "Decision", "RetrainPolicy"]

Action = Literal["retrain", "none"]


def _number(summary: Mapping[str, Any], key: str) -> float | None:
    """A finite number from the summary, or None when absent, null or not finite."""
    value = summary.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int:
    """``concept_alarms`` may be a count or a list of alarm positions."""
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


@dataclass(frozen=True)
class Decision:
    """What the policy decided: ``action``, the triggers that fired and what blocked them."""

    action: Action
    reasons: list[str] = field(default_factory=list)  # triggers that fired
    blocked: str | None = None  # why a wanted retrain does not happen now
    policy: dict[str, Any] = field(default_factory=dict)  # the thresholds applied

    @property
    def drift(self) -> bool:
        """Whether any trigger fired (whether or not a retrain follows)."""
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, as stored in ``drift_reports.decision``."""
        return {**asdict(self), "drift": self.drift}

    @property
    def reason(self) -> str:
        """One line for ``retrains.reason``."""
        return "; ".join(self.reasons) or "no trigger"


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the automatic retrain; ``from_settings`` reads the ``retrain_*`` fields."""

    drift_share: float = 0.5
    concept_alarm: bool = True
    auc_drop: float = 0.05
    cooldown_s: float = 600.0
    min_examples: int = 200

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrainPolicy:
        return cls(
            drift_share=settings.retrain_drift_share,
            concept_alarm=settings.retrain_on_concept_alarm,
            auc_drop=settings.retrain_auc_drop,
            cooldown_s=settings.retrain_cooldown_s,
            min_examples=settings.retrain_min_examples,
        )

    def triggers(self, summary: Mapping[str, Any]) -> list[str]:
        """The reasons to retrain that ``summary`` shows, in a fixed order."""
        reasons = []
        share = _number(summary, "dataset_drift_share")
        if share is not None and share >= self.drift_share:
            reasons.append(f"dataset drift share {share:.2f} >= {self.drift_share:.2f}")
        alarms = _count(summary.get("concept_alarms"))
        if self.concept_alarm and alarms > 0:
            reasons.append(f"{alarms} new concept-drift alarm{'s' if alarms != 1 else ''}")
        drop = _number(summary, "auc_drop")
        if drop is not None and drop >= self.auc_drop:
            auc, base = _number(summary, "auc"), _number(summary, "baseline_auc")
            detail = f" ({base:.3f} -> {auc:.3f})" if auc is not None and base is not None else ""
            reasons.append(f"ROC AUC dropped {drop:.3f} >= {self.auc_drop:.3f}{detail}")
        return reasons

    def decide(
        self,
        summary: Mapping[str, Any],
        *,
        last_retrain_at: datetime | None,
        running: bool,
        now: datetime,
    ) -> Decision:
        """Retrain or not, given a report's summary and the retrain history of the namespace.

        ``last_retrain_at`` is when the newest retrain started (any outcome), ``running`` whether
        one runs now. Datetimes must be timezone-aware.
        """
        thresholds = asdict(self)
        reasons = self.triggers(summary)
        if not reasons:
            return Decision("none", [], None, thresholds)
        blocked = None
        n = _number(summary, "n_current")
        if running:
            blocked = "a retrain is already running"
        elif last_retrain_at is not None and (now - last_retrain_at).total_seconds() < (
            self.cooldown_s
        ):
            left = self.cooldown_s - (now - last_retrain_at).total_seconds()
            blocked = f"cool-down: the previous retrain started {left:.0f}s too recently"
        elif n is not None and n < self.min_examples:
            blocked = f"only {n:.0f} rows in the current window, need {self.min_examples}"
        return Decision("none" if blocked else "retrain", reasons, blocked, thresholds)
