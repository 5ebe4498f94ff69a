"""Redis, the read side: the feature read API (``FeatureStore``, ``AsyncFeatureStore``).

A read takes each entity's hash (HGETALL, all of a read's keys in one round trip) and folds it
(``fold.FoldRead``) into values with how fresh they are (``EntityFeatures``); with
``server_fold`` a read of many keys folds inside Redis instead. What the pipeline writes is
``store_write``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.fold import FOLD_MANY, MANY, FoldRead
from feature_pipelines.planner import entity_key
from feature_pipelines.readout import FeatureValue, ReadPlan

__all__ = ["AsyncFeatureStore", "EntityFeatures", "FeatureStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hashes(client: redis.Redis, names: Sequence[str]) -> list[Any]:
    """HGETALL of each name, in one round trip on one pooled connection: what a pipeline sends,
    without its bookkeeping per command, and with the client's retry on a broken connection,
    as a pipeline has (a read is safe to send again). Each hash comes as Redis sends it: a flat
    list on RESP2, a mapping on RESP3."""
    pool = client.connection_pool
    conn = pool.get_connection()
    packed = conn.pack_commands([("HGETALL", name) for name in names])

    def once() -> list[Any]:
        conn.send_packed_command(packed)
        return [conn.read_response() for _ in names]

    try:
        return conn.retry.call_with_retry(once, lambda _error: conn.disconnect())
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection is out of step
        raise
    finally:
        pool.release(conn)


async def _hashes_async(client: redis.asyncio.Redis, names: Sequence[str]) -> list[Any]:
    """``_hashes`` on an asyncio client."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    packed = conn.pack_commands([("HGETALL", name) for name in names])

    async def once() -> list[Any]:
        await conn.send_packed_command(packed)
        return [await conn.read_response() for _ in names]

    async def reset(_error: Exception) -> None:
        await conn.disconnect()

    try:
        return await conn.retry.call_with_retry(once, reset)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


@dataclass(frozen=True)
class EntityFeatures:
    """Feature values of one entity as read, with how fresh they are."""

    entity: str
    key: str
    values: dict[str, FeatureValue]
    commit_ms: int | None  # commit time of the newest change applied
    written_ms: int | None  # when the pipeline last wrote this entity
    read_ms: int

    @property
    def found(self) -> bool:
        return self.written_ms is not None

    @property
    def age_ms(self) -> int | None:
        """Time since the newest change reflected here was committed."""
        return None if self.commit_ms is None else self.read_ms - self.commit_ms


class _Plans:
    """Read plans by entity and read time, each made ready for folding once.

    A windowed feature's bucket range at ``t`` depends only on ``t // width``, so every read in
    one granule (the greatest common divisor of the entity's bucket widths, 10 s for the sample
    features) shares a plan: a read builds nothing but its key names. An entity with lifetime
    features only has one plan (granule 0)."""

    _KEEP = 8  # plans kept (reads at explicit past times add theirs)

    def __init__(self, features: FeatureSet) -> None:
        self.features = {e: features.for_entity(e) for e in features.entities()}
        self.granule: dict[str, int] = {
            e: math.gcd(*(f.bucket_seconds * 1_000_000 for f in fs if f.window is not None))
            for e, fs in self.features.items()
        }
        self._ready: dict[tuple[str, int], FoldRead] = {}

    def at(self, entity: str, t_us: int) -> FoldRead:
        granule = self.granule.get(entity)
        if granule is None:
            msg = f"unknown entity {entity!r}: choose from {', '.join(sorted(self.features))}"
            raise KeyError(msg)
        slot = (entity, t_us // granule if granule else 0)
        ready = self._ready.get(slot)
        if ready is None:
            if len(self._ready) >= self._KEEP:
                self._ready.clear()
            ready = self._ready[slot] = FoldRead(ReadPlan(self.features[entity], t_us))
        return ready


class _Read:
    """One read worked out before any I/O: the plan, the Redis keys and how to fold them.

    ``send`` issues the read on a sync or an asyncio client alike (for the latter it returns
    the awaitable), ``receive`` turns the answer into values: both stores share everything
    but the ``await``."""

    __slots__ = ("entity", "fold", "keys", "names", "read_ms", "server_fold", "unique")

    def __init__(
        self,
        plans: _Plans,
        ns: str,
        entity: str,
        keys: Sequence[Any],
        at: datetime | None,
        server_fold: bool,
    ) -> None:
        self.read_ms = _now_ms()
        t_us = self.read_ms * 1000 if at is None else (at - _EPOCH) // timedelta(microseconds=1)
        self.fold = plans.at(entity, t_us)
        self.entity = entity
        self.keys = keys
        self.names = [entity_key(ns, entity, key) for key in keys]
        # each entity is read once, however often it is asked for (a batch of payments names
        # a busy merchant many times)
        self.unique = list(dict.fromkeys(self.names))
        self.server_fold = server_fold and self.fold.fold_site(len(self.unique)) == MANY

    def send(self, client: Any, script: Any) -> Any:
        """One HGETALL per key, all in one round trip (or FOLD_MANY, as registered on
        ``client``, when the read folds in Redis). On an asyncio client it returns the
        awaitable."""
        if self.server_fold:
            return script(keys=self.unique, args=self.fold.args)
        if isinstance(client, redis.Redis):  # also for one key: no reply callback (a dict)
            return _hashes(client, self.unique)
        if isinstance(client, redis.asyncio.Redis):
            return _hashes_async(client, self.unique)
        pipe = client.pipeline(transaction=False)  # Redis Cluster: the keys' own nodes
        for name in self.unique:
            pipe.hgetall(name)
        return pipe.execute()

    def receive(self, reply: Any) -> list[EntityFeatures]:
        if not self.server_fold:
            reply = self.fold.fold_hashes(reply)
        if len(self.unique) != len(self.names):  # one answer per key asked for, in order
            by_name = dict(zip(self.unique, reply, strict=True))
            reply = [by_name[name] for name in self.names]
        return self.from_fold(reply)

    def from_fold(self, rows: Sequence[Sequence[int]]) -> list[EntityFeatures]:
        """Fold rows (``[commit, written, a1, b1, ...]`` per key) as values."""
        entity, read_ms = self.entity, self.read_ms
        return [
            EntityFeatures(entity, str(key), values, commit, written, read_ms)
            for key, (values, commit, written) in zip(
                self.keys, self.fold.unfold(rows), strict=True
            )
        ]


class _Reads:
    """What both stores keep: the client, the fold script registered on it, the read plans."""

    def __init__(self, client: Any, features: FeatureSet, ns: str, server_fold: bool) -> None:
        self.client = client
        self.features = features
        self.ns = ns
        self.server_fold = server_fold
        self._script = client.register_script(FOLD_MANY)
        self._plans = _Plans(features)

    def _read(self, entity: str, keys: Sequence[Any], at: datetime | None) -> _Read:
        return _Read(self._plans, self.ns, entity, keys, at, self.server_fold)


class FeatureStore(_Reads):
    """Reads features: ``get(entity, key)`` and ``get_many(entity, keys)``, one round trip."""

    client: redis.Redis

    def __init__(
        self, client: redis.Redis, features: FeatureSet, ns: str, *, server_fold: bool = False
    ) -> None:
        """Every read takes each entity's hash (HGETALL, one round trip for all) and folds
        it in Python: Redis, one thread shared with the pipeline's writes, does the least it
        can. ``server_fold``: reads of 64 keys or more fold inside Redis instead (one script
        call, two numbers per feature back; needs every key on one primary), for clients far
        from Redis. Hashes parse fastest from a RESP2 connection (``connect`` opens one)."""
        super().__init__(client, features, ns, server_fold)

    @classmethod
    def connect(cls, redis_url: str, features: FeatureSet, ns: str) -> FeatureStore:
        return cls(redis.Redis.from_url(redis_url, protocol=2), features, ns)

    def entities(self) -> list[str]:
        return sorted(self.features.entities())

    def scan_keys(self, entity: str) -> list[str]:
        """Keys of every entity of this kind that has state in Redis (SCAN: no blocking)."""
        prefix = f"{self.ns}:e:{{{entity}:"
        return [
            _s(k)[len(prefix) : -1] for k in self.client.scan_iter(match=f"{prefix}*", count=1000)
        ]

    def get(self, entity: str, key: Any, at: datetime | None = None) -> EntityFeatures:
        return self.get_many(entity, [key], at)[0]

    def get_many(
        self, entity: str, keys: Sequence[Any], at: datetime | None = None
    ) -> list[EntityFeatures]:
        read = self._read(entity, keys, at)
        return read.receive(read.send(self.client, self._script)) if read.names else []


class AsyncFeatureStore(_Reads):
    """``FeatureStore``'s reads for asyncio code (the API): same scripts, same answers, with a
    ``redis.asyncio`` client, so a read waits on Redis without a thread of its own."""

    client: redis.asyncio.Redis

    def __init__(
        self,
        client: redis.asyncio.Redis,
        features: FeatureSet,
        ns: str,
        *,
        server_fold: bool = False,
    ) -> None:
        super().__init__(client, features, ns, server_fold)

    async def get(self, entity: str, key: Any, at: datetime | None = None) -> EntityFeatures:
        return (await self.get_many(entity, [key], at))[0]

    async def get_many(
        self, entity: str, keys: Sequence[Any], at: datetime | None = None
    ) -> list[EntityFeatures]:
        read = self._read(entity, keys, at)
        return read.receive(await read.send(self.client, self._script)) if read.names else []
