"""The Debezium connector configuration: a versioned JSON template, filled from the settings.

The template holds no secrets. By default the password is not put into the config either: it is
a reference ``${env:FRESHLOOP_CDC_PASSWORD}`` that the Connect worker resolves from its own
environment (Kafka's EnvVarConfigProvider), so it never lands in Connect's config topic or in
``GET /connectors/.../config``. ``secret_mode="inline"`` sends the password itself, for Connect
clusters that have no such provider configured.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from string import Template
from typing import Literal

from connectors.client import ApplyResult, ConnectClient
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics

__all__ = [
    "LEARNING_TABLES",
    "TEMPLATE_PATH",
    "apply_connector",
    "captured_tables",
    "render_config",
]

TEMPLATE_PATH = Path(__file__).parent / "postgres-connector.json"
# What the learning loop reads whatever the feature set: the scorer scores each new payment
# (online_learning/scoring_hook.py) and the learner joins outcomes to them (learner_process.py).
LEARNING_TABLES = ("payments", "payment_outcomes")
_PLAIN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")  # schema.table


def captured_tables(feature_tables: Iterable[str]) -> tuple[str, ...]:
    """The tables to capture: those a feature set reads (``FeatureSet.tables()``) and those the
    learning loop reads, each once, sorted.

    >>> captured_tables({"orders", "deliveries"})
    ('deliveries', 'orders', 'payment_outcomes', 'payments')
    """
    return tuple(sorted({*feature_tables, *LEARNING_TABLES}))


SecretMode = Literal["env", "inline"]
PASSWORD_ENV = "FRESHLOOP_CDC_PASSWORD"  # noqa: S105 - a variable name, not a secret


def render_config(
    settings: Settings,
    *,
    tables: Iterable[str],
    secret_mode: SecretMode = "env",  # noqa: S107
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The connector config Connect should hold, as a flat ``str -> str`` mapping: it captures
    ``tables`` (schema ``public``; ``captured_tables``) unless ``overrides`` sets
    ``table.include.list``."""
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
        "table_include_list": ",".join(f"public.{t}" for t in tables),
    }
    if not values["table_include_list"] and "table.include.list" not in (overrides or {}):
        msg = "the connector has no table to capture: pass tables=captured_tables(...)"
        raise ValueError(msg)  # an empty list would make Debezium capture every table
    template: dict[str, str] = json.loads(TEMPLATE_PATH.read_text())
    config = {key: Template(value).substitute(values) for key, value in template.items()}
    config.update(overrides or {})
    return config


def apply_connector(
    settings: Settings,
    *,
    tables: Iterable[str],
    secret_mode: SecretMode = "env",  # noqa: S107
    overrides: dict[str, str] | None = None,
    wait_s: float = 60.0,
) -> ApplyResult:
    """Create the change topics of the captured tables, then validate and apply the connector,
    and wait for it. ``tables``: what to capture (``captured_tables``), unless ``overrides``
    sets ``table.include.list`` (then the topics of its plain ``schema.table`` entries are
    created; a pattern's are left to Connect)."""
    config = render_config(settings, tables=tables, secret_mode=secret_mode, overrides=overrides)
    included = (
        m for e in config["table.include.list"].split(",") if (m := _PLAIN.match(e.strip()))
    )
    ensure_topics(
        settings.kafka_bootstrap,
        [settings.topic(m.group(2), m.group(1)) for m in included],
        settings.topic_partitions,
    )
    with ConnectClient(settings.connect_url) as client:
        return client.apply(settings.connector_name, config, wait_s=wait_s)
