"""The Debezium connector configuration: a versioned JSON template, filled from the settings.

The template holds no secrets. By default the password is not put into the config either: it is
a reference ``${env:FRESHLOOP_CDC_PASSWORD}`` that the Connect worker resolves from its own
environment (Kafka's EnvVarConfigProvider), so it never lands in Connect's config topic or in
``GET /connectors/.../config``. ``secret_mode="inline"`` sends the password itself, for Connect
clusters that have no such provider configured.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Literal

from connectors.client import ApplyResult, ConnectClient
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics

__all__ = ["CAPTURED_TABLES", "TEMPLATE_PATH", "apply_connector", "render_config"]

TEMPLATE_PATH = Path(__file__).parent / "postgres-connector.json"
CAPTURED_TABLES = ("customers", "merchants", "payments", "payment_outcomes")

SecretMode = Literal["env", "inline"]
PASSWORD_ENV = "FRESHLOOP_CDC_PASSWORD"  # noqa: S105 - a variable name, not a secret


def render_config(
    settings: Settings,
    *,
    secret_mode: SecretMode = "env",  # noqa: S107
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The connector config Connect should hold, as a flat ``str -> str`` mapping."""
    password = (
        f"${{env:{PASSWORD_ENV}}}"
        if secret_mode == "env"  # noqa: S105
        else settings.cdc_password.get_secret_value()
    )
    values = {
        "database_host": settings.connector_database_host or settings.postgres_host,
        "database_port": str(settings.postgres_port),
        "database_name": settings.postgres_db,
        "cdc_user": settings.cdc_user,
        "cdc_password": password,
        "topic_prefix": settings.topic_prefix,
        "slot_name": settings.slot_name,
        "publication_name": settings.publication_name,
        "poll_interval_ms": str(settings.poll_interval_ms),
        "replication_factor": "1",
        "partitions": str(settings.topic_partitions),
    }
    template: dict[str, str] = json.loads(TEMPLATE_PATH.read_text())
    config = {key: Template(value).substitute(values) for key, value in template.items()}
    config.update(overrides or {})
    return config


def apply_connector(
    settings: Settings,
    *,
    secret_mode: SecretMode = "env",  # noqa: S107
    overrides: dict[str, str] | None = None,
    wait_s: float = 60.0,
) -> ApplyResult:
    """Create the change topics, then validate and apply the connector, and wait for it."""
    ensure_topics(
        settings.kafka_bootstrap,
        [settings.topic(t) for t in CAPTURED_TABLES],
        settings.topic_partitions,
    )
    config = render_config(settings, secret_mode=secret_mode, overrides=overrides)
    with ConnectClient(settings.connect_url) as client:
        return client.apply(settings.connector_name, config, wait_s=wait_s)
