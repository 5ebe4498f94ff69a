"""Redis Cluster, the read side: ``FeatureStore``'s reads of entities kept under shard tags.

docs/redis-cluster.md, "Reads". A read names each entity by its cluster key
(``cluster_keys.KeyLayout.entity``) and sends the HGETALLs through the cluster client's
pipeline, which groups them by node: one round trip per node the keys live on. The hashes are
folded in the client exactly as on a single Redis (``store_read``); the server fold needs every
key in one slot and is not offered here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.store_read import FeatureStore, _Read, _Reads
from freshloop.core.settings import Settings

__all__ = ["ClusterFeatureStore", "cluster_client", "layout_client", "store_for"]


def cluster_client(redis_url: str, **kwargs: Any) -> RedisCluster:
    """A Redis Cluster client from a URL naming one primary (with its user and password;
    a cluster has database 0 only, so a ``/0`` path is dropped). RESP2, as ``FeatureStore``'s
    reads parse fastest."""
    url = urlsplit(redis_url)._replace(path="").geturl()
    return RedisCluster.from_url(url, protocol=2, **kwargs)


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
        read = super()._read(entity, keys, at)
        layout = self.keys
        read.names = [layout.entity(entity, key) for key in keys]
        read.unique = list(dict.fromkeys(read.names))
        return read

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


def layout_client(
    settings: Settings, role: Literal["writer", "reader", "admin"] = "reader"
) -> redis.Redis | RedisCluster:
    """A client of ``role`` for ``settings.redis_layout`` (RESP2): one Redis or the cluster."""
    if settings.redis_layout == "cluster":
        return cluster_client(settings.redis_conninfo(role))
    return redis.Redis.from_url(settings.redis_conninfo(role), protocol=2)


def store_for(
    settings: Settings,
    features: FeatureSet,
    *,
    ns: str | None = None,
    client: redis.Redis | RedisCluster | None = None,
) -> FeatureStore:
    """The feature store of ``settings.redis_layout`` (the reader user's client unless
    ``client`` is given): ``FeatureStore`` on one Redis, ``ClusterFeatureStore`` on a cluster."""
    ns = ns or settings.namespace
    client = client if client is not None else layout_client(settings)
    if isinstance(client, RedisCluster):
        return ClusterFeatureStore(
            client, features, KeyLayout(ns, "", "cluster", settings.redis_cluster_shards)
        )
    return FeatureStore(client, features, ns)
