"""Scale-out: two ``freshloop features run`` processes in one consumer group give the same
features as one process, and both equal the SQL oracle (issue 22, item 2).

Through the real stack: one workload, two namespaces of the test's own starting at the change
topics' end (partitioned topics), one consumed by a single process, the other by
``freshloop features run --processes 2`` (two processes in one group).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from feature_pipelines import SAMPLE_FEATURES, FeatureStore, pipeline_stats, verify_until_clean
from feature_pipelines.cluster_pipeline import batch_writer, redis_client
from feature_pipelines.cluster_read import store_for
from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from tests.redis_layout import client_for, drop_keys

pytestmark = pytest.mark.integration

_WORKLOAD = WorkloadConfig(
    rate=80,
    customers=60,
    merchants=12,
    label_delay_s=1.0,
    correction_share=0.1,
    delete_share=0.05,
    seed=22,
)


def _ends(settings: Settings) -> dict[str, int]:
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "probe"})
    offsets = {}
    for table in ("payments", "payment_outcomes"):
        topic = settings.topic(table)
        for partition in probe.list_topics(topic, timeout=10).topics[topic].partitions:
            high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
            offsets[f"{topic}:{partition}"] = high
    probe.close()
    return offsets


@pytest.fixture
def two_namespaces(pipeline: Settings) -> Iterator[list[Settings]]:
    """Two namespaces (and consumer groups) of the test's own, both at the topics' end."""
    ends = _ends(pipeline)
    out = []
    client = redis_client(pipeline)  # the settings' layout: one Redis or the cluster
    for _ in range(2):
        ns = pipeline.model_copy(
            update={"redis_namespace": f"t{uuid.uuid4().hex[:10]}", "metrics_port": 0}
        )
        group = f"{ns.namespace}-features"
        batch_writer(ns, client, SAMPLE_FEATURES, ns.namespace, group).set_offsets(ends)
        out.append(ns)
    yield out
    for ns in out:
        drop_keys(client, f"{ns.namespace}:*")  # every primary of a cluster


def _spawn(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "features", "run", *args],
        env=settings.environment(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _store(settings: Settings) -> FeatureStore:
    return store_for(settings, SAMPLE_FEATURES)


def test_two_processes_in_one_group_give_the_values_of_one(
    two_namespaces: list[Settings],
) -> None:
    one, two = two_namespaces
    assert one.topic_partitions >= 2  # partitioned topics: the group can share them
    # one process, and ``features run --processes 2``: two processes in one group
    procs = [_spawn(one), _spawn(two, "--processes", "2")]
    client = client_for(one)
    try:
        # both processes of the second group own partitions before anything is written
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            owning = [r for r in pipeline_stats(client, two.namespace) if r["assigned_partitions"]]
            if len(owning) == 2 and pipeline_stats(client, one.namespace):
                break
            assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
            time.sleep(0.2)
        assert len(owning) == 2, owning
        assert sum(r["assigned_partitions"] for r in owning) == 2 * two.topic_partitions
        report = run_simulation(one, _WORKLOAD, duration_s=6)
        only = {"customer": report.customers, "merchant": report.merchants}
        assert report.count("payments", "u") > 0 and report.count("payments", "d") > 0
        at = datetime.now(UTC)
        verified = []
        for ns in (one, two):
            check = verify_until_clean(ns.postgres_conninfo(), _store(ns), wait_s=90, only=only)
            assert check.values_checked > 0 and check.mismatches == [], ns.namespace
            verified.append(check.values_checked)
        assert verified[0] == verified[1]
        # the same values, entity by entity, read at one time from both namespaces
        for entity, keys in only.items():
            a = _store(one).get_many(entity, keys, at)
            b = _store(two).get_many(entity, keys, at)
            assert [r.values for r in a] == [r.values for r in b]
            assert any(r.found for r in a)
        # the work was shared: each of the two processes applied changes
        applied = [r["applied_total"] for r in pipeline_stats(client, two.namespace)]
        assert len(applied) == 2 and all(n > 0 for n in applied), applied
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
