"""``freshloop db init`` is idempotent and the CDC role has only what it needs."""

from __future__ import annotations

import psycopg
import pytest

from freshloop.core.db import init_database
from freshloop.core.settings import Settings

pytestmark = pytest.mark.integration


def test_init_twice_and_the_captured_tables_are_replica_identity_full(
    stack_settings: Settings, pg: psycopg.Connection
) -> None:
    assert init_database(stack_settings) == init_database(stack_settings)
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
