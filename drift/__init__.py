"""Drift: scheduled drift and data-quality checks, reports, and the retrains they trigger.

Check side: ``run_check`` compares the current window of labelled examples with the champion's
reference (feature, score and label-rate drift, performance, concept alarms, freshness, data
quality), stores a ``drift_reports`` row with its HTML page and returns a ``DriftReport``;
``load_report`` / ``list_reports`` read them back.

Retrain side: ``RetrainPolicy`` decides from a report's summary (pure), ``retrain`` trains a
challenger on recent labelled examples and promotes it only if it wins on a held-out recent
slice, ``run_scheduler`` runs the check and the policy every ``drift_interval_s`` (APScheduler
with its job store in Postgres).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freshloop.core.lazy import lazy_names

if TYPE_CHECKING:
    from drift.check import DriftReport, run_check
    from drift.exceptions import (
        DriftCheckError,
        DriftError,
        NotEnoughExamplesError,
        QualityCheckError,
        ReportNotFoundError,
        RetrainBusyError,
        RetrainError,
        SchedulerBusyError,
    )
    from drift.ledger import RetrainLedger
    from drift.policy import Decision, RetrainPolicy
    from drift.retrain import RetrainResult, retrain
    from drift.scheduler import run_scheduler
    from drift.stats import FeatureDrift, Thresholds, feature_drift
    from drift.store import list_reports, load_report

# the public names, each imported from its module when first used: a command of another stage
# (``freshloop features run``) does not pay for this stage's heavy imports
_HOME = {
    "Decision": "drift.policy",
    "DriftCheckError": "drift.exceptions",
    "DriftError": "drift.exceptions",
    "DriftReport": "drift.check",
    "FeatureDrift": "drift.stats",
    "NotEnoughExamplesError": "drift.exceptions",
    "QualityCheckError": "drift.exceptions",
    "ReportNotFoundError": "drift.exceptions",
    "RetrainBusyError": "drift.exceptions",
    "RetrainError": "drift.exceptions",
    "RetrainLedger": "drift.ledger",
    "RetrainPolicy": "drift.policy",
    "RetrainResult": "drift.retrain",
    "SchedulerBusyError": "drift.exceptions",
    "Thresholds": "drift.stats",
    "feature_drift": "drift.stats",
    "list_reports": "drift.store",
    "load_report": "drift.store",
    "retrain": "drift.retrain",
    "run_check": "drift.check",
    "run_scheduler": "drift.scheduler",
}


__getattr__ = lazy_names(__name__, _HOME)

__all__ = [
    "Decision",
    "DriftCheckError",
    "DriftError",
    "DriftReport",
    "FeatureDrift",
    "NotEnoughExamplesError",
    "QualityCheckError",
    "ReportNotFoundError",
    "RetrainBusyError",
    "RetrainError",
    "RetrainLedger",
    "RetrainPolicy",
    "RetrainResult",
    "SchedulerBusyError",
    "Thresholds",
    "feature_drift",
    "list_reports",
    "load_report",
    "retrain",
    "run_check",
    "run_scheduler",
]
