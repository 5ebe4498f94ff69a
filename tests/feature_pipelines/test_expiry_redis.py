"""The write script expires in event time as ``MemoryStore`` does: the same plans of a month
with updates of old rows, deletes and late outcomes, applied to a real Redis and in memory,
leave the same row states, bucket fields, expiry indexes and watermarks.

In the suite's Redis layout (``tests/redis_layout.py``): on one Redis each chunk is one script
(``RedisBatchWriter``); on a Redis Cluster each chunk is written partition by partition, a
control step and entity steps per shard (``ClusterBatchWriter``), and the twin in memory is
planned partition by partition alike."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from feature_pipelines.catalog import SAMPLE_FEATURES, FeatureSet
from feature_pipelines.cluster_keys import split_entity_key
from feature_pipelines.cluster_write import ClusterBatchWriter
from feature_pipelines.decode import ChangeEvent
from feature_pipelines.planner import Planner, Watermarks, WritePlan
from feature_pipelines.reference import MemoryStore, read_values
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_expiry import PARTITIONS, Month, _events
from tests.redis_layout import client_for, drop_keys, key_layout, scan_keys

pytestmark = pytest.mark.integration

_BOOKKEEPING = {"_written_ms"}


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class LayoutWriter:
    """The pipeline's batch writer in ``settings``' layout, named as the planner names things
    (``<ns>:r:{<table>:<pk>}``, ``<ns>:e:{<entity>:<key>}``): ``RedisBatchWriter`` writing a
    chunk in one script, or ``ClusterBatchWriter`` writing it partition by partition."""

    def __init__(
        self,
        settings: Settings,
        client: Any,
        features: FeatureSet,
        ns: str,
        group: str = "g",
        partitions: int = PARTITIONS,
    ) -> None:
        self.client = client
        self.keys = key_layout(settings, ns, group)
        self.cluster = self.keys.cluster
        self.partitions = partitions
        self.single = RedisBatchWriter(client, features, ns, group)
        self.cw = ClusterBatchWriter(client, features, self.keys)

    def units(self, chunk: Sequence[ChangeEvent]) -> list[tuple[int, list[ChangeEvent]]]:
        """What one write takes: the whole chunk on one Redis (partition -1: any), each
        partition's events on a cluster."""
        if not self.cluster:
            return [(-1, list(chunk))]
        parts = sorted({ev.partition for ev in chunk})
        return [(p, [ev for ev in chunk if ev.partition == p]) for p in parts]

    def read_rows(self, keys: Sequence[str], partition: int) -> dict[str, Mapping[str, str]]:
        if not self.cluster:
            return self.single.read_rows(keys)
        return self.cw.read_rows(keys, partition)

    def position(self, partition: int, offset: int) -> dict[str, int]:
        """The next offset of a unit's topic partition (``t:0`` on one Redis, the chunk's)."""
        return {f"t:{max(partition, 0)}": offset}

    def apply(self, plan: WritePlan, partition: int, offsets: Mapping[str, int]) -> bool:
        """Write one unit's ``plan`` with its next offsets."""
        if not self.cluster:
            return self.single.apply(plan, offsets)
        return self.cw.apply(plan, partition, offsets)

    def row_name(self, planner_key: str, partition: int) -> str:
        return self.cw.row_name(planner_key, partition)

    def entity_name(self, planner_key: str) -> str:
        return self.cw.entity_name(planner_key)[0] if self.cluster else planner_key

    def index_key(self, partition: int) -> str:
        """The expiry index of one partition's row states."""
        return self.keys.expiry(partition)

    def idle_keys(self, partition: int) -> list[str]:
        """The idle-entity indexes of one partition: one, or one per shard on a cluster."""
        if not self.cluster:
            return [self.single.entity_index_key(partition)]
        return [self.keys.idle(partition, k) for k in range(self.keys.shards)]

    def offsets_key(self, partition: int = 0) -> str:
        return self.keys.offsets(partition)

    def set_offsets(self, offsets: Mapping[str, int]) -> None:
        by: dict[int, dict[str, str]] = {}
        for name, offset in offsets.items():
            by.setdefault(int(name.rsplit(":", 1)[1]), {})[name] = str(offset)
        for partition, mapping in by.items():
            self.client.hset(self.offsets_key(partition), mapping=mapping)

    def watermarks(self) -> dict[int, tuple[int, int]]:
        if not self.cluster:
            return self.single.watermarks()
        return {p: m for q in range(self.partitions) for p, m in self.cw.watermarks(q).items()}

    def offsets(self) -> dict[str, int]:
        if not self.cluster:
            return self.single.offsets()
        return {k: v for p in range(self.partitions) for k, v in self.cw.offsets(p).items()}


def _assert_entities_read_alike(
    memory: MemoryStore,
    writer: LayoutWriter,
    stored: Mapping[str, Mapping[str, str]],
    end_ms: int,
) -> None:
    """Every entity the reference keeps is kept with every field and count the reference has,
    and reads as the reference at the end of the history and after it; what Redis keeps
    besides are bucket fields only (or whole entities that read as none)."""
    checked = 0
    for key, fields in memory.hashes.items():
        if ":e:{" not in key or not fields:
            continue
        got = stored[writer.entity_name(key)]
        assert {f: got.get(f) for f in fields} == fields, key
        assert all("@" in f for f in set(got) - set(fields)), key
        entity, _key = split_entity_key(key)
        feats = SAMPLE_FEATURES.for_entity(entity)
        for days in (0, 1, 8, 40):
            at = (end_ms + days * 86_400_000) * 1000
            assert read_values(feats, got, at) == read_values(feats, fields, at), (key, days)
        checked += 1
    assert checked > 5
    # an entity the reference dropped as idle that Redis keeps still reads as no state
    kept = {writer.entity_name(k) for k, fields in memory.hashes.items() if ":e:{" in k and fields}
    for name, got in stored.items():
        if ":e:" in name and name not in kept:
            entity = name.split("}:", 1)[1].partition(":")[0]
            feats = SAMPLE_FEATURES.for_entity(entity)
            at = end_ms * 1000
            assert read_values(feats, got, at) == read_values(feats, {}, at), name


@pytest.fixture
def ns(stack_settings: Settings) -> Iterator[tuple[Any, str]]:
    tag = f"exp{uuid.uuid4().hex[:8]}"
    client = client_for(stack_settings, decode_responses=True)
    yield client, tag
    drop_keys(client, f"{tag}:*")
    client.close()


def test_the_script_expires_as_memory_does(ns: tuple[Any, str], stack_settings: Settings) -> None:
    client, tag = ns
    rng = random.Random(11)
    month = Month(rng)
    month.run(days=30)
    events = _events(month.db.log, rng)
    writer = LayoutWriter(stack_settings, client, SAMPLE_FEATURES, tag)
    on_redis, in_memory = Planner(SAMPLE_FEATURES, tag), Planner(SAMPLE_FEATURES, tag)
    memory = MemoryStore(SAMPLE_FEATURES)
    for start in range(0, len(events), 40):
        for partition, chunk in writer.units(events[start : start + 40]):
            states = writer.read_rows(on_redis.keys_needed(chunk), partition)
            plan = on_redis.plan(chunk, states)
            assert writer.apply(plan, partition, writer.position(partition, start))
            twin = in_memory.plan(chunk, memory.read(in_memory.keys_needed(chunk)))
            assert memory.apply(twin)

    stored = {}
    for key in scan_keys(client, f"{tag}:[er]:*"):
        stored[key] = {k: v for k, v in client.hgetall(key).items() if k not in _BOOKKEEPING}
    partition_of = {key: p for p, index in memory.index.items() for key in index}

    def name(key: str) -> str:
        if ":r:{" in key:
            return writer.row_name(key, partition_of[key])
        return writer.entity_name(key)

    kept = {name(k): v for k, v in memory.hashes.items() if v}
    rows = [k for k in stored if ":r:" in k]
    written = {(e.table, e.key) for e in events}
    assert rows and len(rows) < 0.6 * len(written), "the states of rows unchanged for long expired"
    for partition, index in memory.index.items():
        on_server = client.zrange(writer.index_key(partition), 0, -1, withscores=True)
        want = {writer.row_name(k, partition): s for k, s in index.items()}
        if writer.cluster:
            want[writer.keys.journal(partition)] = 2**62  # the journal never expires
        assert {k: int(s) for k, s in on_server} == want
    assert memory.idle, "idle entities are indexed"
    idle_on_server: dict[int, dict[str, float]] = {}
    for partition in memory.idle:
        for index_key in writer.idle_keys(partition):
            found = client.zrange(index_key, 0, -1, withscores=True)
            idle_on_server.setdefault(partition, {}).update(found)
    if not writer.cluster:
        assert stored == kept
        for partition, idle in memory.idle.items():
            want = {writer.entity_name(k): s for k, s in idle.items()}
            assert {k: int(s) for k, s in idle_on_server[partition].items()} == want
    else:
        # row states exactly; an idle entity waits in its shard's index of the partition that
        # wrote it last until that partition writes to that shard again (docs/redis-cluster.md,
        # Expiry, loss and rebuild per slot): until then it may keep buckets the reference
        # swept already, which no read counts any more
        assert {k: v for k, v in stored.items() if ":r:" in k} == {
            k: v for k, v in kept.items() if ":r:" in k
        }
        _assert_entities_read_alike(memory, writer, stored, max(e.commit_ms for e in events))
        for partition, idle in memory.idle.items():
            for key in idle:
                assert writer.entity_name(key) in idle_on_server[partition], key
    # the watermarks come back from Redis as the planner left them
    assert Watermarks(writer.watermarks()).stored() == on_redis.marks.stored()


def test_an_entity_sweep_drops_only_expired_buckets(
    ns: tuple[Any, str], stack_settings: Settings
) -> None:
    """A hash with buckets at both sides of each feature's bound keeps exactly the live ones."""
    client, tag = ns
    rng = random.Random(5)
    month = Month(rng)
    month.run(days=3, customers=1, merchants=1)
    events = _events(month.db.log, rng, resend=0)
    writer = LayoutWriter(stack_settings, client, SAMPLE_FEATURES, tag)
    planner = Planner(SAMPLE_FEATURES, tag)
    swept = 0
    for event in events:
        ((partition, chunk),) = writer.units([event])
        plan = planner.plan(chunk, writer.read_rows(planner.keys_needed(chunk), partition))
        names = {key: writer.entity_name(key) for key in plan.increments}
        before = {key: client.hget(names[key], "_swept") for key in plan.increments}
        assert writer.apply(plan, partition, {})
        for key in plan.increments:
            fields = client.hgetall(names[key])
            if fields.get("_swept") == before[key]:
                continue  # not swept by this write
            swept += 1
            for field in fields:
                head, at, rest = field.partition("@")
                if not at:
                    continue
                feature = head.split(":")[0]
                bucket = int(rest.split("#")[0])
                assert bucket > plan.expired_below[feature], (key, field)
    assert swept > 10


def test_a_sweep_reads_the_bucket_after_the_first_at_sign_before_any_value(
    ns: tuple[Any, str], stack_settings: Settings
) -> None:
    """The sweep takes a field's bucket from the ``@`` that comes before any ``#``: a keyed
    kind's value may itself hold ``@``, ``:`` or ``#`` (a distinct count of e-mail addresses),
    and a field whose only ``@`` is inside its value has no bucket and stays."""
    client, tag = ns
    writer = LayoutWriter(stack_settings, client, SAMPLE_FEATURES, tag)
    at_us = 1_800_000_000_000_000
    plan = WritePlan()
    plan.sweep_at_us = at_us
    plan.expired_below = {
        f.name: (at_us - f.window_seconds * 1_000_000) // (f.bucket_seconds * 1_000_000)
        for f in SAMPLE_FEATURES
        if f.window is not None
    }
    key = f"{tag}:e:{{customer:7}}"
    plan.increments = {key: {"payment_count_lifetime": 1}}
    plan.entity_of = {key: "customer"}
    plan.commit_ms = {key: at_us // 1000}
    plan.marks = {0: (at_us, at_us)}
    hour = plan.expired_below["payment_count_1h"]
    day = plan.expired_below["distinct_merchants_24h"]
    gone = {
        f"payment_count_1h@{hour}",
        f"payment_count_1h@{hour - 3}",
        f"amount_sum_1h:s@{hour}",
        f"distinct_merchants_24h@{day}#a@{day + 5}",
        f"distinct_merchants_24h@{day}#x:y#z",
    }
    stays = {
        f"payment_count_1h@{hour + 1}",
        f"amount_sum_1h:s@{hour + 1}",
        f"distinct_merchants_24h@{day + 1}#a@{day - 5}",
        f"distinct_merchants_24h#someone@{day - 5}",  # '@' inside the value only: no bucket
        "payment_count_lifetime",
    }
    name = writer.entity_name(key)
    client.hset(name, mapping={field: 1 for field in gone | stays})
    assert writer.apply(plan, 0, {})
    kept = {f for f in client.hkeys(name) if not f.startswith("_")}
    assert kept == stays
    assert client.hget(name, "payment_count_lifetime") == "2"
