"""``freshloop stack`` with ``redis_layout=cluster``: three primaries on loopback that form one
Redis Cluster holding every slot, each with the single Redis's users, append-only file and no
eviction; ``down`` stops them all and ``up`` brings the same cluster (and its data) back. A
cluster of its own on free ports, in a state folder of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from freshloop.core.settings import REDIS_ADMIN_USER, Settings
from freshloop.stack import Stack
from freshloop.stack.redis_cluster import free_cluster_base, slot_ranges

pytestmark = pytest.mark.integration


def _free_base() -> int:
    """A port p with p, p+1, p+2 and their cluster bus ports (+10000) free."""
    base = free_cluster_base(3)
    if base is None:
        pytest.skip("no three consecutive free ports")
    return base


def _admin(settings: Settings, port: int) -> redis.Redis:
    return redis.Redis(
        port=port,
        username=REDIS_ADMIN_USER,
        password=settings.redis_admin_password.get_secret_value(),
    )


def test_slots_split_evenly_and_completely() -> None:
    ranges = slot_ranges(3)
    assert ranges == [(0, 5460), (5461, 10921), (10922, 16383)]
    assert sum(hi - lo + 1 for lo, hi in ranges) == 16384


def test_the_stack_starts_stops_and_restarts_a_cluster(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed ('make setup' installs it)")
    base = _free_base()
    settings = Settings(
        home=tmp_path,
        redis_layout="cluster",
        redis_url=f"redis://127.0.0.1:{base}/0",
    )
    ports = settings.redis_cluster_port_list
    assert ports == (base, base + 1, base + 2)
    stack = Stack(settings)
    stack.setup = lambda: None  # type: ignore[method-assign]
    try:
        assert stack.up(["redis"]) == ["redis", "redis-2", "redis-3"]
        rows = {r.name: r for r in stack.status() if r.name.startswith("redis")}
        assert {n: (r.state, r.healthy) for n, r in rows.items()} == {
            "redis": ("running", True),
            "redis-2": ("running", True),
            "redis-3": ("running", True),
        }
        for port in ports:
            admin = _admin(settings, port)
            info = admin.execute_command("CLUSTER", "INFO").decode()
            assert "cluster_state:ok" in info
            assert "cluster_slots_assigned:16384" in info
            assert "cluster_known_nodes:3" in info
            assert admin.config_get("appendonly") == {"appendonly": "yes"}
            assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port).ping()  # default is off
            admin.close()
        writer = RedisCluster.from_url(settings.redis_conninfo("writer").rsplit("/", 1)[0])
        reader = RedisCluster.from_url(settings.redis_conninfo("reader").rsplit("/", 1)[0])
        assert sorted(n.port for n in writer.get_primaries()) == list(ports)
        keys = [f"k{i}" for i in range(30)]  # spread over every primary
        assert {writer.get_node_from_key(k).port for k in keys} == set(ports)
        for key in keys:
            writer.set(key, key)
        assert reader.mget_nonatomic(keys) == [k.encode() for k in keys]
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.set("k0", "x")
        writer.close()
        reader.close()

        assert stack.up(["redis"]) == []
        assert stack.down(["redis"]) == ["redis-3", "redis-2", "redis"]
        assert all(r.state == "down" for r in stack.status() if r.name.startswith("redis"))
        assert stack.up(["redis"]) == ["redis", "redis-2", "redis-3"]  # rejoins, same slots
        writer = RedisCluster.from_url(settings.redis_conninfo("writer").rsplit("/", 1)[0])
        assert writer.mget_nonatomic(keys) == [k.encode() for k in keys]  # append-only files
        writer.close()
        # one node killed -9 and started again rejoins the cluster
        stack.kill("redis-2")
        assert stack.up(["redis"]) == ["redis-2"]
        admin = _admin(settings, ports[1])
        assert "cluster_state:ok" in admin.execute_command("CLUSTER", "INFO").decode()
        admin.close()
    finally:
        stack.down(["redis"])
