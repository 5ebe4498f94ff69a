"""One scheduled cycle: drift check with the retrain policy deciding, then the retrain it asks for.

``drift_check_job(namespace)`` is what the scheduler's job refers to ("drift.jobs:
drift_check_job", args ``(namespace,)``): a module-level function with one plain, non-secret
argument. Settings, the (fenced) database engine and everything else come from the context the
scheduler process registered for that namespace (``register``), so the job always runs with the
process's current settings; the jobs live in memory, nothing is pickled into Postgres.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from drift.exceptions import RetrainBusyError, RetrainError, RetrainStoppedError
from drift.ledger import RetrainLedger
from drift.policy import RetrainPolicy
from drift.retention import PruneReport
from drift.retrain import RetrainResult, retrain
from freshloop.core.settings import Settings

__all__ = [
    "CheckFunction",
    "CycleResult",
    "JobContext",
    "drift_check_job",
    "prune_job",
    "register",
    "run_cycle",
    "run_prune",
    "unregister",
]

log = logging.getLogger(__name__)

# ``drift.check.run_check``'s shape: (settings, *, decide) -> a report with ``report_id`` and
# ``decision`` (the dict ``decide`` returned).
CheckFunction = Callable[..., Any]


@dataclass
class JobContext:
    """What a job of one namespace runs with, registered by the scheduler process."""

    settings: Settings
    engine: Engine
    check: CheckFunction | None = None  # None: drift.check.run_check
    stop: threading.Event = field(default_factory=threading.Event)
    on_cycle: Callable[[CycleResult], None] | None = None


@dataclass(frozen=True)
class CycleResult:
    """What one cycle did: the report, the decision and the retrain (if any) or why none."""

    report_id: int | None
    decision: dict[str, Any]
    retrain: RetrainResult | None = None
    error: str | None = None


_CONTEXTS: dict[str, JobContext] = {}
_LOCK = threading.Lock()


def register(context: JobContext) -> None:
    """Make ``drift_check_job(<namespace>)`` runnable in this process."""
    with _LOCK:
        _CONTEXTS[context.settings.namespace] = context


def unregister(namespace: str) -> None:
    with _LOCK:
        _CONTEXTS.pop(namespace, None)


def drift_check_job(namespace: str) -> None:
    """The scheduled job: one cycle for ``namespace`` (see ``run_cycle``)."""
    with _LOCK:
        context = _CONTEXTS.get(namespace)
    if context is None:
        log.error("drift job for namespace=%s has no context in this process; skipped", namespace)
        return
    result = run_cycle(context)
    if context.on_cycle is not None:
        context.on_cycle(result)


def prune_job(namespace: str) -> None:
    """The scheduled retention job of ``namespace`` (see ``run_prune``)."""
    with _LOCK:
        context = _CONTEXTS.get(namespace)
    if context is None:
        log.error("prune job for namespace=%s has no context in this process; skipped", namespace)
        return
    try:
        run_prune(context)
    except DBAPIError as exc:  # e.g. a lock not granted in time: the next run tries again
        first = str(exc.orig or exc).strip().splitlines()[0]
        log.warning("scheduled prune failed namespace=%s error=%s", namespace, first)


def run_prune(context: JobContext, *, dry_run: bool = False) -> PruneReport:
    """Retention for the scheduler's namespace: its reports, retrains, models and checkpoints,
    and the day partitions of training examples (database-wide, decided in event time)."""
    from drift.prune import prune

    report = prune(
        context.engine, context.settings, dry_run=dry_run, namespaces=[context.settings.namespace]
    )
    for line in report.lines():
        log.info("prune namespace=%s %s", context.settings.namespace, line)
    return report


def _field(report: Any, name: str) -> Any:
    if isinstance(report, Mapping):
        return report.get(name)
    return getattr(report, name, None)


def run_cycle(context: JobContext, *, now: datetime | None = None) -> CycleResult:
    """Check drift (the policy decides inside the check, so the report records the decision),
    then run the retrain it asks for. A busy or failed retrain is logged and recorded, and the
    schedule goes on."""
    settings = context.settings
    policy = RetrainPolicy.from_settings(settings)
    ledger = RetrainLedger(context.engine, settings.namespace, settings.retrain_stale_after_s)

    def decide(summary: Mapping[str, Any]) -> dict[str, Any]:
        state = ledger.state()
        return policy.decide(
            summary,
            last_retrain_at=state.last_started_at,
            running=state.running,
            now=now or datetime.now(UTC),
        ).to_dict()

    if context.check is None:
        from drift.check import run_check

        # the scheduler's engine: its report is written under the scheduler's fence
        report = run_check(settings, decide=decide, engine=context.engine)
    else:
        report = context.check(settings, decide=decide)
    report_id = _field(report, "report_id")
    decision = dict(_field(report, "decision") or {})
    log.info(
        "drift check namespace=%s report_id=%s action=%s reasons=%s blocked=%s",
        settings.namespace,
        report_id,
        decision.get("action"),
        decision.get("reasons"),
        decision.get("blocked"),
    )
    if decision.get("action") != "retrain":
        return CycleResult(report_id, decision)

    def progress(p: Mapping[str, Any]) -> None:
        log.info(
            "retrain progress namespace=%s retrain_id=%s phase=%s pct=%s",
            settings.namespace,
            p.get("retrain_id"),
            p.get("phase"),
            p.get("pct"),
        )
        if context.stop.is_set():
            msg = "the drift scheduler is stopping"
            raise RetrainStoppedError(msg)

    reason = "; ".join(decision.get("reasons") or []) or "policy"
    try:
        result = retrain(
            settings,
            trigger="policy",
            reason=reason,
            report_id=report_id,
            on_progress=progress,
            engine=context.engine,
        )
    except RetrainBusyError as exc:
        log.warning("retrain skipped namespace=%s: %s", settings.namespace, exc)
        return CycleResult(report_id, decision, error=str(exc))
    except RetrainError as exc:  # recorded as failed in its retrains row
        log.error("retrain failed namespace=%s: %s", settings.namespace, exc)
        return CycleResult(report_id, decision, error=str(exc))
    return CycleResult(report_id, decision, result)
