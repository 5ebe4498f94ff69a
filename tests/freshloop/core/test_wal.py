"""The bound on retained WAL: the local Postgres's configuration and the slot alarm."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine

from freshloop.core.settings import Settings
from freshloop.core.wal import read_slot, slot_alarm
from freshloop.stack.setup import find_postgres_bindir


def test_alarm_sentences() -> None:
    assert slot_alarm("s", 99, "reserved", 100) is None
    assert slot_alarm("s", 100, "extended", 100) == (
        "replication slot s retains 100 bytes of WAL (warning at 100): the connector is down "
        "or behind"
    )
    assert "about to be lost" in str(slot_alarm("s", 0, "unreserved", 100))
    assert "was lost" in str(slot_alarm("s", 0, "lost", 100))


@pytest.mark.skipif(find_postgres_bindir() is None, reason="no Postgres server binaries")
def test_the_local_postgres_bounds_slot_wal(tmp_path: Path) -> None:
    from freshloop.stack.services import Postgres

    settings = Settings(home=tmp_path, wal_keep_size="2GB")
    args = Postgres("postgres", 5432, settings, tmp_path / "pg").command()
    assert "max_slot_wal_keep_size=2GB" in [args[i + 1] for i, a in enumerate(args) if a == "-c"]
    with pytest.raises(ValidationError, match="not a Postgres size"):
        Settings(wal_keep_size="2 gigabytes")


@pytest.mark.integration
def test_health_reads_the_slot_and_alarms_when_it_falls_behind(stack_settings: Settings) -> None:
    prefix = f"walt{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(update={"topic_prefix": prefix, "wal_warning_bytes": 1})
    engine = create_engine(settings.sqlalchemy_url())
    try:
        with engine.connect() as conn:
            absent = read_slot(conn, settings)
        assert not absent.exists and absent.alarm is None
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as pg:
            # a physical slot reserves WAL at once (a logical one would wait for transactions)
            pg.execute(
                "SELECT pg_create_physical_replication_slot(%s, true)", (settings.slot_name,)
            )
            try:
                pg.execute(
                    "SELECT pg_logical_emit_message(false, 'freshloop-test', repeat('x', 100000))"
                )
                with engine.connect() as conn:
                    state = read_slot(conn, settings)
            finally:
                pg.execute("SELECT pg_drop_replication_slot(%s)", (settings.slot_name,))
    finally:
        engine.dispose()
    assert state.exists and not state.active
    assert state.wal_status in {"reserved", "extended"}
    assert state.retained_bytes >= 100_000
    assert state.alarm is not None and settings.slot_name in state.alarm
