"""A Redis started before it had users (no ACL file) gets them from ``apply_acl``, idempotently,
and keeps its ``default`` user as it was, so clients already using it go on working. A Redis of
its own, started here and stopped by its pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from freshloop.core.settings import Settings
from freshloop.stack.redis_acl import admin_client, apply_acl


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def legacy_redis(tmp_path: Path) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed ('make setup' installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_running_redis_gets_the_users_and_keeps_default(legacy_redis: int) -> None:
    s = Settings(redis_url=f"redis://127.0.0.1:{legacy_redis}/0")
    said: list[str] = []
    for _ in range(2):  # idempotent: the second time through the admin user
        client = admin_client(s, "127.0.0.1", legacy_redis)
        try:
            assert apply_acl(client, s, said.append) is False  # default left as it is
        finally:
            client.close()
    assert "default user stays open until it restarts" in said[0]
    users = set(redis.Redis(port=legacy_redis, decode_responses=True).acl_users())
    assert users == {"default", "freshloop_admin", s.redis_user, s.redis_read_user}
    assert redis.Redis(port=legacy_redis).ping()  # old clients still work
    writer = redis.Redis.from_url(s.redis_conninfo())
    reader = redis.Redis.from_url(s.redis_conninfo("reader"))
    writer.hset("k", "a", "1")
    assert reader.hgetall("k") == {b"a": b"1"}
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.hset("k", "b", "2")
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.flushall()
    # a changed password is applied to the running server
    changed = s.model_copy(update={"redis_password": s.redis_read_password})
    client = admin_client(changed, "127.0.0.1", legacy_redis)
    apply_acl(client, changed)
    client.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(s.redis_conninfo()).ping()
    assert redis.Redis.from_url(changed.redis_conninfo()).ping()
