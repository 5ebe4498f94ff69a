"""Redis Cluster, the read side: ``FeatureStore``'s reads of entities kept under shard tags.

docs/redis-cluster.md, "Reads". A read names each entity by its cluster key
(``cluster_keys.KeyLayout.entity``) and sends the HGETALLs through the cluster client's
pipeline, which groups them by node: one round trip per node the keys live on. The hashes are
folded in the client exactly as on a single Redis (``store_read``); the server fold needs every
key in one slot and is not offered here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.store_read import AsyncFeatureStore, FeatureStore, _Read, _Reads
from freshloop.core.health import HEALTH
from freshloop.core.redis_errors import REDIS_DOWN
from freshloop.core.settings import Settings

__all__ = [
    "AsyncClusterFeatureStore",
    "ClusterFeatureStore",
    "async_layout_client",
    "async_store_for",
    "cluster_client",
    "layout_client",
    "layout_client_when_up",
    "store_for",
]

Role = Literal["writer", "reader", "admin"]
# what a client's creation may raise while its cluster is down or still forming
_WAITED: tuple[type[Exception], ...] = (*REDIS_DOWN, RedisClusterException)
log = logging.getLogger(__name__)


def _cluster_url(redis_url: str) -> str:
    """The URL without its database path: a cluster has database 0 only."""
    return urlsplit(redis_url)._replace(path="").geturl()


def cluster_client(redis_url: str, **kwargs: Any) -> RedisCluster:
    """A Redis Cluster client from a URL naming one primary (with its user and password;
    a cluster has database 0 only, so a ``/0`` path is dropped). RESP2, as ``FeatureStore``'s
    reads parse fastest."""
    return RedisCluster.from_url(_cluster_url(redis_url), protocol=2, **kwargs)


def _cluster_names(read: _Read, layout: KeyLayout, entity: str, keys: Any) -> _Read:
    """``read`` naming each entity by its cluster key (its shard's hash tag)."""
    read.names = [layout.entity(entity, key) for key in keys]
    read.unique = list(dict.fromkeys(read.names))
    return read


class ClusterFeatureStore(FeatureStore):
    """``get`` and ``get_many`` over a Redis Cluster (the entity key layout of ``keys``)."""

    def __init__(self, client: RedisCluster, features: FeatureSet, keys: KeyLayout) -> None:
        _Reads.__init__(self, client, features, keys.ns, False)
        self.cluster = client  # the same client, typed as the cluster's (its primaries)
        self.keys = keys

    @classmethod
    def connect_cluster(
        cls, redis_url: str, features: FeatureSet, ns: str, shards: int
    ) -> ClusterFeatureStore:
        return cls(cluster_client(redis_url), features, KeyLayout(ns, "", "cluster", shards))

    def _read(self, entity: str, keys: Any, at: datetime | None) -> _Read:
        return _cluster_names(super()._read(entity, keys, at), self.keys, entity, keys)

    def scan_keys(self, entity: str) -> list[str]:
        """Keys of every entity of this kind with state, from every primary (SCAN)."""
        prefix = f"{self.ns}:e:{{{self.ns}/s"
        out = []
        for node in self.cluster.get_primaries():
            for raw in node.redis_connection.scan_iter(match=f"{prefix}*", count=1000):
                name = raw.decode() if isinstance(raw, bytes) else raw
                kind, _sep, key = name.split("}:", 1)[1].partition(":")
                if kind == entity:
                    out.append(key)
        return out


class AsyncClusterFeatureStore(AsyncFeatureStore):
    """``AsyncFeatureStore``'s reads over a Redis Cluster (the API): the HGETALLs go through
    the asyncio cluster client's pipeline, one round trip per node the keys live on."""

    def __init__(self, client: AsyncRedisCluster, features: FeatureSet, keys: KeyLayout) -> None:
        _Reads.__init__(self, client, features, keys.ns, False)
        self.keys = keys

    def _read(self, entity: str, keys: Any, at: datetime | None) -> _Read:
        return _cluster_names(super()._read(entity, keys, at), self.keys, entity, keys)


def layout_client(settings: Settings, role: Role = "reader", **kwargs: Any) -> Any:
    """A client of ``role`` for ``settings.redis_layout`` (RESP2): one ``redis.Redis`` or a
    ``RedisCluster`` (typed ``Any``: both answer the single-key commands and non-transactional
    pipelines the stages send; ``kwargs`` go to the client, e.g. socket timeouts). A cluster
    client asks a node for the cluster's layout as it is made: it raises when none answers."""
    if settings.redis_layout == "cluster":
        return cluster_client(settings.redis_conninfo(role), **kwargs)
    return redis.Redis.from_url(settings.redis_conninfo(role), protocol=2, **kwargs)


def layout_client_when_up(
    settings: Settings,
    role: Role,
    stop: threading.Event,
    component: str,
    make: Callable[[], Any] | None = None,
) -> Any:
    """``layout_client`` for a long-running stage (the pipeline, the scorer, the learner): a
    cluster client is made only once a node answers (one Redis's client connects at its first
    command, where the stage's own retries take over), so a stage started before its Redis
    Cluster waits, saying so every few seconds, instead of failing; ``stop`` ends the wait by
    raising the last error. ``make`` makes the client instead (the writer's own)."""
    waited = 0
    while True:
        try:
            client = make() if make is not None else layout_client(settings, role)
        except _WAITED as exc:
            # nodes up but slots not yet all assigned: a cluster still forming; any other
            # cluster error (cluster mode off on that node, a refused login) is not waited out
            forming = "slots are not covered" in str(exc)
            if not isinstance(exc, REDIS_DOWN) and not forming:
                raise
            if stop.is_set():
                raise
            HEALTH.degraded(component, "redis", exc)
            if waited % 10 == 0:
                log.warning(
                    "redis_unreachable component=%s error=%s: the cluster does not answer "
                    "(or is still forming), retrying every 1 s",
                    component,
                    exc,
                )
            waited += 1
            stop.wait(1.0)
            continue
        if waited:
            HEALTH.healthy(component, "redis")
            log.warning("redis_reachable component=%s after %d s", component, waited)
        return client


def async_layout_client(settings: Settings, role: Role = "reader", **kwargs: Any) -> Any:
    """``layout_client`` for asyncio code: ``redis.asyncio.Redis`` or its ``RedisCluster``
    (which learns the layout at its first command)."""
    url = settings.redis_conninfo(role)
    if settings.redis_layout == "cluster":
        return AsyncRedisCluster.from_url(_cluster_url(url), protocol=2, **kwargs)
    return redis.asyncio.Redis.from_url(url, protocol=2, **kwargs)


def store_for(
    settings: Settings,
    features: FeatureSet,
    *,
    ns: str | None = None,
    client: redis.Redis | RedisCluster | None = None,
) -> FeatureStore:
    """The feature store of ``settings.redis_layout`` (the reader user's client unless
    ``client`` is given): ``FeatureStore`` on one Redis, ``ClusterFeatureStore`` on a cluster.
    Every stage that reads features takes its store here (the scorer, the API through
    ``async_store_for``, drift's stale-entity check, ``features verify`` / ``get``)."""
    ns = ns or settings.namespace
    client = client if client is not None else layout_client(settings)
    if isinstance(client, RedisCluster):
        return ClusterFeatureStore(
            client, features, KeyLayout(ns, "", "cluster", settings.redis_cluster_shards)
        )
    return FeatureStore(client, features, ns)


def async_store_for(
    settings: Settings,
    features: FeatureSet,
    client: redis.asyncio.Redis | AsyncRedisCluster,
    *,
    ns: str | None = None,
) -> AsyncFeatureStore:
    """``store_for`` for asyncio code, on ``client`` (``async_layout_client``)."""
    ns = ns or settings.namespace
    if isinstance(client, AsyncRedisCluster):
        return AsyncClusterFeatureStore(
            client, features, KeyLayout(ns, "", "cluster", settings.redis_cluster_shards)
        )
    return AsyncFeatureStore(client, features, ns)
