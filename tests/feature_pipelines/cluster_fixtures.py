"""Redis in both layouts for the feature tests: ``redis_layout`` is ``single`` (the shared
Redis, a namespace of the test's own) or ``cluster`` (a Redis Cluster of three primaries).

The cluster is ``FRESHLOOP_TEST_REDIS_CLUSTER_URL`` when set (a running cluster's primary, as
``redis://host:port``; the writer user of the settings), else a private one this session starts
with ``freshloop stack`` in a folder of its own on free ports and stops at the end: never the
shared Redis. ``tests/feature_pipelines/conftest.py`` makes them every feature test's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.cluster import RedisCluster

from freshloop.core.settings import Settings

__all__ = ["LayoutRedis", "cluster_client", "redis_cluster", "redis_layout"]


def cluster_client(settings: Settings) -> RedisCluster:
    """A cluster client of the writer user (a cluster has database 0 only: no path)."""
    return RedisCluster.from_url(urlsplit(settings.redis_conninfo())._replace(path="").geturl())


@pytest.fixture(scope="session")
def redis_cluster(base_settings: Settings) -> Iterator[Settings]:
    """Settings whose redis_url is a primary of a running Redis Cluster."""
    url = os.environ.get("FRESHLOOP_TEST_REDIS_CLUSTER_URL")
    if url:
        yield base_settings.model_copy(update={"redis_layout": "cluster", "redis_url": url})
        return
    from freshloop.core.exceptions import StackError
    from freshloop.stack.redis_cluster import private_cluster

    try:
        with private_cluster(base_settings) as settings:
            yield settings
    except StackError as exc:
        pytest.skip(str(exc))


@dataclass
class LayoutRedis:
    """A writer client of one layout and a namespace of the test's own in it."""

    layout: str
    client: Any  # redis.Redis or RedisCluster
    ns: str
    settings: Settings

    def drop(self) -> None:
        """Delete the namespace's keys (every primary of a cluster)."""
        if isinstance(self.client, RedisCluster):
            nodes = self.client.get_primaries()
            for node in nodes:
                conn = node.redis_connection
                keys = list(conn.scan_iter(match=f"{self.ns}:*", count=1000))
                for key in keys:
                    conn.delete(key)
        else:
            keys = list(self.client.scan_iter(match=f"{self.ns}:*", count=1000))
            if keys:
                self.client.delete(*keys)


@pytest.fixture(params=["single", "cluster"])
def redis_layout(request: pytest.FixtureRequest) -> Iterator[LayoutRedis]:
    """The test once against a single Redis and once against a Redis Cluster."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "single":
        settings: Settings = request.getfixturevalue("stack_settings")
        client: Any = redis.Redis.from_url(settings.redis_conninfo())
    else:
        settings = request.getfixturevalue("redis_cluster")
        client = cluster_client(settings)
    target = LayoutRedis(request.param, client, ns, settings)
    try:
        yield target
    finally:
        target.drop()
        client.close()
