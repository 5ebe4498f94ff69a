"""The write script expires in event time as ``MemoryStore`` does: the same plans of a month
with updates of old rows, deletes and late outcomes, applied to a real Redis and in memory,
leave the same row states, bucket fields, expiry indexes and watermarks."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest
import redis

from feature_pipelines.catalog import SAMPLE_FEATURES
from feature_pipelines.planner import Planner, Watermarks
from feature_pipelines.reference import MemoryStore
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_expiry import Month, _events
from tests.fixtures import drop_namespace

pytestmark = pytest.mark.integration

_BOOKKEEPING = {"_written_ms"}


@pytest.fixture
def ns(stack_settings: Settings) -> Iterator[tuple[redis.Redis, str]]:
    tag = f"exp{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack_settings.redis_conninfo(), decode_responses=True)
    yield client, tag
    drop_namespace(stack_settings, tag)
    client.close()


def test_the_script_expires_as_memory_does(ns: tuple[redis.Redis, str]) -> None:
    client, tag = ns
    rng = random.Random(11)
    month = Month(rng)
    month.run(days=30)
    events = _events(month.db.log, rng)
    writer = RedisBatchWriter(client, SAMPLE_FEATURES, tag, "g")
    on_redis, in_memory = Planner(SAMPLE_FEATURES, tag), Planner(SAMPLE_FEATURES, tag)
    memory = MemoryStore(SAMPLE_FEATURES)
    for start in range(0, len(events), 40):
        chunk = events[start : start + 40]
        plan = on_redis.plan(chunk, writer.read_rows(on_redis.keys_needed(chunk)))
        assert writer.apply(plan, {"t:0": start})
        twin = in_memory.plan(chunk, memory.read(in_memory.keys_needed(chunk)))
        assert memory.apply(twin)

    stored = {}
    for key in client.scan_iter(match=f"{tag}:[er]:*", count=1000):
        stored[key] = {k: v for k, v in client.hgetall(key).items() if k not in _BOOKKEEPING}
    kept = {k: v for k, v in memory.hashes.items() if v}
    assert stored == kept
    rows = [k for k in stored if ":r:" in k]
    written = {(e.table, e.key) for e in events}
    assert rows and len(rows) < 0.6 * len(written), "the states of rows unchanged for long expired"
    for partition, index in memory.index.items():
        on_server = client.zrange(writer.index_key(partition), 0, -1, withscores=True)
        assert {k: int(s) for k, s in on_server} == index
    assert memory.idle, "idle entities are indexed"
    for partition, idle in memory.idle.items():
        on_server = client.zrange(writer.entity_index_key(partition), 0, -1, withscores=True)
        assert {k: int(s) for k, s in on_server} == idle
    # the watermarks come back from Redis as the planner left them
    assert Watermarks(writer.watermarks()).stored() == on_redis.marks.stored()


def test_an_entity_sweep_drops_only_expired_buckets(ns: tuple[redis.Redis, str]) -> None:
    """A hash with buckets at both sides of each feature's bound keeps exactly the live ones."""
    client, tag = ns
    rng = random.Random(5)
    month = Month(rng)
    month.run(days=3, customers=1, merchants=1)
    events = _events(month.db.log, rng, resend=0)
    writer = RedisBatchWriter(client, SAMPLE_FEATURES, tag, "g")
    planner = Planner(SAMPLE_FEATURES, tag)
    swept = 0
    for event in events:
        plan = planner.plan([event], writer.read_rows(planner.keys_needed([event])))
        before = {key: client.hget(key, "_swept") for key in plan.increments}
        assert writer.apply(plan, {})
        for key in plan.increments:
            fields = client.hgetall(key)
            if fields.get("_swept") == before[key]:
                continue  # not swept by this write
            swept += 1
            for name in fields:
                head, at, rest = name.partition("@")
                if not at:
                    continue
                feature = head.split(":")[0]
                bucket = int(rest.split("#")[0])
                assert bucket > plan.expired_below[feature], (key, name)
    assert swept > 10
