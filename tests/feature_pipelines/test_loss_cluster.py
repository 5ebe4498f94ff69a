"""Partial-loss detection on a Redis Cluster (docs/redis-cluster.md, "Expiry, loss and rebuild
per slot"): the row-state census runs per partition slot (a deleted live row state and the
group's positions of one partition are found), and a primary that lost its data alone is found
through the epoch marks of the slots it held, naming that primary."""

from __future__ import annotations

import pytest

from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_read import cluster_client
from feature_pipelines.loss import LossWatch
from tests.feature_pipelines.cluster_fixtures import LayoutRedis
from tests.feature_pipelines.test_cluster_write import GROUP, PARTITIONS, Driver, _events

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("redis_layout", ["cluster"], indirect=True),
]


def _s(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def test_the_census_runs_per_partition_slot(redis_layout: LayoutRedis) -> None:
    client = redis_layout.client
    driver = Driver(redis_layout)
    events = _events(11, 80)
    # the pipeline's own kind of client (RESP2), as recovery.py gives it
    pipelines = cluster_client(redis_layout.settings.redis_conninfo())
    watch = LossWatch(pipelines, redis_layout.ns, GROUP, samples=10_000, partitions=PARTITIONS)
    assert watch.check(range(PARTITIONS), "e1") is None  # nothing written: nothing lost
    for start in range(0, len(events), 8):
        driver.write(events[start : start + 8], start)
        assert watch.check(range(PARTITIONS), "e1") is None
    keys = KeyLayout(redis_layout.ns, GROUP, "cluster")
    live = []
    for p in range(PARTITIONS):
        marks = {
            int(_s(f)): int(_s(v).split(":")[0])
            for f, v in client.hgetall(keys.watermarks(p)).items()
        }
        live += [
            (p, _s(member))
            for member, score in client.zrange(keys.expiry(p), 0, -1, withscores=True)
            if score > marks.get(p, 0) and _s(member) != keys.journal(p)
        ]
    assert live, "some row states are still live"
    partition, victim = live[-1]
    client.delete(victim)
    finding = watch.check(range(PARTITIONS), "e1")
    assert finding is not None and finding.kind == "row_state"
    assert finding.keys == [victim]
    # one partition's positions, seen under this epoch, deleted
    client.delete(keys.offsets(1))
    finding = watch.check(range(PARTITIONS), "e1")
    assert finding is not None and finding.kind == "group_key"
    assert finding.keys == [keys.offsets(1)]
    assert watch.check([0], "e2") is None  # a new epoch (the rebuild's) starts afresh


def test_a_primary_wiped_alone_is_found_by_the_slots_it_held(redis_layout: LayoutRedis) -> None:
    client = cluster_client(redis_layout.settings.redis_conninfo())
    ns = redis_layout.ns
    watch = LossWatch(client, ns, GROUP, partitions=4, shards=64)
    watch.mark_slots("e1")  # the pipeline marks the slots before it sets the sentinel
    assert watch.slots_lost() is None
    names = KeyLayout(ns, GROUP, "cluster", 64).sentinels(4)
    assert len(names) == 4 + 64
    nodes = {client.get_node_from_key(name).name for name in names}
    assert len(nodes) == len(client.get_primaries())  # the marks reach every primary
    # one primary loses the namespace's data (what a restart without its files does to it;
    # the session's cluster is shared, so only this namespace's keys go)
    wiped = sorted(nodes)[-1]
    conn = client.get_node(node_name=wiped).redis_connection
    for key in list(conn.scan_iter(match=f"{ns}:*", count=1000)):
        conn.delete(key)
    finding = watch.slots_lost()
    assert finding is not None and finding.kind == "slot_state"
    assert finding.keys == [n for n in names if client.get_node_from_key(n).name == wiped]
    assert wiped in finding.detail
