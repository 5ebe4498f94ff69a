from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster

from feature_pipelines import SAMPLE_FEATURES, AsyncFeatureStore, EntityFeatures, FeatureStore
from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_read import async_store_for, store_for
from feature_pipelines.fold import FOLD_MANY, LOCAL, MANY, FoldRead
from feature_pipelines.readout import ReadPlan
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD
from freshloop.core.settings import Settings
from tests.feature_pipelines.fold_hashes import AT, FEATURES, T_US, random_hash
from tests.redis_layout import drop_keys
from tests.redis_layout import entity_key as layout_key

pytestmark = pytest.mark.integration

# FOLD_MANY folds every key of a read in one script: all of them must be in one slot, which a
# read of many entities of a Redis Cluster never is (its store folds in the client only)
SERVER_FOLD = "the server-side fold FOLD_MANY needs every key of a read in one slot"
single_redis_fold = pytest.mark.single_redis(SERVER_FOLD)


def _plan(entity: str) -> ReadPlan:
    return ReadPlan(FEATURES.for_entity(entity), T_US)


def _url(settings: Settings, role: str = "writer") -> str:
    url = settings.redis_conninfo(role)  # type: ignore[arg-type]
    if settings.redis_layout == "cluster":  # a cluster has database 0 only: no path
        return urlsplit(url)._replace(path="").geturl()
    return url


def _client(settings: Settings, protocol: int | None = None, role: str = "writer") -> Any:
    """A client of the settings' layout (``redis.Redis`` or ``RedisCluster``) on RESP
    ``protocol`` (None: redis-py's default)."""
    kwargs = {} if protocol is None else {"protocol": protocol}
    if settings.redis_layout == "cluster":
        return RedisCluster.from_url(_url(settings, role), **kwargs)
    return redis.Redis.from_url(_url(settings, role), **kwargs)


def _async_client(settings: Settings, protocol: int, **kwargs: Any) -> Any:
    if settings.redis_layout == "cluster":
        return AsyncRedisCluster.from_url(_url(settings), protocol=protocol, **kwargs)
    return redis.asyncio.Redis.from_url(_url(settings), protocol=protocol, **kwargs)


def _store(
    settings: Settings, client: Any, ns: str, features: FeatureSet = FEATURES, *, server_fold: bool
) -> FeatureStore:
    """The layout's store on ``client``: ``FeatureStore`` (folding in Redis for many keys with
    ``server_fold``) on one Redis, ``ClusterFeatureStore`` (client fold only) on a cluster."""
    if settings.redis_layout == "cluster":
        assert not server_fold, SERVER_FOLD
        return store_for(settings, features, ns=ns, client=client)
    return FeatureStore(client, features, ns, server_fold=server_fold)


def _async_store(
    settings: Settings, client: Any, ns: str, features: FeatureSet = FEATURES, *, server_fold: bool
) -> AsyncFeatureStore:
    if settings.redis_layout == "cluster":
        assert not server_fold, SERVER_FOLD
        return async_store_for(settings, features, client, ns=ns)
    return AsyncFeatureStore(client, features, ns, server_fold=server_fold)


def _server_folds(settings: Settings) -> tuple[bool, ...]:
    """The folds the layout's store offers: in the client, and in Redis on one Redis only."""
    return (False,) if settings.redis_layout == "cluster" else (False, True)


@pytest.fixture
def client(stack_settings: Settings) -> Iterator[Any]:
    client = _client(stack_settings)
    yield client
    client.close()


@pytest.fixture
def client2(stack_settings: Settings) -> Iterator[Any]:
    client = _client(stack_settings, protocol=2)
    yield client
    client.close()


def _stored(
    client: Any, settings: Settings, ns: str, entity: str, rng: random.Random
) -> tuple[list[int], list[str], list[tuple[Any, Any, Any]]]:
    """70 entities of which the last five have no state at all: their keys, Redis names and
    what the reference fold ``ReadPlan.values`` reads for each."""
    keys = list(range(70))
    stored: dict[int, dict[str, int]] = {}
    for key in keys[:-5]:
        stored[key] = random_hash(rng, entity)
        client.hset(layout_key(settings, entity, key, ns), mapping=stored[key])
    plan = _plan(entity)
    want = [
        (
            plan.values(stored.get(k, {})),
            stored.get(k, {}).get(COMMIT_FIELD),
            stored.get(k, {}).get(WRITTEN_FIELD),
        )
        for k in keys
    ]
    return keys, [layout_key(settings, entity, k, ns) for k in keys], want


@pytest.mark.parametrize("seed", range(5))
def test_every_fold_equals_the_reference(
    client: Any, client2: Any, stack_settings: Settings, seed: int
) -> None:
    """The client fold of HGETALL (a mapping on RESP3, a flat list on RESP2) answers what the
    reference fold ``ReadPlan.values`` gives for the stored hashes; the store answers the same
    whichever fold its reads take (on one Redis also FOLD_MANY's)."""
    rng = random.Random(seed)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    try:
        for entity in ("customer", "merchant"):
            keys, names, want = _stored(client, stack_settings, ns, entity, rng)
            fold = FoldRead(_plan(entity))
            for c in (client, client2):
                local = [fold.fold_fields(c.hgetall(n)) for n in names]
                assert fold.unfold(local) == want
            for c in (client, client2):
                for server_fold in _server_folds(stack_settings):
                    store = _store(stack_settings, c, ns, server_fold=server_fold)
                    for n in (1, 9, 70):
                        got = store.get_many(entity, keys[-n:], at=AT)
                        assert [(g.values, g.commit_ms, g.written_ms) for g in got] == want[-n:]
            assert [fold.fold_site(n) for n in (1, 9, 70)] == [LOCAL, LOCAL, MANY]
            # the fixture is not degenerate: some windowed values are non-zero, some absent
            count_1h = "payment_count_1h" if entity == "customer" else "merchant_payment_count_1h"
            assert any(values[count_1h] for values, _c, _w in want)
            assert want[-1] == (_plan(entity).values({}), None, None)
    finally:
        drop_keys(client, f"{ns}:*")


@single_redis_fold
@pytest.mark.parametrize("seed", range(5))
def test_the_server_fold_equals_the_reference(
    client: Any, stack_settings: Settings, seed: int
) -> None:
    """FOLD_MANY, called on the stored hashes, answers what the reference fold gives."""
    rng = random.Random(seed)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    fold_many = client.register_script(FOLD_MANY)
    try:
        for entity in ("customer", "merchant"):
            _keys, names, want = _stored(client, stack_settings, ns, entity, rng)
            fold = FoldRead(_plan(entity))
            assert fold.unfold(fold_many(keys=names, args=fold.args)) == want
    finally:
        drop_keys(client, f"{ns}:*")


def _commands_seen(settings: Settings, action: Callable[[], Any]) -> list[list[bytes]]:
    """The commands Redis ran during ``action``, as every primary's slow log saw them (the slow
    log is the admin's: the pipeline's user may not touch the server's config)."""
    admin = _client(settings, role="admin")
    nodes = (
        [node.redis_connection for node in admin.get_primaries()]
        if isinstance(admin, RedisCluster)
        else [admin]
    )
    before = [
        node.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"] for node in nodes
    ]
    try:
        for node in nodes:
            node.config_set("slowlog-log-slower-than", 0)
            node.slowlog_reset()
        action()
        return [e["command"].split() for node in nodes for e in node.slowlog_get(200)]
    finally:
        for node, value in zip(nodes, before, strict=True):
            node.config_set("slowlog-log-slower-than", value)
        admin.close()


SERVER_FOLD_CASES = [pytest.param(True, marks=single_redis_fold), False]


@pytest.mark.parametrize("server_fold", SERVER_FOLD_CASES)
@pytest.mark.parametrize("n_distinct", [3, 9, 70])  # FOLD_MANY (with server_fold) from 64
def test_a_key_asked_for_twice_is_read_once_and_answered_twice(
    client: Any, stack_settings: Settings, server_fold: bool, n_distinct: int
) -> None:
    rng = random.Random(n_distinct)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    try:
        for key in range(n_distinct - 1):  # the last key has no state
            client.hset(
                layout_key(stack_settings, "customer", key, ns),
                mapping=random_hash(rng, "customer"),
            )
        store = _store(stack_settings, client, ns, server_fold=server_fold)
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
        seen = _commands_seen(stack_settings, lambda: store.get_many("customer", asked, at=AT))
        entities = len({str(k) for k in asked})
        assert entities == n_distinct
        if server_fold and n_distinct >= 64:
            (evalsha,) = [c for c in seen if c[0].upper() == b"EVALSHA"]
            assert int(evalsha[2]) == entities  # numkeys
        else:
            assert sum(c[0].upper() == b"HGETALL" for c in seen) == entities
    finally:
        drop_keys(client, f"{ns}:*")


def test_empty_read(client: Any, stack_settings: Settings) -> None:
    store = _store(
        stack_settings, client, f"fold{uuid.uuid4().hex[:8]}", SAMPLE_FEATURES, server_fold=False
    )
    assert store.get_many("customer", []) == []


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("server_fold", SERVER_FOLD_CASES)
def test_async_reads_equal_sync_reads(
    client: Any, stack_settings: Settings, server_fold: bool, protocol: int
) -> None:
    """``AsyncFeatureStore`` (the API's reads) answers what ``FeatureStore`` does, for reads of
    one key, a few and many, on both fold paths (the layout's stores, each on its layout)."""
    rng = random.Random(11)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    keys = list(range(70))
    for key in keys[:-3]:
        client.hset(
            layout_key(stack_settings, "customer", key, ns), mapping=random_hash(rng, "customer")
        )

    async def read_async() -> list[list[EntityFeatures]]:
        aclient = _async_client(stack_settings, protocol)
        try:
            store = _async_store(
                stack_settings, aclient, ns, SAMPLE_FEATURES, server_fold=server_fold
            )
            return [await store.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 70)]
        finally:
            await aclient.aclose()

    try:
        sync = _store(stack_settings, client, ns, SAMPLE_FEATURES, server_fold=server_fold)
        want = [sync.get_many("customer", keys[:n], at=AT) for n in (0, 1, 3, 70)]
        got = asyncio.run(read_async())
        strip = [[(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in want]
        assert [
            [(e.key, e.values, e.commit_ms, e.written_ms) for e in part] for part in got
        ] == strip
        assert any(e.found for e in want[-1]) and not want[-1][-1].found
    finally:
        drop_keys(client, f"{ns}:*")


def _client_id(conn: Any) -> Any:
    conn.send_command("CLIENT", "ID")
    return conn.read_response()


def _kill_pooled_connection(pool: redis.ConnectionPool, killer: redis.Redis) -> None:
    """Close, from the server's side, the one idle connection of ``pool`` (as a Redis restart
    or an idle timeout would)."""
    conn = pool.get_connection()
    try:
        client_id = _client_id(conn)
    finally:
        pool.release(conn)
    assert killer.client_kill_filter(_id=client_id) == 1


def _killers(settings: Settings) -> tuple[Any, Callable[[str], redis.Redis]]:
    """The admin's client (CLIENT KILL is the admin's: the pipeline's user may not) and, per
    node name (``host:port``), a connection to that node (on one Redis: the one server)."""
    admin = _client(settings, role="admin")
    if isinstance(admin, RedisCluster):
        return admin, lambda name: admin.get_node(node_name=name).redis_connection
    return admin, lambda _name: admin


def _nodes_of(reader: Any, names: list[str]) -> list[str]:
    """The nodes (``host:port``) holding ``names``: one Redis is the one node ``""``."""
    if isinstance(reader, RedisCluster | AsyncRedisCluster):
        nodes = [reader.get_node_from_key(name) for name in names]
        return sorted({node.name for node in nodes if node is not None})
    return [""]


def _kill_pooled_connections(reader: Any, names: list[str], settings: Settings) -> None:
    """``_kill_pooled_connection`` on every node ``reader`` reads ``names`` from."""
    admin, killer = _killers(settings)
    try:
        for node in _nodes_of(reader, names):
            if isinstance(reader, RedisCluster):
                pool = reader.get_node(node_name=node).redis_connection.connection_pool
            else:
                pool = reader.connection_pool
            _kill_pooled_connection(pool, killer(node))
    finally:
        admin.close()


async def _kill_async_pooled_connections(
    areader: Any, names: list[str], settings: Settings
) -> None:
    """The same for an asyncio client's pool (a cluster's: each node's own)."""
    admin, killer = _killers(settings)
    try:
        for node in _nodes_of(areader, names):
            if isinstance(areader, AsyncRedisCluster):
                cluster_node = areader.get_node(node_name=node)
                assert cluster_node is not None
                conn = cluster_node.acquire_connection()
                try:
                    await conn.send_command("CLIENT", "ID")
                    client_id = await conn.read_response()
                finally:
                    cluster_node.release(conn)
            else:
                conn = await areader.connection_pool.get_connection()
                try:
                    await conn.send_command("CLIENT", "ID")
                    client_id = await conn.read_response()
                finally:
                    await areader.connection_pool.release(conn)
            assert killer(node).client_kill_filter(_id=client_id) == 1
    finally:
        admin.close()


@pytest.mark.parametrize("n_keys", [1, 20])
def test_a_read_is_sent_again_on_a_broken_connection(
    client: Any, stack_settings: Settings, n_keys: int
) -> None:
    """The store's one-round-trip read keeps the client's retry: after the server drops the
    pooled connection (on a cluster: of every node read), the next read reconnects and answers
    as before. (redis-py's asyncio client retries nothing by default, and on the default event
    loop its pool does not notice the dropped connection, so this one is given a retry; the
    API's, on uvloop, is checked in the API tests.)"""
    rng = random.Random(21)
    ns = f"fold{uuid.uuid4().hex[:8]}"
    names = [layout_key(stack_settings, "customer", key, ns) for key in range(n_keys)]
    for name in names:
        client.hset(name, mapping=random_hash(rng, "customer"))
    reader = _client(stack_settings, protocol=2)
    try:
        store = _store(stack_settings, reader, ns, server_fold=False)
        want = [(e.values, e.commit_ms) for e in store.get_many("customer", range(n_keys), at=AT)]
        assert any(values for values, _commit in want)
        _kill_pooled_connections(reader, names, stack_settings)
        got = store.get_many("customer", range(n_keys), at=AT)
        assert [(e.values, e.commit_ms) for e in got] == want

        async def read_twice() -> list[list[EntityFeatures]]:
            areader = _async_client(stack_settings, 2, retry=AsyncRetry(NoBackoff(), 2))
            try:
                astore = _async_store(stack_settings, areader, ns, server_fold=False)
                first = await astore.get_many("customer", range(n_keys), at=AT)
                await _kill_async_pooled_connections(areader, names, stack_settings)
                return [first, await astore.get_many("customer", range(n_keys), at=AT)]
            finally:
                await areader.aclose()

        for part in asyncio.run(read_twice()):
            assert [(e.values, e.commit_ms) for e in part] == want
    finally:
        reader.close()
        drop_keys(client, f"{ns}:*")
