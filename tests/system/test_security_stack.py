"""The local stack locks its doors: Redis users with the commands their role needs, Kafka
Connect with only the environment and config providers its connector needs.

The first tests only read (and try commands that are refused), so they run on any stack whose
Redis has the users (``freshloop stack up`` adds them to a running one). Those marked ``fault``
restart Connect or check what only a stack started with this code has (the ``default`` user
off): give them a stack of their own (``make faults``). On a Redis Cluster run every primary has
the same users: the commands go through the cluster's clients, the dry runs to every primary.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from freshloop.core.settings import Settings
from freshloop.stack import Stack
from tests.redis_layout import client_for, scan_keys

pytestmark = pytest.mark.integration

_DEBEZIUM = "io.debezium.connector.postgresql.PostgresConnector"


def _servers(client: Any) -> list[Any]:
    """The one Redis, or a connection to every primary of a cluster (each has its own users)."""
    if isinstance(client, RedisCluster):
        return [node.redis_connection for node in client.get_primaries()]
    return [client]


def _dry_run(settings: Settings, user: str, *command: str) -> str:
    """Whether ``user`` may run ``command``: Redis answers without running it (ACL DRYRUN); on a
    cluster every primary must give the same answer (the one returned)."""
    admin = client_for(settings, "admin", decode_responses=True)
    try:
        answers = set()
        for server in _servers(admin):
            try:
                answers.add(str(server.execute_command("ACL", "DRYRUN", user, *command)))
            except redis.ResponseError as exc:
                answers.add(str(exc))
        assert len(answers) == 1, (command, answers)  # the same users on every primary
        return answers.pop()
    finally:
        admin.close()


# ---- Redis users -------------------------------------------------------------------------------
def test_the_reader_reads_and_cannot_write(stack_settings: Settings) -> None:
    s = stack_settings
    ns = f"acl{uuid.uuid4().hex[:8]}"
    writer = client_for(s, "writer")  # one Redis or a Redis Cluster
    reader = client_for(s, "reader")
    try:
        writer.hset(f"{ns}:h", mapping={"a": "1"})
        assert reader.hgetall(f"{ns}:h") == {b"a": b"1"}
        assert f"{ns}:h" in scan_keys(reader, f"{ns}:*")  # on every primary of a cluster
        for server in _servers(reader):
            assert server.info("server")["redis_version"]
        for attempt in (
            lambda: reader.hset(f"{ns}:h", "b", "2"),
            lambda: reader.delete(f"{ns}:h"),
            lambda: reader.eval("return redis.call('del', KEYS[1])", 1, f"{ns}:h"),
            lambda: reader.eval("return 1", 0),
            lambda: reader.set(f"{ns}:s", "x"),
            lambda: reader.expire(f"{ns}:h", 1),
            lambda: reader.keys(f"{ns}:*"),
            lambda: reader.config_get("maxmemory-policy"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        assert writer.hgetall(f"{ns}:h") == {b"a": b"1"}
        for command in (
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("SHUTDOWN",),
            ("DEBUG", "SLEEP", "0"),
            ("ACL", "LIST"),
            ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
        ):
            assert "no permissions" in _dry_run(s, s.redis_read_user, *command), command
    finally:
        writer.delete(f"{ns}:h")
        writer.close()
        reader.close()


def test_the_writer_writes_and_cannot_administer(stack_settings: Settings) -> None:
    s = stack_settings
    ns = f"acl{uuid.uuid4().hex[:8]}"
    writer = client_for(s, "writer")  # one Redis or a Redis Cluster
    try:
        assert writer.eval("return redis.call('hset', KEYS[1], 'a', 1)", 1, f"{ns}:h") == 1
        writer.expire(f"{ns}:h", 60)
        for server in _servers(writer):
            assert server.info("memory")["maxmemory_policy"]
            assert "maxmemory-policy" in server.config_get("maxmemory-policy")
        for attempt in (
            lambda: writer.config_set("maxmemory-policy", "noeviction"),  # harmless if it ran
            lambda: writer.acl_list(),
            lambda: writer.script_flush(),
            lambda: writer.execute_command("CLIENT", "LIST"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        for command in (
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("SHUTDOWN",),
            ("DEBUG", "SLEEP", "0"),
            ("CONFIG", "REWRITE"),
            ("ACL", "SETUSER", "x"),
            ("MONITOR",),
            ("FUNCTION", "FLUSH"),
            ("SWAPDB", "0", "1"),
            ("REPLICAOF", "h", "1"),
        ):
            assert "no permissions" in _dry_run(s, s.redis_user, *command), command
        assert _dry_run(s, s.redis_user, "HSET", f"{ns}:h", "a", "1") == "OK"
    finally:
        writer.delete(f"{ns}:h")
        writer.close()


# ---- only on a stack started with this code (its own, for make faults) -------------------------
@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.single_redis(
    "tries FLUSHALL in database 15 (a cluster has database 0 only) and reads the one Redis's "
    "ACL file (what each user may run is checked on every primary by the tests above)"
)
def test_redis_lets_no_one_in_without_a_user(stack_settings: Settings) -> None:
    s = stack_settings
    anonymous = redis.Redis.from_url(s.redis_url)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    writer = redis.Redis.from_url(s.redis_conninfo())
    writer.select(15)  # an empty database: nothing to lose if a refusal failed
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.flushdb()
    stack = Stack(s)
    (svc,) = stack.select(["redis"])
    aclfile = svc.root / "users.acl"
    assert stat.S_IMODE(aclfile.stat().st_mode) == 0o600
    text = aclfile.read_text()
    assert "user default off" in text
    for secret in (s.redis_password, s.redis_read_password, s.redis_admin_password):
        assert secret.get_secret_value() not in text  # only their SHA-256
    # a second `stack up` on the running stack changes nothing and keeps default off
    assert stack.up(["redis"]) == []
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(s.redis_url).ping()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.slow
@pytest.mark.fault
def test_connect_gets_only_what_its_connector_needs(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connect restarted from a shell holding a secret: the secret stays out of its process,
    and no connector config can read it, another variable or a file."""
    s = stack_settings
    secret_name = f"FRESHLOOP_TEST_SECRET_{uuid.uuid4().hex[:6].upper()}"
    secret = f"do-not-leak-{uuid.uuid4().hex}"
    monkeypatch.setenv(secret_name, secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    stack = Stack(s)
    stack.down(["connect"])
    assert stack.up(["connect"]) == ["connect"]
    (svc,) = stack.select(["connect"])
    pid = stack.pid_of(svc)
    assert pid is not None
    env = _environ(pid)
    assert secret not in Path(f"/proc/{pid}/environ").read_text(errors="replace")
    assert set(env) <= {
        "PATH",
        "JAVA_HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "FRESHLOOP_CDC_PASSWORD",
    }, sorted(env)
    assert env["FRESHLOOP_CDC_PASSWORD"] == s.cdc_password.get_secret_value()

    # its REST API listens on loopback only (tests/system/test_security.py checks every port)
    assert s.connect_url.startswith(("http://127.", "http://localhost", "http://[::1]"))

    path_value = env["PATH"]
    name = f"probe-{uuid.uuid4().hex[:8]}"
    probes = {
        "database.hostname": "${env:PATH}",
        "database.user": f"${{env:{secret_name}}}",
        "database.dbname": "${file:/etc/hostname:x}",
        "topic.prefix": "${env:PATH}",
        "slot.name": "${directory:/etc:hostname}",
    }
    config = {
        "connector.class": _DEBEZIUM,
        "name": name,
        "tasks.max": "1",
        "database.port": str(s.postgres_port),
        "database.password": "x",
        "plugin.name": "pgoutput",
        "snapshot.mode": "no_data",
        **probes,
    }
    with httpx.Client(base_url=s.connect_url, timeout=60) as http:
        answers = [http.put(f"/connector-plugins/{_DEBEZIUM}/config/validate", json=config).text]
        override = {
            **config,
            "producer.override.config.providers": "file",
            "producer.override.config.providers.file.class": (
                "org.apache.kafka.common.config.provider.FileConfigProvider"
            ),
        }
        refused = http.put(f"/connector-plugins/{_DEBEZIUM}/config/validate", json=override)
        answers.append(refused.text)
        assert "producer.override.config.providers" in refused.text
        assert refused.json()["error_count"] >= 1  # the None override policy refuses it
        created = http.post("/connectors", json={"name": name, "config": config})
        try:
            answers.append(created.text)
            for path in (
                f"/connectors/{name}/config",
                f"/connectors/{name}/status",
                f"/connectors/{name}/tasks",
            ):
                answers.append(http.get(path).text)
        finally:
            http.delete(f"/connectors/{name}")
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""
    for text in answers:
        assert secret not in text
        assert path_value not in text, "a connector config read Connect's PATH"
        if len(hostname) >= 6:
            assert f'"{hostname}"' not in text, "a connector config read a file"


@pytest.mark.slow
@pytest.mark.fault
def test_the_state_folder_is_private(stack_settings: Settings) -> None:
    stack = Stack(stack_settings)
    if os.environ.get("FRESHLOOP_HOME") is None:
        pytest.skip("the default state folder may predate this check: give the test its own")
    assert stat.S_IMODE(stack.home.stat().st_mode) == 0o700
    for folder in (stack.run_dir, stack.log_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
