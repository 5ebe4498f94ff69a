"""docker-compose.yml cannot run here (no Docker engine): check it parses and agrees with the
settings' defaults and the connector template."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from connectors.config import PASSWORD_ENV
from freshloop.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


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
