"""``freshloop api token create | list | revoke``: the API's tokens of the current namespace
(``FRESHLOOP_REDIS_NAMESPACE``, else the topic prefix). Imports stay lazy."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from freshloop.app.api.tokens import TokenInfo, TokenStore

__all__ = ["token"]

_SCOPES = ("features:read", "predictions:read", "admin")


@contextmanager
def _store() -> Iterator[TokenStore]:
    """The namespace's token store; any failure is one red sentence and exit status 2."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    from freshloop.app.api.backends import dependency_error
    from freshloop.app.api.tokens import TokenStore
    from freshloop.core.db import POSTGRES_DOWN
    from freshloop.core.exceptions import FreshloopError
    from freshloop.core.settings import load_settings

    failed: tuple[type[Exception], ...] = (*POSTGRES_DOWN, DBAPIError)
    try:
        settings = load_settings()
        engine = create_engine(settings.sqlalchemy_url(), connect_args={"connect_timeout": 5})
        try:
            yield TokenStore(engine, settings.namespace)
        finally:
            engine.dispose()
    except FreshloopError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except failed as exc:
        dep = dependency_error(settings, exc)
        reason = str(dep) if dep is not None else str(exc).splitlines()[0]
        click.secho(f"error: {reason} (start it with 'freshloop stack up')", fg="red", err=True)
        sys.exit(2)


def _state(info: TokenInfo) -> str:
    if info.revoked_at is not None:
        return "revoked"
    return "expired" if info.expired() else "live"


def _when(info: TokenInfo, field: Callable[[TokenInfo], object]) -> str:
    value = field(info)
    return "-" if value is None else str(value)[:19]


@click.group()
def token() -> None:
    """API tokens of this namespace: create (printed once), list, revoke.

    Scopes: features:read (/features), predictions:read (/predictions, /models, drift reports,
    retrains, the dashboard), admin (everything). Only a salted hash is stored in Postgres; an
    API process trusts a verified token for FRESHLOOP_API_TOKEN_CACHE_S (30 s), so a revoked
    token stops working within that time."""


@token.command("create")
@click.option("--name", required=True, help="Unique among this namespace's live tokens.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(_SCOPES),
    help="Repeat for several; admin implies the others.",
)
@click.option(
    "--expires-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Valid this many days [default: until revoked].",
)
def create(name: str, scopes: tuple[str, ...], expires_days: float | None) -> None:
    """Create a token and print it once (stdout; the rest goes to stderr)."""
    with _store() as store:
        created = store.create(name, scopes, expires_days=expires_days)
        info = created.info
        expires = "never expires" if info.expires_at is None else f"expires {info.expires_at}"
        click.echo(
            f"token {info.name!r} of namespace {info.namespace!r} ({', '.join(info.scopes)}; "
            f"{expires}). It is shown only now: keep it in a secret store. Send it as "
            "'Authorization: Bearer <token>', or open the dashboard at /?token=<token>.",
            err=True,
        )
        click.echo(created.token)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked tokens too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_tokens(include_revoked: bool, as_json: bool) -> None:
    """This namespace's tokens (never their text)."""
    import json

    with _store() as store:
        tokens = store.tokens(include_revoked=include_revoked)
        if as_json:
            click.echo(json.dumps([{**t.as_dict(), "state": _state(t)} for t in tokens], indent=2))
            return
        if not tokens:
            click.echo(f"no tokens in namespace {store.namespace!r}")
            return
        click.echo(f"{'name':<24} {'scopes':<34} {'state':<8} {'created':<20} expires")
        for t in tokens:
            click.echo(
                f"{t.name:<24} {','.join(t.scopes):<34} {_state(t):<8} "
                f"{_when(t, lambda i: i.created_at):<20} {_when(t, lambda i: i.expires_at)}"
            )


@token.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the live token NAME (API processes drop it within FRESHLOOP_API_TOKEN_CACHE_S)."""
    with _store() as store:
        info = store.revoke(name)
        click.echo(f"revoked token {info.name!r} of namespace {info.namespace!r}")
