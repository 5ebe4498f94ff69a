"""Live pipeline stats: the window arithmetic (pure) and the hash dashboards read (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_pipelines import pipeline_stats
from feature_pipelines.live_stats import StatsPublisher, StatsWindow, stats_key
from freshloop.core.settings import Settings
from tests.redis_layout import client_for


def test_window_rate_and_lag_percentiles_cover_only_the_last_window() -> None:
    window = StatsWindow(seconds=1.0)
    window.add(10.0, 500, [5000.0] * 500)  # older than the window at t=11.5: dropped
    window.add(10.8, 100, [float(i) for i in range(1, 101)])
    window.add(11.2, 50, [])  # applied, but nothing committed recently enough to matter
    snap = window.snapshot(11.5)
    assert snap["events_per_s"] == 150.0
    assert (snap["lag_p50_ms"], snap["lag_p95_ms"], snap["lag_p99_ms"]) == (51.0, 96.0, 100.0)
    quiet = window.snapshot(20.0)
    assert quiet == {
        "events_per_s": 0.0,
        "lag_p50_ms": None,
        "lag_p95_ms": None,
        "lag_p99_ms": None,
    }


@pytest.fixture
def client(stack_settings: Settings) -> Iterator[tuple[Any, str]]:
    """A writer client of the suite's layout (one Redis or a cluster) and a namespace."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    conn = client_for(stack_settings)
    yield conn, ns
    for space in (ns, f"{ns}x"):  # one key at a time: on a cluster they are in several slots
        for key in (*(f"{space}:stats:pipeline:{c}" for c in "abc"), f"{space}:stats:pipelines"):
            conn.delete(key)
    conn.close()


def _s(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


@pytest.mark.integration
def test_published_hash_is_read_back_typed_and_expires(client: tuple[Any, str]) -> None:
    conn, ns = client
    a = StatsPublisher(conn, ns, "a", interval_s=1.0, ttl_s=60)
    b = StatsPublisher(conn, ns, "b", interval_s=1.0, ttl_s=60)
    other = StatsPublisher(conn, f"{ns}x", "c")  # another namespace: not listed
    a.record(3, [10.0, 20.0, 30.0])
    a.publish(applied_total=3, dead_lettered_total=1, assigned_partitions=4)
    b.publish(applied_total=0, dead_lettered_total=0, assigned_partitions=0)
    other.publish(applied_total=9, dead_lettered_total=0, assigned_partitions=1)
    try:
        raw = {_s(k): _s(v) for k, v in conn.hgetall(stats_key(ns, "a")).items()}
        assert set(raw) == {
            "updated_at",
            "applied_total",
            "events_per_s",
            "lag_p50_ms",
            "lag_p95_ms",
            "lag_p99_ms",
            "dead_lettered_total",
            "assigned_partitions",
        }
        assert 0 < conn.ttl(stats_key(ns, "a")) <= 60
        assert 0 < conn.ttl(f"{ns}:stats:pipelines") <= 60
        rows = pipeline_stats(conn, ns)
        assert [r["consumer_id"] for r in rows] == ["a", "b"]
        first, second = rows
        assert (first["applied_total"], first["dead_lettered_total"]) == (3, 1)
        assert first["assigned_partitions"] == 4
        assert first["events_per_s"] == 3.0
        assert (first["lag_p50_ms"], first["lag_p99_ms"]) == (20.0, 30.0)
        assert second["lag_p50_ms"] is None and second["events_per_s"] == 0.0
        assert isinstance(first["updated_at"], float) and first["updated_at"] > 1.7e9
        a.remove()
        assert [r["consumer_id"] for r in pipeline_stats(conn, ns)] == ["b"]
    finally:
        other.remove()


def test_a_redis_error_does_not_fail_the_loop() -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    publisher = StatsPublisher(dead, "t", "x", interval_s=5.0)
    assert publisher.due()
    publisher.publish(applied_total=1, dead_lettered_total=0, assigned_partitions=1)
    assert not publisher.due()  # logged and scheduled again, nothing raised
