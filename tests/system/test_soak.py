"""The soak: the whole system under a steady workload. Lag stays bounded and drains, each
process's memory stays flat, Redis memory per entity stays within the documented bound, and
the replication slot's retained WAL stays bounded, also while only uncaptured tables change
(heartbeats).

``make test`` runs 60 s; ``make soak`` runs 10 minutes (``SOAK_SECONDS``, ``SOAK_RATE``).
The report goes to stdout and to ``SOAK_REPORT`` (JSON) when set.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from redis.cluster import RedisCluster

from freshloop.core.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from freshloop.stack import Stack
from tests.redis_layout import client_for, key_layout
from tests.system.fixtures import WORKLOAD, System, settings_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
SOAK_RATE = float(os.environ.get("SOAK_RATE", "150"))
SOAK_CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "2"))  # writer connections
# Documented in README ("Redis memory"): windowed features keep at most 61 buckets each, so an
# entity's hash is bounded by its features, not its traffic. A customer paying every 10 s for a
# day at 5 merchants takes ~52 KB, plus ~5.3 KB per further distinct merchant of that day
# (distinct counts keep a field per value and bucket); the soak workload stays well inside these.
ENTITY_BYTES_BOUND = {"customer": 65_536, "merchant": 16_384}
RETAINED_WAL_BOUND = 256 * 1024 * 1024
SAMPLE_EVERY_S = 5.0


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _servers(client: Any) -> list[Any]:
    """The one Redis, or a connection to every primary of a Redis Cluster."""
    if isinstance(client, RedisCluster):
        return [node.redis_connection for node in client.get_primaries()]
    return [client]


def _service_pids(system: System) -> dict[str, int | None]:
    """The stack's server processes; on a cluster layout its Redis is the cluster's primaries."""
    stack = Stack(system.settings)
    pids = {svc.name: stack.pid_of(svc) for svc in stack.services if svc.group != "redis"}
    redis_settings = system.redis_cluster or system.settings
    if system.settings.redis_layout != "cluster" or system.redis_cluster is not None:
        redis_stack = Stack(redis_settings)
        pids.update({s.name: redis_stack.pid_of(s) for s in redis_stack.select(["redis"])})
    return pids


class Sampler:
    """Lag, RSS per process, Redis memory and retained WAL every few seconds, in a thread."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.settings = system.settings
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.kafka = Consumer(
            {"bootstrap.servers": self.settings.kafka_bootstrap, "group.id": "soak-probe"}
        )
        self.redis = client_for(self.settings, "writer")  # one Redis or a Redis Cluster
        keys = key_layout(self.settings, group=f"{self.settings.namespace}-features")
        # one hash of every partition's position (single), or one per partition (cluster)
        self.offsets_keys = sorted({keys.offsets(p) for p in range(self.settings.topic_partitions)})
        self.services = _service_pids(system)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def lag(self) -> int:
        stored = {
            k.decode(): int(v)
            for key in self.offsets_keys
            for k, v in self.redis.hgetall(key).items()
        }
        total = 0
        for table in ("payments", "payment_outcomes"):
            topic = self.settings.topic(table)
            meta = self.kafka.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                high = self.kafka.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                total += max(0, high - stored.get(f"{topic}:{p}", high))
        return total

    def wal(self) -> tuple[int, int]:
        with psycopg.connect(self.settings.postgres_conninfo()) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                "pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.settings.slot_name,),
            ).fetchone()
        assert row is not None, f"no replication slot {self.settings.slot_name}"
        return int(row[0]), int(row[1])

    def sample(self) -> dict[str, Any]:
        procs = {f"{p.name}:{p.pid}": p.pid for p in self.system.procs() if p.alive()}
        procs.update({k: v for k, v in self.services.items() if v is not None})
        retained, flushed = self.wal()
        return {
            "t": time.monotonic(),
            "lag": self.lag(),
            "rss_kb": {name: _rss_kb(pid) for name, pid in procs.items()},
            "redis_used_bytes": sum(
                int(server.info("memory")["used_memory"]) for server in _servers(self.redis)
            ),
            "retained_wal_bytes": retained,
            "confirmed_flush": flushed,
        }

    def _run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.sample())
            self.stop.wait(SAMPLE_EVERY_S)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.kafka.close()


def redis_memory_by_kind(settings: Settings) -> dict[str, dict[str, float]]:
    """MEMORY USAGE of every key of the namespace, by kind: entity hashes, row states, ...
    (on a cluster, of every primary; its keys carry a hash tag after the kind, which is skipped)"""
    client = client_for(settings, "writer")
    sizes: dict[str, list[int]] = defaultdict(list)
    ns = settings.namespace
    cluster = settings.redis_layout == "cluster"
    for server in _servers(client):
        keys = list(server.scan_iter(match=f"{ns}:*", count=1000))
        pipe = server.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        for key, used in zip(keys, pipe.execute(), strict=True):
            rest = key.decode()[len(ns) + 1 :]
            kind = rest.split(":", 1)[0]
            if kind in ("e", "r"):
                # single: e:{customer:12}; cluster: e:{<ns>/s3}:customer:12
                inner = rest.split("}:", 1)[1] if cluster else rest.split("{", 1)[1]
                kind += ":" + inner.split(":", 1)[0]
            sizes[kind].append(int(used or 0))
    client.close()
    return {
        kind: {"keys": len(v), "mean": sum(v) / len(v), "max": max(v)}
        for kind, v in sorted(sizes.items())
    }


def test_soak(system: System) -> None:
    config = WorkloadConfig(
        **{**WORKLOAD.__dict__, "rate": SOAK_RATE, "customers": 300, "merchants": 60, "seed": 41}
    )
    # checkpoints as in production (the learn_ns fixture checkpoints every 50 examples)
    system.settings = system.settings.model_copy(
        update={"checkpoint_every_examples": 1000, "checkpoint_every_s": 5.0}
    )
    system.env = settings_env(system.settings)
    system.start(serve=2)
    sampler = Sampler(system)
    sampler.thread.start()
    reports: list[SimulationReport] = []
    try:
        reports.append(
            run_simulation(system.settings, config, SOAK_SECONDS, connections=SOAK_CONNECTIONS)
        )
        wait_for(lambda: sampler.lag() == 0, 180, "the pipeline to drain its lag")
        drained = time.monotonic()
        heartbeat = _quiet_phase(system.settings, sampler)
    finally:
        sampler.close()
    report = reports[0]
    memory = redis_memory_by_kind(system.settings)

    samples = sampler.samples
    steady = [s for s in samples if s["t"] <= drained]
    start = steady[max(0, len(steady) // 5)]  # after warm-up
    end = steady[-1]
    rss = {
        name: {"start_kb": start["rss_kb"].get(name), "end_kb": end["rss_kb"].get(name)}
        for name in end["rss_kb"]
    }
    result = {
        "seconds": SOAK_SECONDS,
        "rate_target": SOAK_RATE,
        "payments_per_s": round(report.payments_per_s, 1),
        "writes": sum(report.writes.values()),
        "lag_max": max(s["lag"] for s in steady),
        "lag_by_sample": [s["lag"] for s in steady],
        "rss": rss,
        "redis_used_bytes": {"start": start["redis_used_bytes"], "end": end["redis_used_bytes"]},
        "redis_bytes_by_kind": memory,
        "retained_wal_bytes_max": max(s["retained_wal_bytes"] for s in samples),
        "heartbeat": heartbeat,
    }
    _write(result)
    result["learned"] = system.check(report, wait_s=300)
    _write(result)

    # lag is bounded: the last third never exceeds the worst of the first two thirds by much
    third = max(1, len(steady) // 3)
    early = max(s["lag"] for s in steady[: 2 * third]) if len(steady) > third else 0
    late = max(s["lag"] for s in steady[2 * third :])
    assert late <= 2 * early + 500, result["lag_by_sample"]
    # memory is flat for our processes (JVMs grow their heap up to -Xmx by design: reported)
    for name, kb in rss.items():
        if name.startswith(("serve:", "learner:")) and kb["start_kb"] and kb["end_kb"]:
            assert kb["end_kb"] <= 1.5 * kb["start_kb"] + 64_000, (name, kb)
    for entity, bound in ENTITY_BYTES_BOUND.items():
        assert memory[f"e:{entity}"]["max"] <= bound, memory
    assert result["retained_wal_bytes_max"] <= RETAINED_WAL_BOUND
    assert heartbeat["slot_advanced_bytes"] > 0, heartbeat


def _write(result: dict[str, Any]) -> None:
    print(json.dumps({k: v for k, v in result.items() if k != "lag_by_sample"}, indent=1))
    if os.environ.get("SOAK_REPORT"):
        path = Path(os.environ["SOAK_REPORT"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))


def _quiet_phase(settings: Settings, sampler: Sampler) -> dict[str, int]:
    """Only uncaptured writes for a while: heartbeats must still move the slot forward."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS soak_uncaptured (x text)")
        lsn = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        at = lsn.fetchone()
        assert at is not None
        start_lsn = int(at[0])
        deadline = time.monotonic() + 40
        flushed = sampler.wal()[1]
        while time.monotonic() < deadline and flushed <= start_lsn:
            conn.execute(
                "INSERT INTO soak_uncaptured SELECT repeat('x', 1000) FROM generate_series(1, 200)"
            )
            time.sleep(1)
            flushed = sampler.wal()[1]
        conn.execute("DROP TABLE soak_uncaptured")
    return {"quiet_start_lsn": start_lsn, "slot_advanced_bytes": flushed - start_lsn}
