"""Progressive metrics and a drift monitor over the labelled examples, in label arrival order.

Each example is scored with the probability logged at prediction time, before its label was
known, so the metrics are an honest progressive validation under delayed labels (what River's
``evaluate.progressive_val_score(..., delay=...)`` computes).

Drift: ``DriftMonitor`` feeds River's ADWIN with the per-example absolute error ``|y - p|``
(``error="absolute"``, the default: it sees confidence as well as mistakes) or the 0/1 loss at
threshold 0.5 (``error="zero_one"``). ADWIN flags a change in either direction; only a change
that RAISES the mean error is an alarm (0-based example index in ``alarms``). A change that
lowers it, typical while a fresh model warms up, is counted in ``improvements`` and not raised.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Literal

from river import drift, metrics, utils
from scipy import integrate

__all__ = ["BinnedROCAUC", "DriftMonitor", "ErrorKind", "ProgressiveMetrics"]

ErrorKind = Literal["absolute", "zero_one"]


class BinnedROCAUC:
    """River's ``metrics.ROCAUC`` (same thresholds, same confusion counts, same trapezoid, same
    value) with a constant-time ``update``/``revert``.

    River updates one confusion matrix per threshold for every example (ten by default, ~30 µs
    here, as much as learning the example). Here an example only adds its weight to the bin of
    how many thresholds its score exceeds; each threshold's confusion matrix is summed from the
    bins when the value is read, which happens per report, not per example.
    """

    def __init__(self, n_thresholds: int = 10) -> None:
        self.n_thresholds = n_thresholds
        self.thresholds = [i / (n_thresholds - 1) for i in range(n_thresholds)]
        self.thresholds[0] -= 1e-7
        self.thresholds[-1] += 1e-7
        # per label: weight of the examples whose score exceeds exactly k thresholds
        self.bins: dict[bool, list[float]] = {
            True: [0.0] * (n_thresholds + 1),
            False: [0.0] * (n_thresholds + 1),
        }

    def update(self, y_true: bool, y_pred: float, w: float = 1.0) -> None:
        # the thresholds ascend: a score exceeds thresholds 0..k-1, k = those below it
        self.bins[y_true == 1][bisect_left(self.thresholds, y_pred)] += w

    def revert(self, y_true: bool, y_pred: float, w: float = 1.0) -> None:
        self.bins[y_true == 1][bisect_left(self.thresholds, y_pred)] -= w

    def get(self) -> float:
        pos, neg = self.bins[True], self.bins[False]
        all_pos, all_neg = sum(pos), sum(neg)
        tprs, fprs = [0.0] * self.n_thresholds, [0.0] * self.n_thresholds
        for i in range(self.n_thresholds):
            tp, fp = sum(pos[i + 1 :]), sum(neg[i + 1 :])  # scores above threshold i
            fn, tn = all_pos - tp, all_neg - fp
            tprs[i] = tp / (tp + fn) if tp + fn else 0.0
            fprs[i] = fp / (fp + tn) if fp + tn else 0.0
        return float(-integrate.trapezoid(x=fprs, y=tprs))


class ProgressiveMetrics:
    """ROC AUC and log loss, cumulative and over the last ``window`` examples, plus counts."""

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self.roc_auc = BinnedROCAUC()
        self.log_loss = metrics.LogLoss()
        # Rolling proxies the metric's methods dynamically; typed as Any for mypy.
        self.rolling_roc_auc: Any = utils.Rolling(BinnedROCAUC, window_size=window)
        self.rolling_log_loss: Any = utils.Rolling(metrics.LogLoss, window_size=window)
        self.n = 0
        self.n_fraud = 0

    def update(self, label: bool, score: float) -> None:
        """Account for one example: its true label and the probability that was served."""
        label = bool(label)
        self.roc_auc.update(label, score)
        self.log_loss.update(label, score)
        self.rolling_roc_auc.update(label, score)
        self.rolling_log_loss.update(label, score)
        self.n += 1
        self.n_fraud += int(label)

    def report(self) -> dict[str, float]:
        """Current values, as plain floats keyed by name."""
        return {
            "n": float(self.n),
            "n_fraud": float(self.n_fraud),
            "roc_auc": float(self.roc_auc.get()),
            "log_loss": float(self.log_loss.get()),
            "rolling_roc_auc": float(self.rolling_roc_auc.get()),
            "rolling_log_loss": float(self.rolling_log_loss.get()),
        }


@dataclass
class DriftMonitor:
    """ADWIN over the per-example error; ``alarms`` holds the indices where the error rose."""

    delta: float = 0.002
    error: ErrorKind = "absolute"
    alarms: list[int] = field(default_factory=list)
    improvements: int = 0
    n: int = 0

    def __post_init__(self) -> None:
        self._adwin = drift.ADWIN(delta=self.delta)

    def error_of(self, label: bool, score: float) -> float:
        """The error fed to ADWIN for one example (see the module docstring)."""
        if self.error == "zero_one":
            return float((score >= 0.5) != bool(label))
        return abs(float(bool(label)) - score)

    def update(self, label: bool, score: float) -> bool:
        """Feed one example; True when ADWIN detects a change at it."""
        return self.update_error(self.error_of(label, score))

    def update_error(self, error: float) -> bool:
        """Feed one error value directly; True when the mean error is found to have risen."""
        before = self._adwin.estimation
        self._adwin.update(error)
        index = self.n
        self.n += 1
        if not self._adwin.drift_detected:
            return False
        # On a change ADWIN drops the older sub-window: the estimate is now the recent mean.
        if self._adwin.estimation > before:
            self.alarms.append(index)
            return True
        self.improvements += 1
        return False

    @property
    def estimation(self) -> float:
        """ADWIN's current mean error over its window."""
        return float(self._adwin.estimation)

    def reset(self) -> None:
        """Forget the error history (after a model swap); alarms and the index continue."""
        self._adwin = drift.ADWIN(delta=self.delta)
