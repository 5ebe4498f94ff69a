"""Without services: each Redis role's connection, the ACL file, and what Connect is given
(environment, config providers, REST listener)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from freshloop.core.exceptions import StackError
from freshloop.core.settings import Settings
from freshloop.stack.redis_acl import READER_RULES, WRITER_RULES, acl_file_text, write_acl_file
from freshloop.stack.services import Connect, Redis, build_services


def test_each_role_connects_as_its_own_user() -> None:
    s = Settings(redis_password=SecretStr("w p/@:x"), redis_read_url="redis://[::1]:7001/2")
    assert s.redis_conninfo() == "redis://freshloop_writer:w%20p%2F%40%3Ax@127.0.0.1:6379/0"
    assert s.redis_conninfo("reader") == (
        "redis://freshloop_reader:redis-reader-local-only@[::1]:7001/2"
    )
    assert s.redis_conninfo("admin").startswith("redis://freshloop_admin:")
    assert Settings().redis_conninfo("reader").endswith("@127.0.0.1:6379/0")
    explicit = Settings(redis_url="redis://me:mine@10.0.0.1:6379/1")
    assert explicit.redis_conninfo() == "redis://me:mine@10.0.0.1:6379/1"
    with pytest.raises(ValueError, match="redis://host:port/db"):
        Settings(redis_read_url="http://x:1/0")


def test_the_acl_file_holds_hashes_and_turns_default_off(tmp_path: Path) -> None:
    s = Settings(redis_password=SecretStr("writer-secret-1234"))
    text = acl_file_text(s)
    lines = {line.split()[1]: line.split()[2:] for line in text.splitlines()}
    assert set(lines) == {"freshloop_admin", "freshloop_writer", "freshloop_reader", "default"}
    assert lines["default"][0] == "off"
    assert lines["freshloop_writer"][:2] == ["on", lines["freshloop_writer"][1]]
    assert lines["freshloop_writer"][1].startswith("#") and len(lines["freshloop_writer"][1]) == 65
    assert lines["freshloop_writer"][2:] == list(WRITER_RULES)
    assert lines["freshloop_reader"][2:] == list(READER_RULES)
    assert "writer-secret-1234" not in text
    for rule in ("+flushall", "+@admin", "+@dangerous", "+config|set", "+acl", "+debug"):
        assert rule not in WRITER_RULES and rule not in READER_RULES
    assert "%R~*" in READER_RULES and "+@write" not in READER_RULES
    path = write_acl_file(tmp_path / "users.acl", s)
    assert path.stat().st_mode & 0o077 == 0


def test_redis_starts_with_its_acl_file(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    (redis,) = [svc for svc in build_services(s) if isinstance(svc, Redis)]
    redis.prepare()
    command = redis.command()
    assert command[command.index("--aclfile") + 1] == str(redis.aclfile)
    assert redis.aclfile.read_text() == acl_file_text(s)


def test_servers_start_without_the_shells_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shell-secret")
    monkeypatch.setenv("FRESHLOOP_POSTGRES_PASSWORD", "owner-secret")
    monkeypatch.setenv("FRESHLOOP_MODEL_SIGNING_KEY", "signing-secret-123456")
    s = Settings(home=tmp_path, cdc_password=SecretStr("cdc-secret"))
    for svc in build_services(s):
        env = svc.env()
        assert "shell-secret" not in env.values(), svc.name
        assert "owner-secret" not in env.values() and "signing-secret-123456" not in env.values()
        assert "PATH" in env
        if isinstance(svc, Connect):
            assert env["FRESHLOOP_CDC_PASSWORD"] == "cdc-secret"
        else:
            assert "FRESHLOOP_CDC_PASSWORD" not in env, svc.name


def test_connect_resolves_only_its_connectors_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Settings(home=tmp_path)
    (connect,) = [svc for svc in build_services(s) if isinstance(svc, Connect)]
    jars = [_Jars(tmp_path / "kafka"), _Jars(tmp_path / "plugins" / "debezium")]
    monkeypatch.setattr("freshloop.stack.services.jar_sets", lambda home: jars)
    connect.prepare()
    props = dict(line.split("=", 1) for line in connect.properties.read_text().splitlines() if line)
    assert props["config.providers"] == "env"
    assert props["config.providers.env.param.allowlist.pattern"] == "^FRESHLOOP_CDC_PASSWORD$"
    assert props["connector.client.config.override.policy"] == "None"
    assert props["listeners"] == "http://127.0.0.1:8083"
    command = connect.command()
    provider = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    assert f"-Dorg.apache.kafka.automatic.config.providers={provider}" in command
    assert command.index(connect.main_class) > command.index(
        f"-Dorg.apache.kafka.automatic.config.providers={provider}"
    )


class _Jars:
    def __init__(self, target: Path) -> None:
        self.target = target


def test_connect_refuses_a_rest_api_beyond_loopback(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, stack_bind="0.0.0.0")  # noqa: S104 - the case refused
    (connect,) = [svc for svc in build_services(s) if isinstance(svc, Connect)]
    with pytest.raises(StackError, match="loopback only"):
        connect.prepare()
