"""``freshloop api serve``: the HTTP API and dashboard on their own (imports stay lazy);
``freshloop api token ...``: its tokens (token_cli.py)."""

from __future__ import annotations

import click

from freshloop.app.api.token_cli import token

__all__ = ["api"]


@click.group()
def api() -> None:
    """The HTTP API and the live dashboard."""


@api.command("serve")
@click.option(
    "--host",
    default=None,
    help="Listen address [default: FRESHLOOP_API_HOST, 127.0.0.1]. Use 0.0.0.0 only "
    "inside a container.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port [default: FRESHLOOP_API_PORT, 8000].",
)
def serve(host: str | None, port: int | None) -> None:
    """Serve the API (OpenAPI at /docs) and the dashboard at / until Ctrl-C / SIGTERM."""
    import sys

    from freshloop.app.api.server import ApiServer
    from freshloop.core.exceptions import FreshloopError
    from freshloop.core.settings import load_settings

    try:
        settings = load_settings()
        server = ApiServer(settings, host=host, port=port)
    except FreshloopError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo(
        f"[api] namespace {settings.namespace}: dashboard {server.url}/  docs {server.url}/docs"
    )
    if settings.api_anonymous:
        click.echo(
            "[api] FRESHLOOP_API_ANONYMOUS=true: requests without a token read everything "
            "(loopback only)"
        )
    else:
        click.echo(
            "[api] every route but /healthz needs a token: 'freshloop api token create "
            "--name NAME --scope features:read|predictions:read|admin'; the dashboard "
            "takes it once at /?token=<token>"
        )
    server.run()
    click.echo("[api] stopped")


api.add_command(token)
