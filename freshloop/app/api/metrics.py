"""``/metrics``: the API's own request metrics, the live pipeline stats from Redis, and the
process-wide registry (which holds the feature pipeline's metrics when it runs in-process)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from freshloop.core.wal import SlotState

__all__ = ["ApiMetrics"]

log = logging.getLogger(__name__)


class _PipelineCollector(Collector):
    """Reads every consumer's stats hash at scrape time; a Redis outage yields nothing."""

    def __init__(self, client: redis.Redis, ns: str) -> None:
        self.client = client
        self.ns = ns

    def collect(self) -> Iterator[Metric]:
        from feature_pipelines import pipeline_stats

        try:
            rows = pipeline_stats(self.client, self.ns)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:  # a cluster too
            log.warning("pipeline stats not scraped error=%s", exc)
            rows = []
        rate = GaugeMetricFamily(
            "freshloop_pipeline_events_per_second",
            "Changes applied per second by each feature pipeline consumer (live stats).",
            labels=["consumer"],
        )
        lag = GaugeMetricFamily(
            "freshloop_pipeline_commit_to_applied_ms",
            "Commit -> applied lag percentiles of each consumer's last window (live stats).",
            labels=["consumer", "quantile"],
        )
        applied = GaugeMetricFamily(
            "freshloop_pipeline_applied",
            "Changes applied by each consumer since it started (live stats).",
            labels=["consumer"],
        )
        for row in rows:
            consumer = str(row["consumer_id"])
            rate.add_metric([consumer], float(row.get("events_per_s") or 0.0))
            applied.add_metric([consumer], float(row.get("applied_total") or 0))
            for q in ("50", "95", "99"):
                value = row.get(f"lag_p{q}_ms")
                if value is not None:
                    lag.add_metric([consumer, f"0.{q}"], float(value))
        yield rate
        yield lag
        yield applied


class _SlotCollector(Collector):
    """The connector slot's retained WAL, read from Postgres at scrape time (``core.wal``);
    nothing when Postgres cannot say."""

    def __init__(self, read: Callable[[], SlotState | None]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        state = self.read()
        if state is None:
            return
        labels = ["slot"]
        retained = GaugeMetricFamily(
            "freshloop_replication_slot_retained_wal_bytes",
            "WAL the connector's replication slot holds back (current LSN - restart_lsn).",
            labels=labels,
        )
        safe = GaugeMetricFamily(
            "freshloop_replication_slot_safe_wal_bytes",
            "WAL that may still be written before the slot is lost (max_slot_wal_keep_size).",
            labels=labels,
        )
        alarm = GaugeMetricFamily(
            "freshloop_replication_slot_alarm",
            "1 while the slot falls behind (above wal_warning_bytes, unreserved or lost).",
            labels=labels,
        )
        status = GaugeMetricFamily(
            "freshloop_replication_slot_wal_status",
            "1 for the slot's wal_status (reserved, extended, unreserved, lost; absent).",
            labels=["slot", "wal_status"],
        )
        slot = [state.slot_name]
        retained.add_metric(slot, float(state.retained_bytes))
        if state.safe_wal_size is not None:
            safe.add_metric(slot, float(state.safe_wal_size))
        alarm.add_metric(slot, 1.0 if state.alarm else 0.0)
        status.add_metric([state.slot_name, state.wal_status or "absent"], 1.0)
        yield retained
        yield safe
        yield alarm
        yield status


class ApiMetrics:
    """One registry per app (so several apps can live in one process, as in tests)."""

    def __init__(
        self, client: redis.Redis, ns: str, read_slot: Callable[[], SlotState | None] | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "freshloop_api_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "freshloop_api_request_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.registry.register(_PipelineCollector(client, ns))
        if read_slot is not None:
            self.registry.register(_SlotCollector(read_slot))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.seconds.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)

    @staticmethod
    def content_type() -> str:
        from prometheus_client import CONTENT_TYPE_LATEST

        return str(CONTENT_TYPE_LATEST)
