"""``freshloop db init`` is idempotent and the CDC role has only what it needs."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from connectors import captured_tables
from feature_pipelines.definitions import tables_to_capture
from freshloop.core.db import init_database
from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings
from tests.feature_pipelines.own_schema import create_tables

pytestmark = pytest.mark.integration


def test_init_twice_and_the_captured_tables_are_replica_identity_full(
    stack_settings: Settings, pg: psycopg.Connection
) -> None:
    tables = tables_to_capture(stack_settings)
    assert init_database(stack_settings, capture=tables) == init_database(
        stack_settings, capture=tables
    )
    rows = dict(
        pg.execute(
            "SELECT relname, relreplident FROM pg_class WHERE relname = ANY(%s)",
            (["customers", "merchants", "payments", "payment_outcomes"],),
        ).fetchall()
    )
    assert rows == dict.fromkeys(("customers", "merchants", "payments", "payment_outcomes"), "f")
    published = {
        r[0]
        for r in pg.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s",
            (stack_settings.publication_name,),
        )
    }
    assert {"payments", "payment_outcomes", "freshloop_signal"} <= published


def test_the_tables_of_the_definitions_in_use_are_published_and_granted(
    stack_settings: Settings, pg: psycopg.Connection
) -> None:
    """``db init`` captures what FRESHLOOP_FEATURE_DEFINITIONS reads (own_schema's orders and
    deliveries here, with a suffix of the test's own) and the learning loop's tables, again and
    again; a table that is not there stops it with its name, and nothing changes."""
    tag = uuid.uuid4().hex[:8]
    orders, deliveries = f"orders_{tag}", f"deliveries_{tag}"
    for statement in create_tables(orders, deliveries):
        pg.execute(statement)
    tables = captured_tables({orders, deliveries})
    try:
        init_database(stack_settings, capture=tables)
        init_database(stack_settings, capture=tables)
        published = {
            r[0]
            for r in pg.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s",
                (stack_settings.publication_name,),
            )
        }
        assert set(tables) <= published
        granted = {
            r[0]
            for r in pg.execute(
                "SELECT table_name FROM information_schema.role_table_grants "
                "WHERE grantee = %s AND privilege_type = 'SELECT'",
                (stack_settings.cdc_user,),
            )
        }
        assert set(tables) <= granted
        missing = f"missing_{tag}"
        with pytest.raises(ConfigurationError, match=f"cannot capture table {missing}: not in"):
            init_database(stack_settings, capture=(*tables, missing))
        # the failed init changed nothing (one transaction): the tables are still granted
        conninfo = stack_settings.postgres_conninfo(
            user=stack_settings.cdc_user, password=stack_settings.cdc_password
        )
        with psycopg.connect(conninfo, autocommit=True) as cdc:
            cdc.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(orders)))
    finally:
        for table in (deliveries, orders):
            pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        init_database(stack_settings, capture=tables_to_capture(stack_settings))


def test_cdc_role_is_least_privilege(stack_settings: Settings) -> None:
    conninfo = stack_settings.postgres_conninfo(
        user=stack_settings.cdc_user, password=stack_settings.cdc_password
    )
    with psycopg.connect(conninfo, autocommit=True) as cdc:
        assert cdc.execute(
            "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (True, False)
        cdc.execute("SELECT count(*) FROM payments").fetchone()
        cdc.execute("INSERT INTO freshloop_heartbeat DEFAULT VALUES")
        for statement in (
            "INSERT INTO customers (email, country) VALUES ('x@y.z', 'DE')",
            "DELETE FROM payments",
            "UPDATE merchants SET name = 'x'",
            "SELECT count(*) FROM freshloop_heartbeat",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                cdc.execute(statement)


def test_db_prune_dry_run_prints_every_table_as_json(
    stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from freshloop.app import cli as cli_module

    monkeypatch.setattr(cli_module, "_settings", lambda: stack_settings)
    result = CliRunner().invoke(cli_module.cli, ["db", "prune", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["dry_run"] is True
    assert [t["table"] for t in body["tables"]] == [
        "training_examples",
        "row history",
        "drift_reports",
        "retrains",
        "model_registry",
        "learner_checkpoints",
    ]
