"""Connector lifecycle over Connect's REST API, on a connector of the test's own."""

from __future__ import annotations

import pytest

from connectors import (
    ConnectClient,
    ConnectorValidationError,
    apply_connector,
    captured_tables,
    render_config,
)
from freshloop.core.settings import Settings

pytestmark = pytest.mark.integration


def test_apply_is_idempotent_and_lifecycle_works(isolated_connector: Settings) -> None:
    settings = isolated_connector
    tables = captured_tables(())
    first = apply_connector(settings, tables=tables)
    assert (first.action, first.state) == ("created", "RUNNING")
    second = apply_connector(settings, tables=tables)
    assert (second.action, second.state) == ("unchanged", "RUNNING")

    with ConnectClient(settings.connect_url) as client:
        stored = client.config(settings.connector_name)
        assert stored is not None
        # The secret is a reference the worker resolves, never the password itself.
        assert stored["database.password"] == "${env:FRESHLOOP_CDC_PASSWORD}"
        assert settings.cdc_password.get_secret_value() not in stored.values()

        client.pause(settings.connector_name)
        client.wait_state(settings.connector_name, "PAUSED")
        client.resume(settings.connector_name)
        client.wait_state(settings.connector_name, "RUNNING")
        client.restart(settings.connector_name)
        assert client.wait_running(settings.connector_name) == "RUNNING"

    changed = apply_connector(settings, tables=tables, overrides={"heartbeat.interval.ms": "5000"})
    assert changed.action == "updated"
    with ConnectClient(settings.connect_url) as client:
        assert client.delete(settings.connector_name) is True
        assert client.delete(settings.connector_name) is False


def test_bad_config_is_rejected_field_by_field(isolated_connector: Settings) -> None:
    config = render_config(isolated_connector, tables=captured_tables(()))
    config.update({"plugin.name": "wal2json_nope", "database.port": "not-a-port"})
    with ConnectClient(isolated_connector.connect_url) as client:
        with pytest.raises(ConnectorValidationError) as info:
            client.apply(isolated_connector.connector_name, config)
        assert client.config(isolated_connector.connector_name) is None  # nothing was created
    errors = info.value.errors
    assert set(errors) == {"plugin.name", "database.port"}
    assert any("pgoutput" in e for e in errors["plugin.name"])
    assert any("integer" in e.lower() for e in errors["database.port"])
