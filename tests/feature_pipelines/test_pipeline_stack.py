"""Through the real stack: the generator's workload, crashes, two consumers, bad records —
online features always end equal to the SQL oracle. Each test runs against a single Redis and
a Redis Cluster (``redis_layout=cluster``, docs/redis-cluster.md) unless it says otherwise."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from feature_pipelines import (
    SAMPLE_FEATURES,
    FeaturePipeline,
    FeatureStore,
    pipeline_stats,
    verify_until_clean,
)
from feature_pipelines.cluster_pipeline import batch_writer, redis_client
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from tests.redis_layout import drop_keys as drop_matching

pytestmark = pytest.mark.integration

_WORKLOAD = WorkloadConfig(
    rate=80,
    customers=60,
    merchants=12,
    label_delay_s=1.0,
    correction_share=0.1,
    delete_share=0.05,
    seed=5,
)


@pytest.fixture(params=["single", "cluster"])
def ns_start(
    request: pytest.FixtureRequest, pipeline: Settings
) -> Iterator[tuple[Settings, dict[str, int]]]:
    """A key namespace and consumer group of the test's own, starting at the topics' end, in
    one Redis layout: the stack's Redis, or a Redis Cluster (``cluster_fixtures``).

    The test then checks exactly the entities its own workload created (new customers and
    merchants, so every change of theirs comes after that point), however long the shared
    topics' history is.
    """
    update: dict[str, object] = {
        "redis_namespace": f"t{uuid.uuid4().hex[:10]}",
        "metrics_port": 0,
    }
    if request.param == "cluster":
        cluster: Settings = request.getfixturevalue("redis_cluster")
        update |= {"redis_layout": "cluster", "redis_url": cluster.redis_url}
    settings = pipeline.model_copy(update=update)
    start = _start_at_end(settings)
    yield settings, start
    drop_keys(redis_client(settings), settings.namespace)


def drop_keys(client: Any, ns: str) -> None:
    """Delete namespace ``ns``'s keys: of one Redis, or of every primary of a cluster."""
    drop_matching(client, f"{ns}:*")


def _start_at_end(settings: Settings) -> dict[str, int]:
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    offsets = {}
    for table in ("payments", "payment_outcomes"):
        topic = settings.topic(table)
        for partition in probe.list_topics(topic, timeout=10).topics[topic].partitions:
            offsets[f"{topic}:{partition}"] = probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )[1]
    probe.close()
    group = f"{settings.namespace}-features"
    batch_writer(
        settings, redis_client(settings), SAMPLE_FEATURES, settings.namespace, group
    ).set_offsets(offsets)
    return offsets


def _written(report: SimulationReport) -> dict[str, list[int]]:
    return {"customer": report.customers, "merchant": report.merchants}


@pytest.fixture
def ns(ns_start: tuple[Settings, dict[str, int]]) -> Settings:
    return ns_start[0]


def _store(settings: Settings) -> FeatureStore:
    return store_for(settings, SAMPLE_FEATURES)


def _assert_verified(settings: Settings, only: dict[str, list[int]], wait_s: float = 60) -> None:
    report = verify_until_clean(
        settings.postgres_conninfo(), _store(settings), wait_s=wait_s, only=only
    )
    assert report.entities_checked > 0 and report.values_checked > 0
    assert report.mismatches == []


def _spawn(settings: Settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "FRESHLOOP_REDIS_NAMESPACE": settings.namespace,
        "FRESHLOOP_METRICS_PORT": "0",
        "FRESHLOOP_REDIS_LAYOUT": settings.redis_layout,
        "FRESHLOOP_REDIS_URL": settings.redis_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "features", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_generator_workload_gives_zero_mismatches(ns_start) -> None:
    ns, start = ns_start
    pipeline = FeaturePipeline(ns, max_batch=500)
    client = redis_client(ns)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    try:
        report = run_simulation(ns, _WORKLOAD, duration_s=6)
        assert report.count("payments", "u") > 0 and report.count("payments", "d") > 0
        _assert_verified(ns, _written(report))
        assert pipeline.stats.applied > 0
        # the live stats hash of this consumer, as dashboards read it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            live = pipeline_stats(client, ns.namespace)
            if live and live[0]["applied_total"] == pipeline.stats.applied:
                break
            time.sleep(0.2)
        assert [row["consumer_id"] for row in live] == [pipeline.live.consumer]
        assert live[0]["applied_total"] == pipeline.stats.applied
        assert live[0]["assigned_partitions"] == 2 * ns.topic_partitions
        assert abs(live[0]["updated_at"] - time.time()) < 10
        # Kafka's committed offsets (lag monitoring) catch up with Redis's positions while the
        # consumer idles: they are committed once a second, not left behind the last batch
        probe = Consumer({"bootstrap.servers": ns.kafka_bootstrap, "group.id": pipeline.group_id})
        names = [name.rsplit(":", 1) for name in start]
        parts = [TopicPartition(topic, int(partition)) for topic, partition in names]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            committed = {
                f"{tp.topic}:{tp.partition}": tp.offset
                for tp in probe.committed(parts, timeout=10)
                if tp.offset >= 0
            }
            stored = pipeline.writer.offsets()
            if committed and all(committed.get(k) == v for k, v in stored.items() if v > 0):
                break
            time.sleep(0.3)
        probe.close()
        moved = {k: v for k, v in stored.items() if v > start.get(k, 0)}
        assert moved and all(committed.get(k) == v for k, v in moved.items()), (committed, moved)
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
    assert pipeline_stats(client, ns.namespace) == []  # a clean stop removes it
    # A second pass over the same topics (a restart that lost Kafka's offsets) changes nothing.
    again = FeaturePipeline(ns, group_id=f"{ns.namespace}-replay")
    if ns.redis_layout == "single":  # (the cluster layout's offsets are the group's already)
        again.writer.offsets_key = f"{ns.namespace}:offsets:{{other}}"  # type: ignore[union-attr]
    again.writer.set_offsets(start)
    replay = threading.Thread(target=again.run, daemon=True)
    replay.start()
    deadline = time.monotonic() + 60
    while again.stats.duplicates < pipeline.stats.applied and time.monotonic() < deadline:
        time.sleep(0.2)
    again.stop.set()
    replay.join(timeout=30)
    assert again.stats.applied == 0 and again.stats.duplicates >= pipeline.stats.applied
    _assert_verified(ns, _written(report), wait_s=0)


def test_kill_9_mid_stream_then_restart(ns: Settings) -> None:
    rng = random.Random(1)
    done = threading.Event()
    reports: list[SimulationReport] = []

    def write() -> None:
        config = WorkloadConfig(**{**_WORKLOAD.__dict__, "seed": 6})
        reports.append(run_simulation(ns, config, duration_s=8))
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    kills = 0
    while not done.is_set():
        proc = _spawn(ns)
        time.sleep(rng.uniform(0.5, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    final = _spawn(ns)
    try:
        _assert_verified(ns, _written(reports[0]))
    finally:
        final.send_signal(signal.SIGTERM)
        final.wait(timeout=30)
    assert kills >= 3


def test_two_consumers_in_one_group_agree_with_the_oracle(ns: Settings) -> None:
    procs = [_spawn(ns), _spawn(ns)]
    try:
        report = run_simulation(
            ns, WorkloadConfig(**{**_WORKLOAD.__dict__, "seed": 8}), duration_s=6
        )
        _assert_verified(ns, _written(report))
        admin = AdminClient({"bootstrap.servers": ns.kafka_bootstrap})
        group_id = f"{ns.namespace}-features"
        # on a loaded machine the second process may still be starting when the first has
        # applied everything: wait until both are members of the group
        deadline = time.monotonic() + 90
        while True:
            group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
            assigned = [
                sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
                for m in group.members
            ]
            if (len(assigned) == 2 and all(assigned)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(assigned) == 2 and all(assigned), assigned  # both share the work
        # range assignment: each member owns the same partition numbers of both topics
        for parts in assigned:
            by_topic = {t: {p for tt, p in parts if tt == t} for t, _ in parts}
            assert len({frozenset(v) for v in by_topic.values()}) == 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


# the cluster layout writes every batch at once, a partition at a time (cluster_pipeline)
@pytest.mark.parametrize("ns_start", ["single"], indirect=True)
def test_held_batches_catching_up_with_a_rebalance_agree_with_the_oracle(ns: Settings) -> None:
    """Every batch held and overlapped with the next (as when catching up), a second consumer
    joining mid-way (the first flushes its held batch at the revoke), and a stop with a batch
    held: the features still equal the oracle."""
    report = run_simulation(ns, WorkloadConfig(**{**_WORKLOAD.__dict__, "seed": 11}), duration_s=5)
    pipelines = [FeaturePipeline(ns, max_batch=40) for _ in range(2)]
    threads = [threading.Thread(target=p.run, daemon=True) for p in pipelines]
    for p in pipelines:
        p.HOLD_MIN_BATCH = 1  # hold every batch
    try:
        threads[0].start()
        deadline = time.monotonic() + 30
        while pipelines[0].stats.overlapped < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        threads[1].start()  # a rebalance while the first is catching up
        _assert_verified(ns, _written(report))
    finally:
        for p in pipelines:
            p.stop.set()
        for t in threads:
            t.join(timeout=30)
    assert pipelines[0].stats.overlapped >= 5
    assert sum(p.stats.applied for p in pipelines) >= report.count("payments", "c")


def test_malformed_record_is_dead_lettered_and_nothing_else_is_lost(ns: Settings) -> None:
    dlq = f"{ns.topic_prefix}.dead-letter"
    producer = Producer({"bootstrap.servers": ns.kafka_bootstrap})
    marker = uuid.uuid4().hex
    producer.produce(ns.topic("payments"), key=b'{"payment_id":-1}', value=f"not json {marker}")
    producer.produce(
        ns.topic("payments"),
        key=b'{"payment_id":-2}',
        value=b'{"op":"c","before":null,"after":{"payment_id":-2},'
        b'"source":{"table":"payments","lsn":1,"ts_ms":1}}',
    )
    producer.flush(10)
    pipeline = FeaturePipeline(ns)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    try:
        report = run_simulation(
            ns, WorkloadConfig(**{**_WORKLOAD.__dict__, "seed": 9}), duration_s=3
        )
        _assert_verified(ns, _written(report))
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
    assert pipeline.stats.dead_lettered >= 2

    reader = Consumer(
        {
            "bootstrap.servers": ns.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    meta = reader.list_topics(dlq, timeout=10).topics[dlq]
    reader.assign([TopicPartition(dlq, p, 0) for p in meta.partitions])
    found: dict[bytes, dict[str, bytes]] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(found) < 2:
        for msg in reader.consume(500, timeout=0.5):
            if msg.error() is None and msg.key() in (b'{"payment_id":-1}', b'{"payment_id":-2}'):
                found[msg.key()] = {**dict(msg.headers() or []), "value": msg.value()}
    reader.close()
    bad_json = found[b'{"payment_id":-1}']
    assert bad_json["value"] == f"not json {marker}".encode()  # original bytes kept
    assert b"not JSON" in bad_json["freshloop.reason"]
    assert bad_json["freshloop.source.topic"] == ns.topic("payments").encode()
    assert b"lacks needed column" in found[b'{"payment_id":-2}']["freshloop.reason"]
