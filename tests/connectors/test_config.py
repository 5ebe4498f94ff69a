"""The connector template renders a complete, secret-free Debezium config from the settings."""

from __future__ import annotations

import json

import pytest

from connectors import LEARNING_TABLES, captured_tables, render_config
from connectors.config import TEMPLATE_PATH
from freshloop.core.settings import Settings

SAMPLE = ("payment_outcomes", "payments")  # what the sample feature set reads


def test_template_holds_no_secret_and_every_placeholder_is_filled() -> None:
    text = TEMPLATE_PATH.read_text()
    assert "freshloop_cdc" not in text and "${cdc_password}" in text
    config = render_config(Settings(), tables=SAMPLE)
    assert not [v for v in config.values() if "${" in v and not v.startswith("${env:")]
    assert set(config) == set(json.loads(text))


def test_settings_that_keep_money_exact_and_latency_low() -> None:
    s = Settings(poll_interval_ms=7, topic_prefix="shop", cdc_user="cdc", topic_partitions=6)
    config = render_config(s, tables=SAMPLE)
    assert config["plugin.name"] == "pgoutput"
    assert config["decimal.handling.mode"] == "string"  # never double
    assert config["tombstones.on.delete"] == "true"
    assert config["value.converter.schemas.enable"] == "false"
    assert config["publication.name"] == "freshloop_pub" and config["slot.name"] == "shop_slot"
    assert config["topic.prefix"] == "shop"
    assert config["database.user"] == "cdc"
    assert config["poll.interval.ms"] == "7"
    assert config["topic.creation.default.partitions"] == "6"
    assert (
        int(config["heartbeat.interval.ms"]) > 0 and "heartbeat" in config["heartbeat.action.query"]
    )
    assert config["signal.data.collection"] == "public.freshloop_signal"


def test_secret_modes() -> None:
    s = Settings(cdc_password="s3cret")  # type: ignore[arg-type]
    assert render_config(s, tables=SAMPLE)["database.password"] == "${env:FRESHLOOP_CDC_PASSWORD}"
    assert render_config(s, tables=SAMPLE, secret_mode="inline")["database.password"] == "s3cret"


def test_database_host_follows_dsn_unless_overridden() -> None:
    s = Settings(postgres_dsn="postgresql://u@db.internal:6543/shop")
    config = render_config(s, tables=SAMPLE)
    assert (config["database.hostname"], config["database.port"]) == ("db.internal", "6543")
    assert config["database.dbname"] == "shop"
    assert (
        render_config(s.model_copy(update={"connector_database_host": "postgres"}), tables=SAMPLE)[
            "database.hostname"
        ]
        == "postgres"
    )


def test_captured_tables_are_the_feature_tables_and_the_learning_loops() -> None:
    assert LEARNING_TABLES == ("payments", "payment_outcomes")
    assert captured_tables(SAMPLE) == SAMPLE  # the sample reads what the learning loop reads
    assert captured_tables(["orders", "deliveries", "orders"]) == (
        "deliveries",
        "orders",
        "payment_outcomes",
        "payments",
    )
    assert captured_tables(()) == SAMPLE


def test_the_include_list_is_rendered_from_the_tables_and_an_override_wins() -> None:
    tables = captured_tables({"orders"})
    config = render_config(Settings(), tables=tables)
    assert config["table.include.list"] == "public.orders,public.payment_outcomes,public.payments"
    mine = {"table.include.list": "public.orders"}
    assert render_config(Settings(), tables=tables, overrides=mine)["table.include.list"] == (
        "public.orders"
    )
    assert render_config(Settings(), tables=(), overrides=mine)["table.include.list"] == (
        "public.orders"
    )
    with pytest.raises(ValueError, match="no table to capture"):
        render_config(Settings(), tables=())  # Debezium would capture every table
