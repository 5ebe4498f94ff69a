"""docker-compose.yml cannot run here (no Docker engine): check it parses and agrees with the
settings' defaults and the connector template."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from connectors.config import PASSWORD_ENV
from freshloop.core.settings import Settings

COMPOSE = Path(__file__).resolve().parents[3] / "docker-compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _published(service: dict) -> set[tuple[str, int]]:
    out = set()
    for item in service.get("ports", []):
        host, published, _target = item.rsplit(":", 2)
        out.add((host, int(published)))
    return out


def test_services_and_ports_agree_with_settings() -> None:
    services = _compose()["services"]
    s = Settings()
    assert set(services) >= {"postgres", "redis", "kafka", "connect"}
    expected = {
        "postgres": s.postgres_port,
        "redis": s.redis_port,
        "kafka": s.kafka_port,
        "connect": s.connect_port,
    }
    for name, port in expected.items():
        assert _published(services[name]) == {("127.0.0.1", port)}, name  # loopback only


def test_environment_uses_freshloop_settings_and_their_defaults() -> None:
    text = COMPOSE.read_text()
    s = Settings()
    fields = {f"FRESHLOOP_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"\$\{(FRESHLOOP_[A-Z_]+)(?::-([^}]*))?\}", text))
    compose_only = {"FRESHLOOP_CONNECT_IMAGE"}
    assert {var for var, _ in used} - compose_only <= fields
    defaults = dict(used)
    assert defaults["FRESHLOOP_POSTGRES_PASSWORD"] == s.postgres_password.get_secret_value()
    assert defaults["FRESHLOOP_CDC_PASSWORD"] == s.cdc_password.get_secret_value()
    assert defaults["FRESHLOOP_TOPIC_PREFIX"] == s.topic_prefix

    services = _compose()["services"]
    pg_env = services["postgres"]["environment"]
    assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]) == (s.postgres_user, s.postgres_db)
    assert "wal_level=logical" in services["postgres"]["command"]
    assert "--appendonly" in services["redis"]["command"]
    connect_env = services["connect"]["environment"]
    assert PASSWORD_ENV in connect_env
    assert connect_env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


# ---- the Freshloop services, built from the Dockerfile -----------------------------------------
DOCKERFILE = COMPOSE.parent / "Dockerfile"
_DEFAULT = re.compile(r"\$\{(FRESHLOOP_[A-Z_]+):-([^}]*)\}")
_APPS = {"init", "features", "learner", "drift", "api"}


def _resolved_env(service: dict) -> dict[str, str]:
    """The service's FRESHLOOP_ environment with ${VAR:-default} read as its default."""
    return {
        k: _DEFAULT.sub(lambda m: m.group(2), str(v))
        for k, v in service.get("environment", {}).items()
        if k.startswith("FRESHLOOP_")
    }


def test_freshloop_services_run_existing_commands_of_the_built_image() -> None:
    from click import Group

    from freshloop.app.cli import cli

    services = _compose()["services"]
    assert set(services) >= _APPS
    expected = {
        "features": ["learn", "serve"],
        "learner": ["learn", "run"],
        "drift": ["drift", "run"],
        "api": ["api", "serve"],
    }
    for name, words in expected.items():
        service = services[name]
        assert service["build"] == "." and service["image"] == "freshloop:local", name
        assert service["command"][:2] == words, name
        group = cli.get_command(None, words[0])  # type: ignore[arg-type]
        assert isinstance(group, Group) and group.get_command(None, words[1]), words  # type: ignore[arg-type]
    init = " ".join(services["init"]["command"])
    assert "freshloop db init" in init and "freshloop connectors apply" in init
    for name in _APPS - {"init"}:
        assert services[name]["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["freshloop"]' in text
    for folder in (
        "freshloop",
        "connectors",
        "feature_pipelines",
        "online_learning",
        "drift",
        "sql",
    ):
        assert f"COPY {folder} ./{folder}" in text, folder  # db init reads sql/ beside the code


def test_freshloop_services_settings_point_at_the_compose_services() -> None:
    services = _compose()["services"]
    for name in _APPS:
        env = _resolved_env(services[name])
        assert set(env) <= {f"FRESHLOOP_{f.upper()}" for f in Settings.model_fields}, name
        s = Settings(**{k.removeprefix("FRESHLOOP_").lower(): v for k, v in env.items()})
        defaults = Settings()
        assert s.postgres_password.get_secret_value() == (
            defaults.postgres_password.get_secret_value()
        )
        assert s.model_signing_key.get_secret_value() == (
            defaults.model_signing_key.get_secret_value()
        )
        # each address is a compose service at the port it listens on inside the network
        assert (s.postgres_host, s.postgres_port) == ("postgres", 5432), name
        assert s.redis_url.startswith("redis://redis:6379/"), name
        kafka_internal = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        assert f"://{s.kafka_bootstrap}" in kafka_internal, name
        assert s.connect_url == "http://connect:8083" and s.connector_database_host == "postgres"
    api = services["api"]
    s = Settings()
    assert _published(api) == {("127.0.0.1", s.api_port)}  # loopback only, the default port
    command = api["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - in its container
    assert command[command.index("--port") + 1] == str(s.api_port)
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_compose_locks_redis_and_connect_as_the_local_stack_does() -> None:
    from freshloop.core.defaults import refuse_public_defaults
    from freshloop.stack.redis_acl import READER_RULES, WRITER_RULES
    from freshloop.stack.services import _ENV_PROVIDER

    services = _compose()["services"]
    command = services["redis"]["command"]
    users = {
        rule.split()[0]: rule.split()
        for flag, rule in zip(command, command[1:], strict=False)
        if flag == "--user"
    }
    s = Settings()
    writer, reader = users[s.redis_user], users[s.redis_read_user]
    assert writer[3:] == list(WRITER_RULES) and reader[3:] == list(READER_RULES)
    default_password = s.redis_password.get_secret_value()
    assert writer[2] == ">${FRESHLOOP_REDIS_PASSWORD:-" + default_password + "}"
    assert users["default"][:2] == ["default", "off"]
    assert "freshloop_admin" in " ".join(services["redis"]["healthcheck"]["test"])
    connect = services["connect"]["environment"]
    allowed = connect["CONNECT_CONFIG_PROVIDERS_ENV_PARAM_ALLOWLIST_PATTERN"]
    assert allowed.replace("$$", "$") == f"^{PASSWORD_ENV}$"  # compose writes $ as $$
    assert connect["CONNECT_CONNECTOR_CLIENT_CONFIG_OVERRIDE_POLICY"] == "None"
    assert f"automatic.config.providers={_ENV_PROVIDER}" in connect["KAFKA_OPTS"]
    for name in _APPS:  # the defaults pass start-up because compose says it is a local stack
        env = _resolved_env(services[name])
        app = Settings(**{k.removeprefix("FRESHLOOP_").lower(): v for k, v in env.items()})
        assert app.env == "local"
        refuse_public_defaults(app)
