"""Starting the server: a port in use is one sentence naming the setting; the CLI is wired."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from freshloop.api.exceptions import ApiStartError
from freshloop.api.server import ApiServer
from freshloop.cli import cli
from freshloop.settings import Settings


def test_a_port_in_use_stops_with_the_setting_to_change() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(ApiStartError, match="FRESHLOOP_API_PORT"):
            ApiServer(Settings(), port=port)
    finally:
        holder.close()


def test_binds_loopback_by_default_and_reports_the_ephemeral_port() -> None:
    server = ApiServer(Settings(), port=0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_cli_has_api_serve() -> None:
    result = CliRunner().invoke(cli, ["api", "serve", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--host" in result.output
    bad = CliRunner().invoke(cli, ["api", "serve", "--port", "70000"])
    assert bad.exit_code == 2 and "70000" in bad.output
