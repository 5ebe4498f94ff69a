"""Which long-running part is degraded, on which dependency, since when: one registry per process.

Every part of ``freshloop serve`` (pipeline, scorer, learner, drift scheduler, API) reports here
when a call to a dependency fails and when it succeeds again; ``/healthz`` answers 503 naming
each degraded part and its dependency, and ``/metrics`` counts degradations. The registry is
pure bookkeeping (no I/O, a clock passed in); ``retry`` is the thin shell that calls a
dependency again after a capped exponential backoff, reporting each failure and the recovery.

A part stays degraded on a dependency until a call to THAT dependency succeeds again, so a
scorer whose Kafka is down is not declared healthy by a Postgres poll that worked.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from freshloop.core.exceptions import DependencyRetryStopped

__all__ = ["HEALTH", "Degradation", "HealthRegistry", "backoff_delay", "retry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Degradation:
    """One part failing on one dependency: since when (unix s), how many failed calls, the
    last error."""

    component: str
    dependency: str
    since: float
    errors: int
    detail: str


class HealthRegistry:
    """component -> failing dependencies, plus lifetime counts for metrics; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._components: set[str] = set()
        self._open: dict[tuple[str, str], Degradation] = {}
        self.degradations: dict[tuple[str, str], int] = {}  # times each pair became degraded
        self.errors: dict[tuple[str, str], int] = {}  # failed calls of each pair

    def register(self, component: str) -> None:
        """A part that runs (healthy until it says otherwise)."""
        with self._lock:
            self._components.add(component)

    def degraded(self, component: str, dependency: str, error: BaseException | str) -> bool:
        """A call of ``component`` to ``dependency`` failed; True when this starts a degradation."""
        detail = _one_line(error)
        key = (component, dependency)
        with self._lock:
            self._components.add(component)
            self.errors[key] = self.errors.get(key, 0) + 1
            current = self._open.get(key)
            if current is not None:
                self._open[key] = replace(current, errors=current.errors + 1, detail=detail)
                return False
            self._open[key] = Degradation(component, dependency, self._clock(), 1, detail)
            self.degradations[key] = self.degradations.get(key, 0) + 1
            return True

    def healthy(self, component: str, dependency: str) -> Degradation | None:
        """A call of ``component`` to ``dependency`` worked; returns the degradation it ends."""
        with self._lock:
            self._components.add(component)
            return self._open.pop((component, dependency), None)

    def problems(self) -> list[Degradation]:
        """Every open degradation, oldest first."""
        with self._lock:
            return sorted(self._open.values(), key=lambda d: (d.since, d.component, d.dependency))

    def components(self) -> dict[str, list[Degradation]]:
        """Every part that reported, with its open degradations (empty: healthy)."""
        with self._lock:
            out: dict[str, list[Degradation]] = {c: [] for c in sorted(self._components)}
            for degradation in self._open.values():
                out[degradation.component].append(degradation)
            return out

    def clear(self) -> None:
        """Forget everything (a new ``Service`` in the same process, tests)."""
        with self._lock:
            self._components.clear()
            self._open.clear()
            self.degradations.clear()
            self.errors.clear()


def backoff_delay(attempt: int, base_s: float, cap_s: float, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): ``base * 2**attempt`` capped at
    ``cap``, shortened by up to ``jitter`` (0..1) of itself so that many clients spread out.

    >>> [backoff_delay(a, 0.5, 4.0) for a in range(6)]
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    >>> backoff_delay(10, 0.5, 4.0, jitter=0.5)
    2.0
    """
    delay = min(cap_s, base_s * 2 ** min(attempt, 32))
    return delay * (1.0 - jitter)


def retry(
    call: Callable[[], T],
    *,
    component: str,
    dependency: str,
    errors: tuple[type[BaseException], ...],
    stop: threading.Event,
    health: HealthRegistry | None = None,
    base_s: float = 0.5,
    cap_s: float = 15.0,
) -> T:
    """``call()`` until it returns, waiting a capped exponential backoff after each failure that
    is one of ``errors`` (other errors propagate at once). Each failure degrades
    ``component`` on ``dependency``; the first success ends it. Raises
    ``DependencyRetryStopped`` when ``stop`` is set while waiting."""
    registry = HEALTH if health is None else health
    attempt = 0
    while True:
        try:
            result = call()
        except errors as exc:
            registry.degraded(component, dependency, exc)
            delay = backoff_delay(attempt, base_s, cap_s, jitter=random.random() * 0.2)  # noqa: S311
            log.warning(
                "dependency_unavailable component=%s dependency=%s attempt=%d retry_in_s=%.2f "
                "error=%s",
                component,
                dependency,
                attempt + 1,
                delay,
                _one_line(exc),
            )
            attempt += 1
            if stop.wait(delay):
                msg = f"{component} stopped while waiting for {dependency}: {_one_line(exc)}"
                raise DependencyRetryStopped(msg) from exc
            continue
        ended = registry.healthy(component, dependency)
        if ended is not None:
            log.warning(
                "dependency_recovered component=%s dependency=%s after_s=%.1f errors=%d",
                component,
                dependency,
                time.time() - ended.since,
                ended.errors,
            )
        return result


def _one_line(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class _HealthCollector(Collector):
    """The registry as Prometheus metrics, read at scrape time."""

    def __init__(self, registry: HealthRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        labels = ["component", "dependency"]
        started = CounterMetricFamily(
            "freshloop_degradations",
            "Times a part became degraded on a dependency (calls failing after working).",
            labels=labels,
        )
        failed = CounterMetricFamily(
            "freshloop_dependency_errors",
            "Failed calls of a part to a dependency (each retry counts).",
            labels=labels,
        )
        now = GaugeMetricFamily(
            "freshloop_degraded",
            "1 while a part is degraded on a dependency.",
            labels=labels,
        )
        for (component, dependency), n in sorted(self.registry.degradations.copy().items()):
            started.add_metric([component, dependency], float(n))
        for (component, dependency), n in sorted(self.registry.errors.copy().items()):
            failed.add_metric([component, dependency], float(n))
        for degradation in self.registry.problems():
            now.add_metric([degradation.component, degradation.dependency], 1.0)
        yield started
        yield failed
        yield now


HEALTH = HealthRegistry()
"""The process's registry: every part of ``freshloop serve`` reports here."""

REGISTRY.register(_HealthCollector(HEALTH))
