"""The whole loop in one process: ``freshloop serve`` (and what ``make demo`` runs).

Four parts, each a thread around a stage's own shell, started in flow order and stopped in the
reverse order:

1. the feature pipeline with the scoring hook (``learn serve``),
2. the learner of the namespace (``learn run``),
3. the drift scheduler (``drift run``),
4. the HTTP API and dashboard (``api serve``).

In production each part runs as its own process (see docker-compose.yml) and scales on its own;
one process is the convenient shape for a laptop and for the demo. ``Service.snapshot`` gathers
what the live view shows.

A part whose dependency fails retries it and reports to ``core.health.HEALTH`` (``/healthz``
answers 503 naming it). A part whose thread ends on its own — an exception escaping its loop, or
returning while the service runs — stops the whole service: ``run_forever`` raises
``ServicePartDied`` naming the thread and the error, and ``freshloop serve`` exits non-zero, so
a supervisor restarts it instead of it serving stale features while ``/healthz`` says 200.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from feature_pipelines import FeaturePipeline
from freshloop.core.exceptions import ServicePartDied
from freshloop.core.health import HEALTH
from freshloop.core.settings import Settings
from online_learning import LearnerService, Scorer
from online_learning.services import scoring_feature_set

__all__ = ["LoopSnapshot", "Service"]

log = logging.getLogger(__name__)


@dataclass
class LoopSnapshot:
    """What the loop did so far, for the live view and the demo's summary."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    events_per_s: float = 0.0
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    scored: int = 0
    predictions_per_s: float = 0.0
    learned: int = 0
    model_version: str | None = None
    auc: float | None = None
    rolling_auc: float | None = None
    log_loss: float | None = None
    concept_alarms: int = 0
    swaps: int = 0
    drift_reports: int = 0
    drift_status: str | None = None
    drift_share: float | None = None
    retrains: dict[str, int] = field(default_factory=dict)
    last_retrain: str | None = None  # the newest finished retrain's verdict, in words
    errors: list[str] = field(default_factory=list)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    tail = sorted(values[-5000:])
    return tail[min(len(tail) - 1, int(q * len(tail)))]


class Service:
    """Pipeline + scorer, learner, drift scheduler and API of one namespace, in threads."""

    def __init__(self, settings: Settings, *, api: bool = True, drift: bool = True) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        HEALTH.clear()  # this service's parts report afresh
        features = scoring_feature_set(settings)
        self.scorer = Scorer(settings, features=features, stop=self.stop_event)
        self.pipeline = FeaturePipeline(
            settings, features, on_applied=self.scorer, stop=self.stop_event
        )
        self.learner = LearnerService(settings, stop=self.stop_event)
        self._engine = create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
        self._threads: list[threading.Thread] = []
        self._api: Any = None
        self._with_api = api
        self._with_drift = drift
        self._rates: deque[tuple[float, int, int]] = deque(maxlen=64)
        self.errors: list[str] = []
        self.failure: str | None = None  # the first part that died: "<thread>: <error>"

    # -- lifecycle ---------------------------------------------------------------------------
    def _thread(self, name: str, target: Callable[[], object]) -> None:
        def run() -> None:
            try:
                target()
            except Exception as exc:
                if self.stop_event.is_set():  # stopping anyway (e.g. stopped while retrying)
                    log.info("part stopped thread=%s error=%s: %s", name, type(exc).__name__, exc)
                    return
                self._died(name, f"{type(exc).__name__}: {exc}", exc)
            else:
                if not self.stop_event.is_set():
                    self._died(name, "its loop returned while the service runs", None)

        thread = threading.Thread(target=run, name=f"freshloop-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _died(self, name: str, error: str, exc: BaseException | None) -> None:
        """A part is gone: say which and why, and stop the others (``run_forever`` raises)."""
        log.error(
            "thread_died thread=%s error=%s: stopping the service (it exits non-zero)",
            name,
            error,
            exc_info=exc,
        )
        self.errors.append(f"{name}: {error}")
        if self.failure is None:
            self.failure = f"thread {name} died: {error}"
        self.stop_event.set()

    def start(self) -> None:
        self._thread("pipeline", self.pipeline.run)
        self._thread("learner", self.learner.run)
        if self._with_drift:
            from drift import run_scheduler

            self._thread("drift", lambda: run_scheduler(self.settings, self.stop_event))
        if self._with_api:
            from freshloop.app.api import ApiServer

            self._api = ApiServer(self.settings)
            self._api.start()

    @property
    def api_url(self) -> str | None:
        return None if self._api is None else str(self._api.url)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every part (API first, pipeline last) and wait for their threads."""
        if self._api is not None:
            self._api.stop()
        self.stop_event.set()
        self.pipeline.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def run_forever(self) -> None:
        """Run until ``stop_event`` is set; raises ``ServicePartDied`` if a part's thread died."""
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                if self._api is not None and not self._api.alive:
                    self._died("api", "the HTTP server stopped while the service runs", None)
        finally:
            self.stop()
        if self.failure is not None:
            raise ServicePartDied(self.failure)

    # -- what the live view shows ------------------------------------------------------------
    def snapshot(self) -> LoopSnapshot:
        stats = self.pipeline.stats
        snap = LoopSnapshot(
            applied=stats.applied,
            duplicates=stats.duplicates,
            dead_lettered=stats.dead_lettered,
            lag_p50_ms=_pct(stats.lags_ms, 0.5),
            lag_p99_ms=_pct(stats.lags_ms, 0.99),
            scored=self.scorer.stats.scored,
            errors=list(self.errors),
        )
        now = time.monotonic()
        self._rates.append((now, snap.applied, snap.scored))
        while len(self._rates) > 2 and now - self._rates[0][0] > 3.0:
            self._rates.popleft()
        t0, applied0, scored0 = self._rates[0]
        if now - t0 > 0.2:
            snap.events_per_s = (snap.applied - applied0) / (now - t0)
            snap.predictions_per_s = (snap.scored - scored0) / (now - t0)
        self._learner_part(snap)
        self._drift_part(snap)
        return snap

    def _learner_part(self, snap: LoopSnapshot) -> None:
        learner = self.learner.learner
        if learner is None:
            return
        try:
            status = learner.status()
        except RuntimeError:  # a dict changed size under us: next refresh
            return
        metrics = status.get("metrics", {})
        snap.learned = int(status.get("model_learned", 0))
        snap.model_version = status.get("model_version")
        snap.auc = metrics.get("roc_auc")
        snap.rolling_auc = metrics.get("rolling_roc_auc")
        snap.log_loss = metrics.get("log_loss")
        snap.concept_alarms = len(status.get("drift_alarms", []))
        snap.swaps = int(status.get("counts", {}).get("swaps", 0))
        snap.learned = int(status.get("counts", {}).get("learned", snap.learned))

    def _drift_part(self, snap: LoopSnapshot) -> None:
        ns = self.settings.namespace
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT count(*) OVER (), status, summary->>'dataset_drift_share'"
                        " FROM drift_reports WHERE namespace = :ns"
                        " ORDER BY report_id DESC LIMIT 1"
                    ),
                    {"ns": ns},
                ).first()
                if row is not None:
                    snap.drift_reports = int(row[0])
                    snap.drift_status = row[1]
                    snap.drift_share = None if row[2] is None else float(row[2])
                for status, n in conn.execute(
                    text(
                        "SELECT status, count(*) FROM retrains WHERE namespace = :ns"
                        " GROUP BY status"
                    ),
                    {"ns": ns},
                ):
                    snap.retrains[status] = int(n)
                last = conn.execute(
                    text(
                        "SELECT status, detail FROM retrains WHERE namespace = :ns"
                        " AND status <> 'running' ORDER BY retrain_id DESC LIMIT 1"
                    ),
                    {"ns": ns},
                ).first()
                if last is not None:
                    snap.last_retrain = f"{last[0]} ({last[1]})" if last[1] else str(last[0])
        except Exception as exc:  # the view keeps going without the drift part
            snap.errors.append(f"drift tables: {type(exc).__name__}")
