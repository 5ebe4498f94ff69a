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
