"""The two read folds (``FoldRead.fold_fields`` in the client, FOLD_MANY inside Redis) agree
with the reference fold ``ReadPlan.values``, field by field, on random entity hashes holding
every kind of field the writer produces (``fold_hashes``): same values, commit time and write
time, through the store on RESP2 and RESP3 connections and with either fold as well.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from feature_pipelines import SAMPLE_FEATURES, AsyncFeatureStore, EntityFeatures, FeatureStore
from feature_pipelines.fold import FOLD_MANY, LOCAL, MANY, FoldRead
from feature_pipelines.planner import entity_key
from feature_pipelines.readout import ReadPlan
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD
from freshloop.core.settings import Settings
from tests.feature_pipelines.fold_hashes import AT, FEATURES, T_US, random_hash

pytestmark = pytest.mark.integration


def _plan(entity: str) -> ReadPlan:
    return ReadPlan(FEATURES.for_entity(entity), T_US)


@pytest.fixture
def client(stack_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_settings.redis_conninfo())
    yield client
    client.close()


@pytest.fixture
def client2(stack_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack_settings.redis_conninfo(), protocol=2)
    yield client
    client.close()


@pytest.mark.parametrize("seed", range(5))
def test_every_fold_equals_the_reference(
    client: redis.Redis, client2: redis.Redis, seed: int
) -> None:
    """FOLD_MANY and the client fold of HGETALL (a mapping on RESP3, a flat list on RESP2)
    each answer what the reference fold ``ReadPlan.values`` gives for the stored hashes; the
    store answers the same whichever fold its reads take."""
    rng = random.Random(seed)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    fold_many = client.register_script(FOLD_MANY)
    try:
        for entity in ("customer", "merchant"):
            keys = list(range(70))
            stored: dict[int, dict[str, int]] = {}
            for key in keys[:-5]:  # the last five entities have no state at all
                stored[key] = random_hash(rng, entity)
                client.hset(entity_key(ns, entity, key), mapping=stored[key])
            plan = _plan(entity)
            fold = FoldRead(plan)
            want = [
                (
                    plan.values(stored.get(k, {})),
                    stored.get(k, {}).get(COMMIT_FIELD),
                    stored.get(k, {}).get(WRITTEN_FIELD),
                )
                for k in keys
            ]
            names = [entity_key(ns, entity, k) for k in keys]
            assert fold.unfold(fold_many(keys=names, args=fold.args)) == want
            for c in (client, client2):
                local = [fold.fold_fields(c.hgetall(n)) for n in names]
                assert fold.unfold(local) == want
            for c in (client, client2):
                for server_fold in (False, True):
                    store = FeatureStore(c, FEATURES, ns, server_fold=server_fold)
                    for n in (1, 9, 70):
                        got = store.get_many(entity, keys[-n:], at=AT)
                        assert [(g.values, g.commit_ms, g.written_ms) for g in got] == want[-n:]
            assert [fold.fold_site(n) for n in (1, 9, 70)] == [LOCAL, LOCAL, MANY]
            # the fixture is not degenerate: some windowed values are non-zero, some absent
            count_1h = "payment_count_1h" if entity == "customer" else "merchant_payment_count_1h"
            assert any(values[count_1h] for values, _c, _w in want)
            assert want[-1] == (plan.values({}), None, None)
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)


@pytest.mark.parametrize("server_fold", [True, False])
@pytest.mark.parametrize("n_distinct", [3, 9, 70])  # FOLD_MANY (with server_fold) from 64
def test_a_key_asked_for_twice_is_read_once_and_answered_twice(
    client: redis.Redis, server_fold: bool, n_distinct: int
) -> None:
    rng = random.Random(n_distinct)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    try:
        for key in range(n_distinct - 1):  # the last key has no state
            client.hset(entity_key(ns, "customer", key), mapping=random_hash(rng, "customer"))
        store = FeatureStore(client, FEATURES, ns, server_fold=server_fold)
        asked: list[int | str] = [*range(n_distinct)]  # every key, most of them again
        asked += [rng.randrange(n_distinct) for _ in range(2 * n_distinct)]
        rng.shuffle(asked)
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
        # (the slow log is the admin's: the pipeline's user may not touch the server's config)
        admin = redis.Redis.from_url(Settings().redis_conninfo("admin"))
        before = admin.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
        admin.config_set("slowlog-log-slower-than", 0)
        try:
            admin.slowlog_reset()
            store.get_many("customer", asked, at=AT)
            seen = [e["command"].split() for e in admin.slowlog_get(200)]
        finally:
            admin.config_set("slowlog-log-slower-than", before)
            admin.close()
        entities = len({str(k) for k in asked})
        assert entities == n_distinct
        if server_fold and n_distinct >= 64:
            (evalsha,) = [c for c in seen if c[0].upper() == b"EVALSHA"]
            assert int(evalsha[2]) == entities  # numkeys
        else:
            assert sum(c[0].upper() == b"HGETALL" for c in seen) == entities
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)


def test_empty_read(client: redis.Redis) -> None:
    store = FeatureStore(client, SAMPLE_FEATURES, f"fold{uuid.uuid4().hex[:8]}")
    assert store.get_many("customer", []) == []


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("server_fold", [True, False])
def test_async_reads_equal_sync_reads(
    client: redis.Redis, stack_settings: Settings, server_fold: bool, protocol: int
) -> None:
    """``AsyncFeatureStore`` (the API's reads) answers what ``FeatureStore`` does, for reads of
    one key, a few and many, on both fold paths."""
    rng = random.Random(11)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    keys = list(range(70))
    for key in keys[:-3]:
        client.hset(entity_key(ns, "customer", key), mapping=random_hash(rng, "customer"))

    async def read_async() -> list[list[EntityFeatures]]:
        aclient = redis.asyncio.Redis.from_url(stack_settings.redis_conninfo(), protocol=protocol)
        try:
            store = AsyncFeatureStore(aclient, SAMPLE_FEATURES, ns, server_fold=server_fold)
            return [await store.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 70)]
        finally:
            await aclient.aclose()

    try:
        sync = FeatureStore(client, SAMPLE_FEATURES, ns, server_fold=server_fold)
        want = [sync.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 70)]
        got = asyncio.run(read_async())
        strip = [[(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in want]
        assert [
            [(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in got
        ] == strip
        assert any(e.found for e in want[-1]) and not want[-1][-1].found
    finally:
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)


def _admin() -> redis.Redis:
    """CLIENT KILL and the slow log are the admin's (the pipeline's user may not)."""
    return redis.Redis.from_url(Settings().redis_conninfo("admin"))


def _kill_pooled_connection(pool: redis.ConnectionPool, killer: redis.Redis) -> None:
    """Close, from the server's side, the one idle connection of ``pool`` (as a Redis restart
    or an idle timeout would)."""
    conn = pool.get_connection()
    try:
        conn.send_command("CLIENT", "ID")
        client_id = conn.read_response()
    finally:
        pool.release(conn)
    assert killer.client_kill_filter(_id=client_id) == 1


@pytest.mark.parametrize("n_keys", [1, 20])
def test_a_read_is_sent_again_on_a_broken_connection(
    client: redis.Redis, stack_settings: Settings, n_keys: int
) -> None:
    """The store's one-round-trip read keeps the client's retry: after the server drops the
    pooled connection, the next read reconnects and answers as before. (redis-py's asyncio
    client retries nothing by default, and on the default event loop its pool does not notice
    the dropped connection, so this one is given a retry; the API's, on uvloop, is checked in
    the API tests.)"""
    rng = random.Random(21)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    for key in range(n_keys):
        client.hset(entity_key(ns, "customer", key), mapping=random_hash(rng, "customer"))
    reader = redis.Redis.from_url(stack_settings.redis_conninfo(), protocol=2)
    try:
        store = FeatureStore(reader, FEATURES, ns)
        want = [(e.values, e.commit_ms) for e in store.get_many("customer", range(n_keys), at=AT)]
        assert any(values for values, _commit in want)
        _kill_pooled_connection(reader.connection_pool, _admin())
        got = store.get_many("customer", range(n_keys), at=AT)
        assert [(e.values, e.commit_ms) for e in got] == want

        async def read_twice() -> list[list[EntityFeatures]]:
            areader = redis.asyncio.Redis.from_url(
                stack_settings.redis_conninfo(), protocol=2, retry=AsyncRetry(NoBackoff(), 2)
            )
            try:
                astore = AsyncFeatureStore(areader, FEATURES, ns)
                first = await astore.get_many("customer", range(n_keys), at=AT)
                conn = await areader.connection_pool.get_connection()
                try:
                    await conn.send_command("CLIENT", "ID")
                    client_id = await conn.read_response()
                finally:
                    await areader.connection_pool.release(conn)
                assert _admin().client_kill_filter(_id=client_id) == 1
                return [first, await astore.get_many("customer", range(n_keys), at=AT)]
            finally:
                await areader.aclose()

        for part in asyncio.run(read_twice()):
            assert [(e.values, e.commit_ms) for e in part] == want
    finally:
        reader.close()
        for key in client.scan_iter(match=f"{ns}:*", count=1000):
            client.delete(key)
