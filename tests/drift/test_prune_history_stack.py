"""``freshloop db prune`` prunes the row history: versions no example that stays can see go,
the dry run only counts them, and a running retrain (or anything retention holds) keeps them.

In a private schema (``prune_fixtures``) with the domain tables and their history built there
(``sql/001`` and ``sql/009`` with the schema in place of ``public``, so nothing shared is
touched); commit times are moved back by hand to lie days apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text

from drift.prune import prune
from freshloop.core.db import SQL_DIR
from tests.drift.prune_fixtures import PruneWorld, prune_world

__all__ = ["prune_world"]

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


def _history(world: PruneWorld) -> None:
    world.apply()
    world.apply("001_domain.sql")
    body = (SQL_DIR / "009_history.sql").read_text()
    body = body.replace("search_path = public", f"search_path = {world.schema}")
    body = body.replace("'public.'", f"'{world.schema}.'")
    assert "public" not in body.replace("publication", "")  # nothing of the shared schema
    with psycopg.connect(world.settings.postgres_conninfo()) as conn:
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(world.schema)))
        conn.execute(body)


def _pay(
    world: PruneWorld, ns: str, committed: datetime, labelled: datetime, *, update: datetime | None
) -> int:
    """A payment committed at ``committed`` (moved back by hand), corrected at ``update`` (its
    first version closed then), with an example of ``ns`` labelled at ``labelled``."""
    with world.engine.begin() as conn:
        pid = conn.execute(
            text(
                "INSERT INTO payments (customer_id, merchant_id, amount, channel, status) "
                "VALUES (1, 1, 10, 'web', 'approved') RETURNING payment_id"
            )
        ).scalar_one()
    if update is not None:
        with world.engine.begin() as conn:
            conn.execute(text("UPDATE payments SET amount = 11 WHERE payment_id = :p"), {"p": pid})
    with world.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE payments_history SET _committed_at = :c WHERE _version = "
                "(SELECT min(_version) FROM payments_history WHERE payment_id = :p)"
            ),
            {"p": pid, "c": committed},
        )
        if update is not None:
            conn.execute(
                text(
                    "UPDATE payments_history SET _closed_at = :u WHERE payment_id = :p "
                    "AND _valid_to IS NOT NULL"
                ),
                {"p": pid, "u": update},
            )
            conn.execute(
                text(
                    "UPDATE payments_history SET _committed_at = :u WHERE payment_id = :p "
                    "AND _valid_to IS NULL"
                ),
                {"p": pid, "u": update},
            )
        conn.execute(
            text(
                "INSERT INTO training_examples (namespace, payment_id, features, label, score, "
                "model_version, predicted_at, labelled_at, source) VALUES (:ns, :p, "
                "'{\"amount\": 1.0}', false, 0.5, 'm1', :c, :l, 'outcome')"
            ),
            {"ns": ns, "p": pid, "c": committed, "l": labelled},
        )
    return pid


@pytest.fixture
def history_world(prune_world: PruneWorld) -> tuple[PruneWorld, list[int]]:
    _history(prune_world)
    with prune_world.engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (email, country) VALUES ('x@test.invalid', 'DE')"))
        conn.execute(
            text("INSERT INTO merchants (name, category, country) VALUES ('m', 'c', 'DE')")
        )
        for ns in ("x", "y"):  # champions promoted 2 days ago: the references are b and d
            conn.execute(
                text(
                    "INSERT INTO model_registry (namespace, version, status, promoted_at, blob, "
                    "river_version, spec) VALUES (:ns, 'm1', 'champion', :at, '\\x00', 't', '[]')"
                ),
                {"ns": ns, "at": NOW - 2 * DAY - timedelta(hours=1)},
            )
    # a: labelled 40 days ago (expired), corrected 39 days ago: its first version may go
    # b: committed 3 days ago, the oldest payment an example that stays needs; corrected 2
    #    days ago: kept (closed after b's commit)
    # c: committed 3 days ago less 30 minutes, corrected then: within the margin, kept
    a = _pay(prune_world, "x", NOW - 41 * DAY, NOW - 40 * DAY, update=NOW - 39 * DAY)
    b = _pay(prune_world, "x", NOW - 3 * DAY, NOW - 2 * DAY, update=NOW - 2 * DAY)
    c = _pay(
        prune_world,
        "y",
        NOW - 50 * DAY,
        NOW - 45 * DAY,
        update=NOW - 3 * DAY - timedelta(minutes=30),
    )
    d = _pay(prune_world, "y", NOW - DAY, NOW - DAY, update=None)
    return prune_world, [a, b, c, d]


def _versions(world: PruneWorld) -> int:
    return int(world.scalar("SELECT count(*) FROM payments_history"))  # type: ignore[call-overload]


def test_prune_drops_the_history_no_example_that_stays_needs(
    history_world: tuple[PruneWorld, list[int]],
) -> None:
    world, (a, _b, _c, _d) = history_world
    settings = world.settings.model_copy(
        update={"retention_examples_days": 30, "drift_reference_size": 1}
    )
    assert _versions(world) == 7  # a, b, c: two versions each; d: one

    dry = prune(world.engine, settings, dry_run=True)
    row = next(t for t in dry.tables if t.table == "row history")
    assert row.rows == 1 and row.bytes > 0  # a's first version
    assert "closed before" in row.detail
    assert "would go" in "\n".join(dry.lines())
    assert _versions(world) == 7

    done = prune(world.engine, settings)
    assert next(t for t in done.tables if t.table == "row history").rows == 1
    assert _versions(world) == 6
    assert (
        world.scalar("SELECT count(*) FROM payments_history WHERE payment_id = :p", p=a) == 1
    )  # a's current version stays: it is visible to every later commit


def test_a_running_retrain_keeps_the_history_its_examples_need(
    history_world: tuple[PruneWorld, list[int]],
) -> None:
    world, _ids = history_world
    settings = world.settings.model_copy(
        update={"retention_examples_days": 30, "drift_reference_size": 1}
    )
    with world.engine.begin() as conn:  # about to choose its data: every day is held
        conn.execute(
            text("INSERT INTO retrains (namespace, trigger, reason) VALUES ('x', 'manual', 't')")
        )
    report = prune(world.engine, settings)
    row = next(t for t in report.tables if t.table == "row history")
    assert row.rows == 0
    assert _versions(world) == 7
