"""Errors of the drift stage: checks, reports, retrains and their scheduler."""

from freshloop.core.exceptions import FreshloopError

__all__ = [
    "DriftCheckError",
    "DriftError",
    "QualityCheckError",
    "ReportNotFoundError",
    "NotEnoughExamplesError",
    "RetrainBusyError",
    "RetrainError",
    "RetrainStoppedError",
    "SchedulerBusyError",
]


class DriftError(FreshloopError):
    """Root of the drift stage's errors."""


class DriftCheckError(DriftError):
    """A drift check could not be carried out (its inputs could not be read or made sense of)."""


class QualityCheckError(DriftCheckError):
    """The data-quality suite could not be built or run."""


class ReportNotFoundError(DriftError):
    """No stored drift report matches the request (none yet, or a wrong id)."""


class RetrainError(DriftError):
    """A retrain could not be carried out; its ``retrains`` row says why (status failed)."""


class RetrainBusyError(RetrainError):
    """Another retrain of this namespace is running; wait for it (one at a time)."""


class NotEnoughExamplesError(RetrainError):
    """The retrain window holds too few labelled examples to train and judge a challenger."""


class RetrainStoppedError(RetrainError):
    """A retrain was interrupted because its process is stopping; it is recorded as failed."""


class SchedulerBusyError(DriftError):
    """Another drift scheduler already runs for this namespace; run one per namespace."""
