"""Prometheus metrics of the feature pipeline (one registry per process)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "APPLY_LAG",
    "BATCH_SECONDS",
    "EVENTS",
    "LAST_APPLIED_COMMIT",
    "BatchHistogram",
]


class BatchHistogram(Collector):
    """A histogram fed a batch of observations at a time.

    ``prometheus_client.Histogram.observe`` costs a few microseconds per value (a lock and a
    walk over the buckets); the pipeline observes one lag per change event, thousands per batch.
    Here a batch takes one lock, and each value one C-level bisect; scrapes see the same
    exposition as a ``Histogram`` with these buckets (cumulative counts, ``_sum``, ``_count``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds != list(dict.fromkeys(bounds)):
            msg = f"{name}: buckets must be distinct numbers, got {list(buckets)!r}"
            raise ValueError(msg)
        self.name = name
        self.documentation = documentation
        self._bounds = bounds  # upper bounds; +Inf is the extra last slot
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self._bounds, [0] * (len(self._bounds) + 1)
        total = 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # le: a value equal to a bound counts in it
            total += value
        with self._lock:
            mine = self._counts
            for i, n in enumerate(counts):
                if n:
                    mine[i] += n
            self._sum += total

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """(cumulative count per upper bound, the last "+Inf"; sum of the values)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        out, running = [], 0
        for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
            running += n
            out.append((floatToGoString(bound), running))  # the label text Histogram writes
        return out, total

    def collect(self) -> Iterator[Metric]:
        buckets, total = self.snapshot()
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, sum_value=total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


# Commit -> visible in Redis; buckets from 1 ms to 10 s.
APPLY_LAG = BatchHistogram(
    "freshloop_feature_commit_to_visible_seconds",
    "Time from the database commit of a change to its features being readable in Redis.",
    buckets=(
        0.001,
        0.0025,
        0.005,
        0.0075,
        0.01,
        0.015,
        0.02,
        0.03,
        0.05,
        0.075,
        0.1,
        0.2,
        0.5,
        1.0,
        2.0,
        5.0,
        10.0,
    ),
)
EVENTS = Counter(
    "freshloop_feature_events_total",
    "Change events seen by the feature pipeline, by outcome.",
    ["outcome"],  # applied | duplicate | dead_lettered | tombstone | skipped
)
BATCH_SECONDS = Histogram(
    "freshloop_feature_batch_seconds",
    "Wall time to decode, plan and write one batch.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
LAST_APPLIED_COMMIT = Gauge(
    "freshloop_feature_last_applied_commit_timestamp_seconds",
    "Commit time of the newest change applied to Redis.",
)
