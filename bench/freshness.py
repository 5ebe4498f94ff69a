"""Freshness through the whole stack: commit -> feature readable in Redis, at steady rates.

The sample workload writes payments (with their status changes, corrections, deletes and
outcomes) at each rate for a while; a feature pipeline process (``freshloop features run``, its
own Redis namespace and consumer group) applies them; its commit -> visible lags of the changes
committed during the run are reported as p50/p95/p99, with the rate actually achieved.
Usage: python -m bench.freshness [--rates 200,500,1000] [--seconds 30] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from confluent_kafka import Consumer, TopicPartition

from bench.common import save
from freshloop.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation


def _start_at_end(settings: Settings, ns: str) -> None:
    """Point the run's consumer group at the end of the change topics: only new changes count."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": ns})
    offsets = {}
    for table in ("payments", "payment_outcomes"):
        topic = settings.topic(table)
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            offsets[f"{topic}:{partition}"] = high
    consumer.close()
    client = redis.Redis.from_url(settings.redis_url)
    client.hset(f"{ns}:offsets:{{{ns}-features}}", mapping=offsets)


def one_run(settings: Settings, rate: float, seconds: float) -> dict:
    ns = f"fresh{uuid.uuid4().hex[:8]}"
    stats_path = Path(tempfile.mkdtemp()) / "stats.json"
    _start_at_end(settings, ns)
    env = {**os.environ, "FRESHLOOP_REDIS_NAMESPACE": ns, "FRESHLOOP_METRICS_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshloop.cli", "features", "run", "--stats-json", str(stats_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # join the group first
        config = WorkloadConfig(
            rate=rate, customers=2000, merchants=200, label_delay_s=2.0, seed=int(rate)
        )
        report = run_simulation(settings, config, seconds, connections=4)
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(match=f"{ns}:*", count=5000):
            client.delete(key)
    stats = json.loads(stats_path.read_text())
    return {
        "target_payments_per_s": rate,
        "achieved_payments_per_s": report.payments_per_s,
        "changes_written": sum(report.writes.values()),
        "live_changes_applied": stats["live_events"],
        "lag_ms": stats["lag_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    settings = Settings()
    results = []
    for rate in [float(r) for r in args.rates.split(",")]:
        runs = [one_run(settings, rate, args.seconds) for _ in range(args.repeat)]
        p = {q: statistics.median(r["lag_ms"][q] for r in runs) for q in ("p50", "p95", "p99")}
        row = {"rate": rate, "lag_ms_median": p, "runs": runs}
        results.append(row)
        achieved = statistics.median(r["achieved_payments_per_s"] for r in runs)
        print(
            f"[bench] {rate:.0f}/s target ({achieved:.0f}/s achieved): commit -> feature "
            f"p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms",
            flush=True,
        )
    print(f"[bench] saved {save('freshness', {'seconds': args.seconds, 'results': results})}")


if __name__ == "__main__":
    main()
