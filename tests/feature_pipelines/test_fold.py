"""The server-side folds (one Lua call per batch read: FOLD for a few keys, FOLD_MANY for many)
agree with the Python fold, field by field.

Random entity hashes hold every kind of field the writer produces (buckets inside, at the edges
of and outside each window, mean parts, distinct values with positive, zero and negative counts,
lifetime fields, bookkeeping fields, fields of unknown features); both read paths must return
the same values, commit time and write time.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio

from feature_pipelines import (
    SAMPLE_FEATURES,
    AsyncFeatureStore,
    EntityFeatures,
    Feature,
    FeatureSet,
    FeatureStore,
)
from feature_pipelines.catalog import CUSTOMER
from feature_pipelines.fold import FoldRead
from feature_pipelines.planner import entity_key
from feature_pipelines.readout import ReadPlan
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD, bucket_range
from freshloop.settings import Settings

pytestmark = pytest.mark.integration

AT = datetime(2026, 5, 4, 12, 30, 15, 123456, tzinfo=UTC)
# The sample features and a lifetime distinct count (fields 'name#value', no bucket).
FEATURES = FeatureSet.of(
    [
        *SAMPLE_FEATURES,
        Feature("channels_lifetime", CUSTOMER, "payments", "created_at", "distinct", "channel"),
    ]
)
T_US = int(AT.timestamp() * 1_000_000)


def _random_hash(rng: random.Random, entity: str) -> dict[str, int]:
    fields: dict[str, int] = {}
    for f in FEATURES.for_entity(entity):
        parts = [":s", ":n"] if f.agg == "mean" else [""]
        if f.window is None:
            buckets: list[str] = [""]
        else:
            lo, hi = bucket_range(f, T_US)
            picks = {lo - 1, lo, lo + 1, hi - 1, hi, hi + 1}
            picks |= {rng.randint(lo - 5, hi + 5) for _ in range(4)}
            buckets = [f"@{b}" for b in picks]
        for bucket in buckets:
            if rng.random() < 0.3:
                continue
            if f.agg == "distinct":
                for value in rng.sample(["m1", "n1", "m2", "m3", "ü-7", "x", "a@1", "b#c@2"], k=4):
                    fields[f"{f.name}{bucket}#{value}"] = rng.choice([-1, 0, 1, 1, 2, 5])
            else:
                for part in parts:
                    fields[f"{f.name}{part}{bucket}"] = rng.randint(-3, 10**9)
    fields["not_a_feature@1"] = 7
    fields[COMMIT_FIELD] = rng.randint(1, 10**13)
    if rng.random() < 0.8:
        fields[WRITTEN_FIELD] = rng.randint(1, 10**13)
    return fields


def _plan(entity: str) -> ReadPlan:
    return ReadPlan(FEATURES.for_entity(entity), T_US)


@pytest.fixture
def client(stack_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_settings.redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("seed", range(5))
def test_server_fold_equals_python_fold(client: redis.Redis, seed: int) -> None:
    rng = random.Random(seed)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    try:
        for entity in ("customer", "merchant"):
            keys = list(range(40))
            for key in keys[:-5]:  # the last five entities have no state at all
                client.hset(entity_key(ns, entity, key), mapping=_random_hash(rng, entity))
            server = FeatureStore(client, FEATURES, ns, server_fold=True)
            python = FeatureStore(client, FEATURES, ns, server_fold=False)
            want = python.get_many(entity, keys, at=AT)
            many = server.get_many(entity, keys, at=AT)  # FOLD_MANY
            few = [r for key in keys for r in server.get_many(entity, [key], at=AT)]  # FOLD
            assert FoldRead(_plan(entity)).prefer_many(len(keys))
            assert not FoldRead(_plan(entity)).prefer_many(1)
            for g, w in [*zip(many, want, strict=True), *zip(few, want, strict=True)]:
                assert (g.key, g.values, g.commit_ms, g.written_ms) == (
                    w.key,
                    w.values,
                    w.commit_ms,
                    w.written_ms,
                )
            # the fixture is not degenerate: some windowed values are non-zero, some absent
            assert any(
                v.values[
                    "payment_count_1h" if entity == "customer" else "merchant_payment_count_1h"
                ]
                for v in want
            )
            assert not want[-1].found
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)


@pytest.mark.parametrize("server_fold", [True, False])
@pytest.mark.parametrize("n_distinct", [3, 30])  # FOLD and FOLD_MANY
def test_a_key_asked_for_twice_is_read_once_and_answered_twice(
    client: redis.Redis, server_fold: bool, n_distinct: int
) -> None:
    rng = random.Random(n_distinct)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    try:
        for key in range(n_distinct - 1):  # the last key has no state
            client.hset(entity_key(ns, "customer", key), mapping=_random_hash(rng, "customer"))
        store = FeatureStore(client, FEATURES, ns, server_fold=server_fold)
        asked: list[int | str] = [rng.randrange(n_distinct) for _ in range(3 * n_distinct)]
        asked += [str(asked[0]), n_distinct - 1, n_distinct - 1]  # '7' and 7 are one entity
        got = store.get_many("customer", asked, at=AT)
        assert [g.key for g in got] == [str(k) for k in asked]
        for g in got:
            alone = store.get("customer", g.key, at=AT)
            assert (g.values, g.commit_ms, g.written_ms) == (
                alone.values,
                alone.commit_ms,
                alone.written_ms,
            )
        assert not got[-1].found and any(g.found for g in got)
        # one script key / one HGETALL per distinct entity, as the server saw the commands
        before = client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
        client.config_set("slowlog-log-slower-than", 0)
        try:
            client.slowlog_reset()
            store.get_many("customer", asked, at=AT)
            seen = [e["command"].split() for e in client.slowlog_get(200)]
        finally:
            client.config_set("slowlog-log-slower-than", before)
        if server_fold:
            (evalsha,) = [c for c in seen if c[0].upper() == b"EVALSHA"]
            assert int(evalsha[2]) == n_distinct  # numkeys
        else:
            assert sum(c[0].upper() == b"HGETALL" for c in seen) == n_distinct
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)


def test_empty_read(client: redis.Redis) -> None:
    store = FeatureStore(client, SAMPLE_FEATURES, f"fold{uuid.uuid4().hex[:8]}")
    assert store.get_many("customer", []) == []


@pytest.mark.parametrize("server_fold", [True, False])
def test_async_reads_equal_sync_reads(
    client: redis.Redis, stack_settings: Settings, server_fold: bool
) -> None:
    """``AsyncFeatureStore`` (the API's reads) answers what ``FeatureStore`` does, for reads of
    one key, a few and many, on both fold paths."""
    rng = random.Random(11)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    keys = list(range(30))
    for key in keys[:-3]:
        client.hset(entity_key(ns, "customer", key), mapping=_random_hash(rng, "customer"))

    async def read_async() -> list[list[EntityFeatures]]:
        aclient = redis.asyncio.Redis.from_url(stack_settings.redis_url)
        try:
            store = AsyncFeatureStore(aclient, SAMPLE_FEATURES, ns, server_fold=server_fold)
            return [await store.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 30)]
        finally:
            await aclient.aclose()

    try:
        sync = FeatureStore(client, SAMPLE_FEATURES, ns, server_fold=server_fold)
        want = [sync.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 30)]
        got = asyncio.run(read_async())
        strip = [[(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in want]
        assert [
            [(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in got
        ] == strip
        assert any(e.found for e in want[-1]) and not want[-1][-1].found
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)
