"""Apply the database side (``sql/*.sql``) idempotently: ``freshloop db init``."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import sqlalchemy.exc
from psycopg import sql

from freshloop.core.exceptions import ConfigurationError
from freshloop.core.scram import scram_sha256_verifier
from freshloop.core.settings import Settings

__all__ = ["POSTGRES_DOWN", "SQL_DIR", "connect", "init_database", "sql_params"]

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"

# What a call raises while Postgres restarts or is unreachable: worth retrying, unlike a wrong
# query. A restart under a pooled engine shows as InvalidatePoolError (a DisconnectionError).
POSTGRES_DOWN: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def connect(settings: Settings, *, autocommit: bool = True) -> psycopg.Connection:
    """A psycopg connection as the owner role, with a one-line error if the database is down."""
    try:
        return psycopg.connect(
            settings.postgres_conninfo(), autocommit=autocommit, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = (
            f"cannot reach Postgres at {settings.postgres_host}:{settings.postgres_port}/"
            f"{settings.postgres_db}: {first} (start it with 'freshloop stack up' or set "
            "FRESHLOOP_POSTGRES_DSN)"
        )
        raise ConfigurationError(msg) from exc


def sql_params(settings: Settings) -> dict[str, sql.Composable]:
    """What fills the braces of ``sql/*.sql``. The CDC password goes as a SCRAM-SHA-256
    verifier made here, never as itself: SQL text shows up in server logs (log_statement),
    pg_stat_statements and pg_stat_activity."""
    verifier = scram_sha256_verifier(settings.cdc_password.get_secret_value())
    return {
        "cdc_user": sql.Identifier(settings.cdc_user),
        "cdc_user_text": sql.Literal(settings.cdc_user),
        "cdc_password": sql.Literal(verifier),
        "publication": sql.Identifier(settings.publication_name),
        "publication_text": sql.Literal(settings.publication_name),
    }


def init_database(settings: Settings) -> list[str]:
    """Run every ``sql/*.sql`` file in order, in one transaction; returns the files applied."""
    params = sql_params(settings)
    files = sorted(SQL_DIR.glob("*.sql"))
    with connect(settings, autocommit=False) as conn:
        # One init at a time: concurrent CREATE ... IF NOT EXISTS can still collide.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('freshloop db init'))")
        for path in files:
            statement = sql.SQL(path.read_text()).format(**params)
            conn.execute(statement)
            log.info("applied file=%s", path.name)
        conn.commit()
    return [p.name for p in files]
