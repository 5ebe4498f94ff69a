"""``features apply`` and ``features rebuild`` on a Redis Cluster (docs/redis-cluster.md,
"Apply and rebuild"): features added, changed and removed while the generator writes and the
pipeline runs end equal to the SQL oracle, every step that names entity hashes having run per
shard slot; then the rebuild drops the namespace's state on every primary."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from redis.cluster import RedisCluster

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline, verify_until_clean
from feature_pipelines.backfill import apply_features, plan_features
from feature_pipelines.cluster_pipeline import redis_client
from feature_pipelines.cluster_read import store_for
from feature_pipelines.source import rebuild_namespace
from freshloop.core.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from tests.feature_pipelines.test_apply_stack import _runs, _target, _written
from tests.feature_pipelines.test_pipeline_stack import _start_at_end, drop_keys

pytestmark = pytest.mark.integration

_WORKLOAD = WorkloadConfig(
    rate=40,
    customers=20,
    merchants=6,
    label_delay_s=1.0,
    correction_share=0.15,
    delete_share=0.05,
    seed=23,
)


@pytest.fixture
def ns(pipeline: Settings, redis_cluster: Settings) -> Iterator[Settings]:
    """A namespace and consumer group of the test's own in the session's Redis Cluster,
    starting at the topics' end."""
    settings = pipeline.model_copy(
        update={
            "redis_namespace": f"t{uuid.uuid4().hex[:10]}",
            "metrics_port": 0,
            "redis_layout": "cluster",
            "redis_url": redis_cluster.redis_url,
        }
    )
    _start_at_end(settings)
    yield settings
    drop_keys(redis_client(settings), settings.namespace)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in ("freshloop_feature_registry", "freshloop_feature_jobs"):
            conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (settings.namespace,))  # noqa: S608


def _keys(client: RedisCluster, pattern: str) -> list[str]:
    """Keys matching ``pattern`` on every primary."""
    return [
        k.decode() if isinstance(k, bytes) else str(k)
        for node in client.get_primaries()
        for k in node.redis_connection.scan_iter(match=pattern, count=1000)
    ]


def _feature_names(client: Any, ns: str) -> set[str]:
    out: set[str] = set()
    for key in _keys(client, f"{ns}:e:*"):
        out |= {re.split(r"[@#:]", f.decode(), maxsplit=1)[0] for f in client.hkeys(key)}
    return out


def test_apply_then_rebuild_per_slot(ns: Settings) -> None:
    client = redis_client(ns)
    target = _target()
    pipeline = FeaturePipeline(ns, SAMPLE_FEATURES, max_batch=500)
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    reports: list[SimulationReport] = []
    writer = threading.Thread(
        target=lambda: reports.append(run_simulation(ns, _WORKLOAD, duration_s=4)), daemon=True
    )
    try:
        writer.start()
        time.sleep(2)  # the pipeline runs the sample set, the generator writes
        plan, origin = plan_features(ns, target)
        assert origin == "pipeline"
        assert [c.name for c in plan.of("change")] == ["payment_count_10m"]
        lines: list[str] = []
        report = apply_features(ns, target, echo=lines.append)
        assert report.rows > 0 and report.entities > 0 and report.snapshot, lines
        # each shard the backfill touched recorded its own progress, in its own slot
        progress = _keys(client, f"{ns.namespace}:features:backfill:{report.generation}:*")
        assert len({client.keyslot(k) for k in progress}) > 1
        after = _feature_names(client, ns.namespace)
        assert "payment_count_10m" in after and "declined_amount_sum_24h" in after
        assert not {"payment_count_10m__next", "merchant_payment_count_1h"} & after
        assert _runs(pipeline, target) and worker.is_alive()
        writer.join(timeout=60)
        (sim,) = reports
        store = store_for(ns, target)
        verified = verify_until_clean(ns.postgres_conninfo(), store, wait_s=60, only=_written(sim))
        assert verified.values_checked > 0
        assert verified.mismatches == []
        again, origin = plan_features(ns, target)
        assert again.empty and origin == "registry"
    finally:
        pipeline.stop.set()
        worker.join(timeout=30)
    # 'features rebuild' (the pipeline stopped): the state goes from every primary
    assert _keys(client, f"{ns.namespace}:e:*") and _keys(client, f"{ns.namespace}:r:*")
    ends = rebuild_namespace(ns, target, echo=lambda _line: None)
    assert ends
    for kind in ("e", "r", "offsets", "epoch", "journal", "applied"):
        assert _keys(client, f"{ns.namespace}:{kind}:*") == [], kind
