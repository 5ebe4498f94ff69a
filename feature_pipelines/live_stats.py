"""Live pipeline stats in Redis: what each consumer did over the last second, for dashboards.

Every ~1 s each pipeline process writes one hash, ``<ns>:stats:pipeline:<consumer_id>``, with
an expiry of ~60 s so a consumer that died vanishes on its own (a clean stop deletes it):

- ``updated_at``: unix seconds of this write;
- ``applied_total``, ``dead_lettered_total``: counters since the process started;
- ``events_per_s``: changes applied per second over the last window (duplicates excluded);
- ``lag_p50_ms``, ``lag_p95_ms``, ``lag_p99_ms``: commit -> applied lag of the changes applied
  in the last window (Debezium's ``source.ts_ms`` to the batch write; empty when none was);
- ``assigned_partitions``: how many change-topic partitions the consumer owns now.

``pipeline_stats(client, namespace)`` reads every live consumer's hash. It finds them through a
sorted set ``<ns>:stats:pipelines`` (consumer id -> last write, unix seconds, expiring with
them) instead of a SCAN, which would walk the whole keyspace. The window arithmetic
(``StatsWindow``) is pure; ``StatsPublisher`` is the thin Redis shell.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import deque
from typing import Any

import redis

from feature_pipelines.cluster_keys import meta_pipeline

__all__ = ["StatsPublisher", "StatsWindow", "consumer_id", "pipeline_stats", "stats_key"]

log = logging.getLogger(__name__)

_INTS = ("applied_total", "dead_lettered_total", "assigned_partitions")
_FLOATS = ("updated_at", "events_per_s", "lag_p50_ms", "lag_p95_ms", "lag_p99_ms")


def stats_key(namespace: str, consumer: str) -> str:
    return f"{namespace}:stats:pipeline:{consumer}"


def _registry_key(namespace: str) -> str:
    return f"{namespace}:stats:pipelines"


def consumer_id() -> str:
    """Unique per process: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class StatsWindow:
    """Applied counts and lags of the batches of the last ``seconds`` (pure: times passed in)."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self._batches: deque[tuple[float, int, list[float]]] = deque()

    def add(self, now: float, applied: int, lags_ms: list[float]) -> None:
        self._batches.append((now, applied, lags_ms))

    def snapshot(self, now: float) -> dict[str, float | None]:
        """Rate and lag percentiles over (now - seconds, now]."""
        while self._batches and self._batches[0][0] <= now - self.seconds:
            self._batches.popleft()
        applied = sum(n for _t, n, _l in self._batches)
        lags = sorted(lag for _t, _n, batch in self._batches for lag in batch)
        return {
            "events_per_s": applied / self.seconds,
            "lag_p50_ms": _percentile(lags, 0.50) if lags else None,
            "lag_p95_ms": _percentile(lags, 0.95) if lags else None,
            "lag_p99_ms": _percentile(lags, 0.99) if lags else None,
        }


class StatsPublisher:
    """Writes one consumer's stats hash at most every ``interval_s``; never fails the loop."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        consumer: str | None = None,
        *,
        interval_s: float = 1.0,
        ttl_s: int = 60,
    ) -> None:
        self.client = client
        self.consumer = consumer or consumer_id()
        self.key = stats_key(namespace, self.consumer)
        self.registry = _registry_key(namespace)
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.window = StatsWindow(interval_s)
        self._next = 0.0

    def record(self, applied: int, lags_ms: list[float], now: float | None = None) -> None:
        self.window.add(time.monotonic() if now is None else now, applied, lags_ms)

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next

    def publish(
        self, *, applied_total: int, dead_lettered_total: int, assigned_partitions: int
    ) -> None:
        now = time.monotonic()
        self._next = now + self.interval_s
        wall = time.time()
        fields: dict[Any, Any] = {
            "updated_at": f"{wall:.3f}",
            "applied_total": str(applied_total),
            "dead_lettered_total": str(dead_lettered_total),
            "assigned_partitions": str(assigned_partitions),
        }
        for name, value in self.window.snapshot(now).items():
            fields[name] = "" if value is None else f"{value:.3f}"
        try:
            pipe = meta_pipeline(self.client)
            pipe.hset(self.key, mapping=fields)
            pipe.expire(self.key, self.ttl_s)
            pipe.zadd(self.registry, {self.consumer: wall})
            pipe.zremrangebyscore(self.registry, "-inf", wall - self.ttl_s)
            pipe.expire(self.registry, self.ttl_s)
            pipe.execute()
        except redis.RedisError as exc:  # stats are best effort: the batch writes matter
            log.warning("stats not published key=%s error=%s", self.key, exc)

    def remove(self) -> None:
        try:
            pipe = meta_pipeline(self.client)
            pipe.delete(self.key)
            pipe.zrem(self.registry, self.consumer)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("stats not removed key=%s error=%s", self.key, exc)


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def pipeline_stats(client: redis.Redis, namespace: str) -> list[dict[str, Any]]:
    """The live stats of every pipeline consumer of ``namespace``, sorted by consumer id.

    Each dict has ``consumer_id`` and the fields above, typed: ints for the totals and
    ``assigned_partitions``, floats for the rest, None for a lag with no change in the window.
    """
    members: list[str | bytes] = client.zrange(_registry_key(namespace), 0, -1)  # type: ignore[assignment]
    consumers = sorted(_s(c) for c in members)
    if not consumers:
        return []
    pipe = client.pipeline(transaction=False)
    for consumer in consumers:
        pipe.hgetall(stats_key(namespace, consumer))
    out = []
    for consumer, raw in zip(consumers, pipe.execute(), strict=True):
        if not raw:
            continue  # its hash expired: the consumer is gone
        fields = {_s(k): _s(v) for k, v in raw.items()}
        row: dict[str, Any] = {"consumer_id": consumer}
        for name in _INTS:
            row[name] = int(fields[name]) if fields.get(name) else 0
        for name in _FLOATS:
            row[name] = float(fields[name]) if fields.get(name) else None
        out.append(row)
    return out
