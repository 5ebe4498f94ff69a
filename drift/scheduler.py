"""The drift scheduler: APScheduler 3 running the drift cycle of one namespace every interval.

- Job store: in memory. The jobs are defined here in code and their schedules come from the
  settings, so nothing is stored and nothing is unpickled (APScheduler's ``SQLAlchemyJobStore``
  pickles jobs into rows nothing signs and unpickles them at start). The per-namespace table
  older versions kept (``job_table``) is dropped unread when the namespace's scheduler starts.
  A stored schedule bought nothing: every start replaced the jobs with a new first run time.
- One scheduler per namespace: a Postgres advisory lock, and with it the namespace's scheduler
  epoch (``freshloop.core.fencing``); a second copy stops with ``SchedulerBusyError``. Every write
  of the scheduler's engine (drift reports, retrains, promotions, prune) is refused inside its
  transaction once the epoch is no longer current, and the lock session is re-checked every
  second: lost with nobody waiting, it is taken back; taken over, ``run_scheduler`` raises
  ``FencedError`` (``freshloop serve`` exits non-zero) having written nothing after it.
- The job: explicit id ``drift-check:<namespace>``, ``replace_existing`` (a restart replaces,
  never duplicates, it), ``coalesce`` (runs missed while the process was busy or down collapse
  into one), ``max_instances=1`` (a cycle still running when the next is due is not doubled:
  a long retrain delays checks instead of stacking them), the module-level function
  ``drift.jobs.drift_check_job`` with the namespace as its only argument.
- The retention job: id ``retention-prune:<namespace>``, ``drift.jobs.prune_job`` every
  ``retention_interval_s`` (first run one interval after start, or ``first_prune_in_s``); it
  prunes what ``drift.prune`` says, decided in event time, so the wall-clock schedule only
  says when, never what. ``freshloop db prune`` runs the same prune at once.
- Health: a job that raises (Postgres or Redis unreachable mid-cycle) degrades component
  ``drift`` in ``freshloop.core.health.HEALTH`` on that dependency; the next run is the retry
  (``coalesce``), and a run that succeeds ends the degradation. APScheduler itself retries a job
  store it cannot read every 10 s.
- Stop: ``stop_event``; a retrain in progress is interrupted at its next progress step and
  recorded as failed ("the drift scheduler is stopping"), then the scheduler waits for the job.
"""

from __future__ import annotations

import hashlib
import logging
import re
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, create_engine, text

from drift.exceptions import SchedulerBusyError
from drift.jobs import (
    CheckFunction,
    CycleResult,
    JobContext,
    drift_check_job,
    prune_job,
    register,
    unregister,
)
from freshloop.core.db import POSTGRES_DOWN
from freshloop.core.exceptions import FencedError
from freshloop.core.fencing import Ownership
from freshloop.core.health import HEALTH, backoff_delay
from freshloop.core.redis_errors import REDIS_DOWN
from freshloop.core.settings import Settings

__all__ = [
    "build_scheduler",
    "job_id",
    "job_table",
    "prune_job_id",
    "run_scheduler",
    "run_until_signal",
]

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[a-z0-9_]{1,40}$")


def job_id(namespace: str) -> str:
    """The explicit id of a namespace's drift job."""
    return f"drift-check:{namespace}"


def prune_job_id(namespace: str) -> str:
    """The explicit id of a namespace's retention job."""
    return f"retention-prune:{namespace}"


def job_table(namespace: str) -> str:
    """The job store table older versions kept for a namespace (pickled jobs, dropped unread
    at start): ``freshloop_jobs_<ns>`` (a digest if ``ns`` is not a plain lowercase identifier
    of at most 40 characters)."""
    if _IDENT.match(namespace):
        return f"freshloop_jobs_{namespace}"
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:12]
    plain = re.sub(r"[^a-z0-9_]", "_", namespace.lower())[:30]
    return f"freshloop_jobs_{plain}_{digest}"


def _take_lock(settings: Settings, wait_s: float) -> Ownership:
    """The namespace's scheduler lock and its next epoch, held until ``release``; a killed
    predecessor's session may linger briefly, so it waits up to ``wait_s`` for it."""
    ns = settings.namespace
    ownership = Ownership(settings, ns, "scheduler", f"freshloop drift scheduler {ns}")
    if not ownership.take(wait_s):
        msg = (
            f"another drift scheduler runs for namespace {ns!r}: run one "
            "'freshloop drift run' per namespace (or stop the other one first)"
        )
        raise SchedulerBusyError(msg)
    return ownership


def _drop_legacy_job_table(engine: Engine, namespace: str) -> None:
    """Drop, unread, the pickled job store an older version kept for this namespace (only its
    scheduler, whose lock this process holds, ever used it)."""
    table = job_table(namespace)
    with engine.begin() as conn:
        if conn.execute(text("SELECT to_regclass(:t)"), {"t": f'"{table}"'}).scalar() is None:
            return
        conn.execute(text(f'DROP TABLE "{table}"'))
    log.warning(
        "legacy_job_table_dropped namespace=%s table=%s: its pickled jobs were not loaded (the "
        "jobs are defined in code now)",
        namespace,
        table,
    )


def build_scheduler(
    settings: Settings,
    engine: Engine,
    *,
    first_run_in_s: float | None = None,
    first_prune_in_s: float | None = None,
) -> BackgroundScheduler:
    """A scheduler with the namespace's drift job and its retention job added (not started),
    held in memory: ``engine`` is not used for jobs (kept for the callers' signature)."""
    ns = settings.namespace
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": max(1, round(settings.drift_misfire_grace_s)),
        },
        timezone=UTC,
    )
    delay = settings.drift_interval_s if first_run_in_s is None else first_run_in_s
    scheduler.add_job(
        drift_check_job,
        IntervalTrigger(seconds=settings.drift_interval_s, timezone=UTC),
        args=[ns],
        id=job_id(ns),
        name=f"drift check and retrain policy of namespace {ns}",
        replace_existing=True,
        next_run_time=datetime.now(UTC) + timedelta(seconds=delay),
    )
    every = settings.retention_interval_s
    scheduler.add_job(
        prune_job,
        IntervalTrigger(seconds=every, timezone=UTC),
        args=[ns],
        id=prune_job_id(ns),
        name=f"retention prune of namespace {ns}",
        replace_existing=True,
        next_run_time=datetime.now(UTC)
        + timedelta(seconds=every if first_prune_in_s is None else first_prune_in_s),
    )
    return scheduler


_DEPENDENCIES = ("postgres", "redis", "job")


def _dependency_of(exc: BaseException) -> str:
    """Which dependency a job's error belongs to ("job": our own code failed)."""
    if isinstance(exc, POSTGRES_DOWN):
        return "postgres"
    if isinstance(exc, REDIS_DOWN):
        return "redis"
    return "job"


def _report(event: JobExecutionEvent) -> None:
    """APScheduler listener: a job's outcome as the drift scheduler's health."""
    if event.exception is not None:
        HEALTH.degraded("drift", _dependency_of(event.exception), event.exception)
        return
    for dependency in _DEPENDENCIES:
        HEALTH.healthy("drift", dependency)


def run_scheduler(
    settings: Settings,
    stop_event: threading.Event,
    *,
    check: CheckFunction | None = None,
    on_cycle: Callable[[CycleResult], None] | None = None,
    first_run_in_s: float | None = None,
    first_prune_in_s: float | None = None,
    lock_wait_s: float = 5.0,
) -> None:
    """Run the namespace's drift cycle every ``drift_interval_s`` until ``stop_event`` is set.

    ``check`` replaces ``drift.check.run_check`` (same signature); ``on_cycle`` sees each
    cycle's result; the first cycle runs after ``first_run_in_s`` (default: one interval).
    Raises ``FencedError`` once another scheduler took the namespace over.
    """
    ns = settings.namespace
    ownership = _take_lock(settings, lock_wait_s)
    engine = ownership.fence(create_engine(settings.sqlalchemy_url(), pool_pre_ping=True))
    halt = threading.Event()  # ours: the caller's event may be shared with other parts
    context = JobContext(settings, engine, check=check, stop=halt, on_cycle=on_cycle)
    register(context)
    scheduler = None
    try:
        _drop_legacy_job_table(engine, ns)
        scheduler = build_scheduler(
            settings, engine, first_run_in_s=first_run_in_s, first_prune_in_s=first_prune_in_s
        )
        scheduler.add_listener(_report, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        HEALTH.register("drift")
        scheduler.start()
        log.info(
            "drift scheduler started namespace=%s interval_s=%s job=%s epoch=%d",
            ns,
            settings.drift_interval_s,
            job_id(ns),
            ownership.epoch,
        )
        _watch(ownership, stop_event)
    except FencedError as exc:
        log.error("scheduler_fenced namespace=%s: %s", ns, exc)
        raise
    finally:
        halt.set()  # a retrain in progress stops at its next progress step
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=True)
        unregister(ns)
        engine.dispose()
        ownership.release()
        log.info("drift scheduler stopped namespace=%s", ns)


def _watch(ownership: Ownership, stop_event: threading.Event) -> None:
    """Until ``stop_event``: re-check the lock session and the epoch every second (a lost
    session is taken back while nobody took over; ``FencedError`` once somebody did)."""
    failures = 0
    delay = 1.0
    while not stop_event.wait(delay):
        try:
            ownership.check()
        except POSTGRES_DOWN as exc:
            HEALTH.degraded("drift", "postgres", exc)
            delay = backoff_delay(failures, 0.5, 15.0)
            failures += 1
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            log.warning(
                "postgres_unreachable component=drift error=%s: lock re-checked in %.1f s",
                first,
                delay,
            )
        else:
            if failures:
                failures, delay = 0, 1.0
                HEALTH.healthy("drift", "postgres")


def run_until_signal(
    settings: Settings,
    *,
    first_run_in_s: float | None = None,
    on_cycle: Callable[[CycleResult], None] | None = None,
) -> None:
    """``freshloop drift run``: the scheduler in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_scheduler(settings, stop, on_cycle=on_cycle, first_run_in_s=first_run_in_s)
