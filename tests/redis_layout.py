"""The Redis layout the whole suite runs on, and layout-blind helpers for tests that touch
Redis themselves.

``FRESHLOOP_TEST_REDIS_LAYOUT`` is ``single`` (default: the stack's Redis) or ``cluster``: then
``stack_settings`` names a Redis Cluster of three primaries (``cluster_fixtures.redis_cluster``)
and every stage, fixture and oracle check of the run works on it (``make test-cluster``).
A test that exercises something only one Redis has (the server-side fold, a single server's
AOF or ACL file) carries ``@pytest.mark.single_redis("why")`` and is skipped on the cluster
with that reason; a test parametrized over both layouts (``redis_layout``) runs its ``single``
case in the single run and its ``cluster`` case in both.
"""

from __future__ import annotations

import os
from typing import Any

from redis.cluster import RedisCluster

from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_read import layout_client
from freshloop.core.settings import Settings

__all__ = [
    "SUITE_LAYOUT",
    "client_for",
    "drop_keys",
    "entity_key",
    "key_layout",
    "scan_keys",
]

LAYOUTS = ("single", "cluster")
SUITE_LAYOUT = os.environ.get("FRESHLOOP_TEST_REDIS_LAYOUT", "single").strip() or "single"
if SUITE_LAYOUT not in LAYOUTS:
    _msg = (
        f"FRESHLOOP_TEST_REDIS_LAYOUT={SUITE_LAYOUT!r}: set it to 'single' (the stack's Redis) "
        "or 'cluster' (a private Redis Cluster of three primaries), or leave it unset"
    )
    raise RuntimeError(_msg)


def client_for(settings: Settings, role: str = "writer", **kwargs: Any) -> Any:
    """A client of ``role`` for ``settings``' layout: ``redis.Redis`` or ``RedisCluster``."""
    return layout_client(settings, role, **kwargs)  # type: ignore[arg-type]


def _nodes(client: Any) -> list[Any]:
    if isinstance(client, RedisCluster):
        return [node.redis_connection for node in client.get_primaries()]
    return [client]


def scan_keys(client: Any, pattern: str) -> list[str]:
    """Every key matching ``pattern`` on one Redis or on every primary of a cluster."""
    out = []
    for conn in _nodes(client):
        for raw in conn.scan_iter(match=pattern, count=1000):
            out.append(raw.decode() if isinstance(raw, bytes) else raw)
    return out


def drop_keys(client: Any, pattern: str) -> int:
    """Delete every key matching ``pattern`` (node by node: keys of many slots); how many."""
    dropped = 0
    for conn in _nodes(client):
        batch = [raw for raw in conn.scan_iter(match=pattern, count=1000)]
        for key in batch:  # one by one: a node refuses a DEL of keys of several slots
            dropped += int(conn.delete(key))
    return dropped


def key_layout(settings: Settings, ns: str | None = None, group: str = "") -> KeyLayout:
    """Key names of ``ns`` (default: the settings' namespace) in the settings' layout."""
    return KeyLayout(
        ns or settings.namespace, group, settings.redis_layout, settings.redis_cluster_shards
    )


def entity_key(settings: Settings, entity: str, key: Any, ns: str | None = None) -> str:
    """The Redis key of one entity's feature hash in the settings' layout."""
    return key_layout(settings, ns).entity(entity, key)
