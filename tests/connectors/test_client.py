"""The REST client and the CLI fail with one clear line when Connect is unreachable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from connectors import ConnectClient, ConnectError, snapshot_signal

_NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_cli_names_the_url_when_connect_is_unreachable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "freshloop.app.cli", "connectors", "status"],
        env={**os.environ, "FRESHLOOP_CONNECT_URL": _NOWHERE},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert _NOWHERE in lines[0] and "unreachable" in lines[0]


def test_client_raises_connect_error_naming_the_url() -> None:
    with ConnectClient(_NOWHERE, timeout=1) as client, pytest.raises(ConnectError, match=_NOWHERE):
        client.connectors()


def test_snapshot_signal_names_schema_qualified_tables() -> None:
    row_id, kind, data = snapshot_signal(["payments", "other.t"])
    assert kind == "execute-snapshot" and len(row_id) <= 42
    assert data == '{"data-collections":["public.payments","other.t"],"type":"incremental"}'
    assert snapshot_signal(["payments"])[0] != row_id
