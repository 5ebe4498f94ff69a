"""The write path in both Redis layouts (docs/redis-cluster.md): the same change histories
(inserts, updates, deletes, re-deliveries, outcomes joined to their payments' merchants) over
two partitions give the values the in-memory reference gives, on a single Redis (one script per
batch) and on a Redis Cluster (per partition a control step, then one entity step per shard).
On the cluster: a crash between the steps loses nothing and counts nothing twice once the
journal is replayed, a repeated entry is a no-op, a consumer that lost its partition is fenced
by the journal's version, a restart resumes from the offsets the control step wrote, and a
month of changes expires per slot as the in-memory reference does."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from redis.cluster import RedisCluster

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.cluster_keys import KeyLayout, split_entity_key
from feature_pipelines.cluster_write import ClusterBatchWriter
from feature_pipelines.decode import ChangeEvent, decode
from feature_pipelines.planner import Planner, Watermarks
from feature_pipelines.reference import MemoryStore, read_values
from feature_pipelines.source import drop_state
from feature_pipelines.store_write import RedisBatchWriter
from tests.feature_pipelines.cluster_fixtures import LayoutRedis
from tests.feature_pipelines.fixtures import envelope, iso
from tests.feature_pipelines.harness import decode_all, micros
from tests.feature_pipelines.test_expiry import Month
from tests.feature_pipelines.test_expiry import _events as _month_events
from tests.feature_pipelines.test_overlap import T, _history

pytestmark = pytest.mark.integration

GROUP = "g"
PARTITIONS = 2


def _events(seed: int, n: int) -> list[ChangeEvent]:
    """A history over two partitions: a row's partition is its payment id's parity (payments
    and outcomes share the key, as the real topics do)."""
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(seed), n).items)
    return [replace(ev, partition=int(ev.key) % PARTITIONS) for ev in events]


def _offsets(chunk: list[ChangeEvent], start: int) -> dict[int, dict[str, int]]:
    """Per partition, the next offset after ``chunk`` (events are numbered in the history)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for i, ev in enumerate(chunk, start):
        out[ev.partition] = {f"t:{ev.partition}": i + 1}
    return out


class Driver:
    """Plans and writes batches the way the pipeline does in one layout."""

    def __init__(self, target: LayoutRedis, group: str = GROUP) -> None:
        self.target = target
        self.planner = Planner(SAMPLE_FEATURES, target.ns)
        self.cluster = target.layout == "cluster"
        self.keys = KeyLayout(target.ns, group, "cluster" if self.cluster else "single")
        if self.cluster:
            self.cw = ClusterBatchWriter(target.client, SAMPLE_FEATURES, self.keys)
        else:
            self.sw = RedisBatchWriter(target.client, SAMPLE_FEATURES, target.ns, group)

    def write(self, chunk: list[ChangeEvent], start: int, crash: str = "") -> None:
        offsets = _offsets(chunk, start)
        if not self.cluster:
            plan = self.planner.plan(chunk, self.sw.read_rows(self.planner.keys_needed(chunk)))
            merged = {k: v for p in offsets.values() for k, v in p.items()}
            assert self.sw.apply(plan, merged)
            return
        for partition in sorted({ev.partition for ev in chunk}):
            part = [ev for ev in chunk if ev.partition == partition]
            states = self.cw.read_rows(self.planner.keys_needed(part), partition)
            plan = self.planner.plan(part, states)
            assert self.cw.apply(plan, partition, offsets[partition], crash=crash)

    def offsets(self) -> dict[str, int]:
        if not self.cluster:
            return self.sw.offsets()
        return {k: v for p in range(PARTITIONS) for k, v in self.cw.offsets(p).items()}

    def restarted(self) -> Driver:
        """A new process: planner watermarks and writer loaded from Redis."""
        again = Driver(self.target)
        if self.cluster:
            stored = {}
            for p in range(PARTITIONS):
                stored.update(again.cw.watermarks(p))
        else:
            stored = again.sw.watermarks()
        again.planner.marks = Watermarks(stored)
        return again

    def entity_hash(self, single_key: str) -> dict[str, str]:
        name = self.cw.entity_name(single_key)[0] if self.cluster else single_key
        raw = self.target.client.hgetall(name)
        return {_s(k): _s(v) for k, v in raw.items()}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _reference(events: list[ChangeEvent], size: int) -> tuple[str, MemoryStore]:
    store, planner = MemoryStore(SAMPLE_FEATURES), Planner(SAMPLE_FEATURES, "ref")
    for start in range(0, len(events), size):
        chunk = events[start : start + size]
        assert store.apply(planner.plan(chunk, store.read(planner.keys_needed(chunk))))
    return "ref", store


def _assert_same_values(driver: Driver, store: MemoryStore) -> int:
    """Every entity the reference holds reads the same in Redis, at several read times."""
    ns = driver.target.ns
    checked = 0
    for ref_key, fields in store.hashes.items():
        if ":e:{" not in ref_key:
            continue
        entity, key = split_entity_key(ref_key)
        got = driver.entity_hash(f"{ns}:e:{{{entity}:{key}}}")
        feats = SAMPLE_FEATURES.for_entity(entity)
        for hours in (0, 1, 6, 30):
            at = micros(T + timedelta(hours=hours))
            assert read_values(feats, got, at) == read_values(feats, fields, at), (ref_key, hours)
        assert got.get("_commit_ms") == fields.get("_commit_ms"), ref_key
        checked += 1
    return checked


@pytest.mark.parametrize(("seed", "size"), [(3, 5), (11, 1), (29, 40)])
def test_histories_read_as_the_reference_in_both_layouts(
    redis_layout: LayoutRedis, seed: int, size: int
) -> None:
    events = _events(seed, 90)
    driver = Driver(redis_layout)
    for start in range(0, len(events), size):
        driver.write(events[start : start + size], start)
    assert _assert_same_values(driver, _reference(events, size)[1]) >= 5
    assert driver.offsets() == {
        f"t:{p}": max(i for i, ev in enumerate(events) if ev.partition == p) + 1
        for p in range(PARTITIONS)
    }


def test_a_restart_replays_from_the_offsets_and_counts_nothing_twice(
    redis_layout: LayoutRedis,
) -> None:
    events = _events(7, 80)
    driver = Driver(redis_layout)
    for start in range(0, 50, 5):
        driver.write(events[start : start + 5], start)
    again = driver.restarted()
    # Kafka re-delivers from a little before the stored offsets (at least once): everything
    # from event 30 on again, then the rest
    for start in range(30, len(events), 5):
        again.write(events[start : start + 5], start)
    assert _assert_same_values(again, _reference(events, 5)[1]) >= 5


# the journal and the entity steps exist in the cluster layout only
cluster_only = pytest.mark.parametrize("redis_layout", ["cluster"], indirect=True)


@cluster_only
def test_a_crash_after_the_control_step_is_replayed_once(redis_layout: LayoutRedis) -> None:
    events = _events(5, 60)
    driver = Driver(redis_layout)
    for start in range(0, 30, 6):
        driver.write(events[start : start + 6], start)
    driver.write(events[30:36], 30, crash="after-control")  # killed between the two steps
    reference = _reference(events[:36], 6)[1]
    with pytest.raises(AssertionError):
        _assert_same_values(driver, reference)  # the entity side of the last batch is missing
    again = driver.restarted()
    assert sum(again.cw.replay(p) for p in range(PARTITIONS)) >= 1
    assert _assert_same_values(again, reference) >= 5
    third = again.restarted()  # a second replay (the first's acknowledgement not yet written)
    assert sum(third.cw.replay(p) for p in range(PARTITIONS)) >= 1
    assert _assert_same_values(third, reference) >= 5  # the guard: applied once only
    for start in range(36, len(events), 6):  # and writing goes on, acknowledging them
        third.write(events[start : start + 6], start)
    assert _assert_same_values(third, _reference(events, 6)[1]) >= 5
    assert all(third.cw.pending(p) == {} or len(third.cw.pending(p)) == 1 for p in (0, 1))


@cluster_only
def test_a_consumer_that_lost_its_partition_writes_nothing(redis_layout: LayoutRedis) -> None:
    events = [ev for ev in _events(13, 60) if ev.partition == 0]
    old = Driver(redis_layout)
    old.write(events[:10], 0)
    new = old.restarted()  # the partition moved to another consumer, which wrote since
    new.write(events[10:20], 10)
    before = {k: new.entity_hash(k) for k in _entity_keys(new, events[:20])}
    part = events[20:30]
    plan = old.planner.plan(part, old.cw.read_rows(old.planner.keys_needed(part), 0))
    assert old.cw.apply(plan, 0, {"t:0": 30}) is False  # the journal's version moved
    assert {k: new.entity_hash(k) for k in _entity_keys(new, events[:20])} == before
    assert new.offsets()["t:0"] == 20


def _payment(pk: int, customer: int, merchant: int, at: datetime) -> ChangeEvent:
    """An insert of a payment made at ``at`` and committed then, on partition 0."""
    row = {
        "payment_id": pk,
        "customer_id": customer,
        "merchant_id": merchant,
        "amount": "1.00",
        "status": "approved",
        "created_at": iso(at),
    }
    commit_ms = micros(at) // 1000
    value = envelope("payments", "c", None, row, 1000 + 8 * pk, commit_ms=commit_ms)
    event = decode(value, orjson.dumps({"payment_id": pk}), SAMPLE_FEATURES)
    assert event is not None
    return event


@cluster_only
def test_an_idle_entity_is_swept_though_its_partition_never_writes_its_shard_again(
    redis_layout: LayoutRedis,
) -> None:
    """An idle entity's buckets go once its windows passed even when no later batch of the
    partition that wrote it has an entity in its shard: each time the partition's watermark
    moves a sweep step (a quarter of the shortest window, 10 minutes), a batch also sweeps a few
    shards it does not write, in turn, so all 64 within 16 steps; not on every batch."""
    keys = KeyLayout(redis_layout.ns, GROUP, "cluster")
    writer = ClusterBatchWriter(redis_layout.client, SAMPLE_FEATURES, keys)
    planner = Planner(SAMPLE_FEATURES, redis_layout.ns)

    def write(events: list[ChangeEvent]) -> None:
        plan = planner.plan(events, writer.read_rows(planner.keys_needed(events), 0))
        assert writer.apply(plan, 0, {"t:0": events[-1].position[1]})

    idle = keys.entity("customer", 1)
    shard = keys.shard_of("customer", 1)
    write([_payment(1, 1, 1, T)])

    def buckets() -> list[str]:
        return sorted(f for f in map(_s, redis_layout.client.hkeys(idle)) if "@" in f)

    assert buckets(), "the payment wrote its customer's window buckets"
    others = [n for n in range(2, 400) if keys.shard_of("customer", n) != shard]
    merchant = next(n for n in range(2, 400) if keys.shard_of("merchant", n) != shard)
    step = timedelta(minutes=10) / 4
    visits = 0
    while buckets():
        visits += 1
        assert visits <= keys.shards // 4, "a shard's idle index was not swept in its turn"
        # every window of customer 1 has passed; a batch within the step visits no shard
        at = T + timedelta(days=2) + visits * step
        write([_payment(2 * visits, others[2 * visits], merchant, at)])
        within = at + step / 2
        write([_payment(2 * visits + 1, others[2 * visits + 1], merchant, within)])
    assert visits >= 1
    # later in the same step: the batch's steps are its own entities' shards only
    pk = 2 * visits + 2
    event = _payment(pk, others[pk], merchant, at + step * 3 / 4)
    plan = planner.plan([event], writer.read_rows(planner.keys_needed([event]), 0))
    own = {keys.shard_of("customer", others[pk]), keys.shard_of("merchant", merchant)}
    assert {int(s) for s in writer._entry(plan, 0)["shards"]} == own
    lifetime = {f.name for f in SAMPLE_FEATURES.for_entity("customer") if f.window is None}
    kept = set(map(_s, redis_layout.client.hkeys(idle)))
    assert lifetime <= {f.split("@")[0] for f in kept}, kept  # lifetime values stay


def _entity_keys(driver: Driver, events: list[ChangeEvent]) -> list[str]:
    ns = driver.target.ns
    out = set()
    for ev in events:
        for row in (ev.before, ev.after):
            if row and row.get("customer_id") is not None:
                out.add(f"{ns}:e:{{customer:{row['customer_id']}}}")
    return sorted(out)


@cluster_only
def test_every_step_keeps_its_keys_in_one_slot(redis_layout: LayoutRedis) -> None:
    client = redis_layout.client
    assert isinstance(client, RedisCluster)
    keys = KeyLayout(redis_layout.ns, GROUP, "cluster", shards=64)
    for p in range(8):
        control = {
            keys.offsets(p),
            keys.watermarks(p),
            keys.expiry(p),
            keys.journal(p),
            keys.control_idle(p),
            keys.row("payments", 17, p),
        }
        assert len({client.keyslot(k) for k in control}) == 1
    slots = set()
    for n in range(400):
        shard = keys.shard_of("customer", n)
        step = {
            keys.entity("customer", n),
            keys.applied(shard),
            keys.idle(1, shard),
            keys.shard_noindex(1, shard),
        }
        assert len({client.keyslot(k) for k in step}) == 1
        slots.add(client.keyslot(keys.entity("customer", n)))
    assert len(slots) == 64  # the entities spread over every shard
    nodes = {client.get_node_from_key(keys.entity("customer", n)).port for n in range(400)}
    assert len(nodes) == 3  # and every primary


@cluster_only
def test_a_month_expires_per_partition_slot_as_memory_does(redis_layout: LayoutRedis) -> None:
    """Row states expire in event time in their partition's slot (the control step) exactly as
    in memory; entity buckets are swept per shard slot, so every entity reads as in memory at
    the end of the month and after it."""
    client = redis_layout.client
    rng = random.Random(11)
    month = Month(rng)
    month.run(days=30)
    events = _month_events(month.db.log, rng)
    keys = KeyLayout(redis_layout.ns, GROUP, "cluster")
    writer = ClusterBatchWriter(client, SAMPLE_FEATURES, keys)
    memory = MemoryStore(SAMPLE_FEATURES)
    on_redis = Planner(SAMPLE_FEATURES, redis_layout.ns)
    in_memory = Planner(SAMPLE_FEATURES, redis_layout.ns)
    for start in range(0, len(events), 40):
        chunk = events[start : start + 40]
        for partition in sorted({ev.partition for ev in chunk}):
            part = [ev for ev in chunk if ev.partition == partition]
            plan = on_redis.plan(part, writer.read_rows(on_redis.keys_needed(part), partition))
            assert writer.apply(plan, partition, {f"t:{partition}": start})
            twin = in_memory.plan(part, memory.read(in_memory.keys_needed(part)))
            assert memory.apply(twin)

    ns = redis_layout.ns
    rows: dict[str, dict[str, str]] = {}
    for raw in client.scan_iter(match=f"{ns}:r:*", count=1000):
        key = _s(raw)
        rows[key] = {_s(k): _s(v) for k, v in client.hgetall(key).items() if _s(k) != "_written_ms"}
    partition_of = {key: p for p, index in memory.index.items() for key in index}
    kept = {
        writer.row_name(k, partition_of[k]): dict(fields)
        for k, fields in memory.hashes.items()
        if fields and ":r:{" in k
    }
    assert rows == kept
    written = {(e.table, e.key) for e in events}
    assert rows and len(rows) < 0.6 * len(written), "the states of rows unchanged for long expired"
    for partition, index in memory.index.items():
        on_server = client.zrange(keys.expiry(partition), 0, -1, withscores=True)
        want = {writer.row_name(k, partition): s for k, s in index.items()}
        want[keys.journal(partition)] = 2**62  # the journal never expires
        assert {_s(k): int(s) for k, s in on_server} == want
    end = max(ev.commit_ms for ev in events) * 1000
    for ref_key, fields in memory.hashes.items():
        if ":e:{" not in ref_key:
            continue
        entity, key = split_entity_key(ref_key)
        got = {_s(k): _s(v) for k, v in client.hgetall(keys.entity(entity, key)).items()}
        feats = SAMPLE_FEATURES.for_entity(entity)
        for days in (0, 1, 8, 40):
            at = end + days * 86_400_000_000
            assert read_values(feats, got, at) == read_values(feats, fields, at), ref_key
    stored = {p: m for q in range(4) for p, m in writer.watermarks(q).items()}
    assert Watermarks(stored).stored() == on_redis.marks.stored()


def test_a_rebuild_drops_the_group_on_every_node_and_counts_again(
    redis_layout: LayoutRedis,
) -> None:
    """The loss path's drop (``source.drop_state``) leaves nothing of the group's state on any
    primary (entity hashes, row states, positions, journals, the shards' applied entries), so
    the rebuild that follows counts every change once again from nothing."""
    events = _events(17, 60)
    driver = Driver(redis_layout)
    for start in range(0, len(events), 6):
        driver.write(events[start : start + 6], start)
    client = redis_layout.client
    client.set(f"{redis_layout.ns}:keepme", "1")
    gone = drop_state(client, redis_layout.ns, GROUP, keep=[f"{redis_layout.ns}:keepme"])
    assert gone > 0
    assert _namespace_keys(redis_layout) == [f"{redis_layout.ns}:keepme"]
    again = Driver(redis_layout)  # a new process rebuilding from the same changes
    for start in range(0, len(events), 6):
        again.write(events[start : start + 6], start)
    assert _assert_same_values(again, _reference(events, 6)[1]) >= 5


def _namespace_keys(target: LayoutRedis) -> list[str]:
    client = target.client
    if isinstance(client, RedisCluster):
        found = [
            _s(k)
            for node in client.get_primaries()
            for k in node.redis_connection.scan_iter(match=f"{target.ns}:*", count=1000)
        ]
    else:
        found = [_s(k) for k in client.scan_iter(match=f"{target.ns}:*", count=1000)]
    return sorted(found)
