"""Apply the database side (``sql/*.sql``) idempotently: ``freshloop db init``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import psycopg
import sqlalchemy.exc
from psycopg import sql

from freshloop.core.exceptions import ConfigurationError
from freshloop.core.scram import scram_sha256_verifier
from freshloop.core.settings import Settings

__all__ = [
    "POSTGRES_DOWN",
    "SQL_DIR",
    "connect",
    "init_database",
    "publish_tables",
    "sql_params",
]

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


def init_database(settings: Settings, *, capture: Iterable[str]) -> list[str]:
    """Run every ``sql/*.sql`` file in order, then publish the ``capture`` tables and let the
    CDC role read them (``publish_tables``), all in one transaction; returns the files applied.
    ``capture``: the tables of the feature set in use and of the learning loop
    (``feature_pipelines.definitions.tables_to_capture``)."""
    params = sql_params(settings)
    files = sorted(SQL_DIR.glob("*.sql"))
    tables = list(capture)
    with connect(settings, autocommit=False) as conn:
        # One init at a time: concurrent CREATE ... IF NOT EXISTS can still collide.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('freshloop db init'))")
        for path in files:
            statement = sql.SQL(path.read_text()).format(**params)
            conn.execute(statement)
            log.info("applied file=%s", path.name)
        publish_tables(conn, settings, tables)
        conn.commit()
    return [p.name for p in files]


def publish_tables(conn: psycopg.Connection, settings: Settings, tables: Iterable[str]) -> None:
    """Add ``tables`` (schema ``public``) to the publication unless they are in it, and grant
    the CDC role SELECT on them (Debezium's snapshot reads them); idempotent. A table that does
    not exist is an error naming it, and nothing is changed."""
    wanted = sorted(set(tables))
    if not wanted:
        return
    found: dict[str, str] = dict(
        conn.execute(
            "SELECT c.relname, c.relreplident FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
            (wanted,),
        ).fetchall()
    )
    missing = [t for t in wanted if t not in found]
    if missing:
        msg = (
            f"cannot capture table{'s' if len(missing) > 1 else ''} {', '.join(missing)}: not in "
            f"schema public of database {settings.postgres_db}. Create "
            f"{'them' if len(missing) > 1 else 'it'} first (docs/own-schema.md), or name the "
            "feature set that reads the tables you have (FRESHLOOP_FEATURE_DEFINITIONS)"
        )
        raise ConfigurationError(msg)
    for table, identity in found.items():
        if identity != "f":  # an update or delete would not carry the row as it was
            log.warning(
                "captured table %s is not REPLICA IDENTITY FULL: run ALTER TABLE %s REPLICA "
                "IDENTITY FULL",
                table,
                table,
            )
    publication = sql.Identifier(settings.publication_name)
    row = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (settings.publication_name,)
    ).fetchone()
    published = {
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_publication_tables "
            "WHERE pubname = %s AND schemaname = 'public'",
            (settings.publication_name,),
        )
    }
    new = [t for t in wanted if t not in published]
    if new and not (row and row[0]):  # a FOR ALL TABLES publication has them already
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                publication, sql.SQL(", ").join(sql.Identifier("public", t) for t in new)
            )
        )
        log.info("published tables=%s publication=%s", ",".join(new), settings.publication_name)
    conn.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(
            sql.SQL(", ").join(sql.Identifier("public", t) for t in wanted),
            sql.Identifier(settings.cdc_user),
        )
    )
