"""Shared helpers: percentiles, machine description, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# BENCH_RESULTS_DIR: where result files go (the smoke test points it at a temporary folder)
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def spread(runs: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (None runs are left out), with the runs."""
    values = [float(v) for v in runs if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def ratio(ours: float | None, peer: float | None) -> float | None:
    """Freshloop / peer, or None when either is missing or the peer is zero."""
    if ours is None or not peer:
        return None
    return ours / peer


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    results = Path(os.environ.get("BENCH_RESULTS_DIR") or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def drop_keys(redis_url: str, pattern: str) -> int:
    """Delete every key matching ``pattern`` (SCAN, deletes in batches of 1,000); how many."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return _drop_matching(client, pattern)
    finally:
        client.close()


def _drop_matching(client: Any, pattern: str) -> int:
    dropped, batch = 0, []
    for key in client.scan_iter(match=pattern, count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            dropped += client.delete(*batch)
            batch.clear()
    if batch:
        dropped += client.delete(*batch)
    return int(dropped)


def redis_servers(settings: Any) -> list[Any]:
    """A writer client per server of ``settings``' Redis layout: the one Redis, or each primary
    of a Redis Cluster (connections of the cluster client's nodes). A key read through one of
    them must live on that server: what a SCAN of it found does."""
    from feature_pipelines.cluster_read import layout_client

    client = layout_client(settings, "writer")
    if settings.redis_layout != "cluster":
        return [client]
    return [node.redis_connection for node in client.get_primaries()]


def drop_layout_keys(settings: Any, pattern: str) -> int:
    """``drop_keys`` in ``settings``' Redis layout (a cluster client scans every primary and
    sends a delete per slot)."""
    from feature_pipelines.cluster_read import layout_client

    client = layout_client(settings, "writer")
    try:
        return _drop_matching(client, pattern)
    finally:
        client.close()


def bulk_producer(bootstrap: str) -> Any:
    """A producer tuned to pre-fill a topic fast (large batches, deep local queue)."""
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
        }
    )
