"""Retention against the real Postgres, each test in its own schema (``prune_fixtures``):
the migration keeps rows, partitions are created and dropped in event time, a dry run changes
nothing, and the champion, the newest checkpoint and what drift and retrains read survive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from drift.jobs import JobContext, prune_job, register, unregister
from drift.prune import prune
from online_learning.tables import EXAMPLES
from tests.drift.prune_fixtures import PruneWorld, prune_world

__all__ = ["prune_world"]

pytestmark = pytest.mark.integration

T0 = datetime(2001, 1, 1, tzinfo=UTC)  # far from the wall clock: retention is in event time
SIX_H = timedelta(hours=6)


def _counts(world: PruneWorld) -> dict[str, object]:
    tables = (
        "training_examples",
        "drift_reports",
        "retrains",
        "model_registry",
        "learner_checkpoints",
    )
    return {t: world.scalar(f"SELECT count(*) FROM {t}") for t in tables}  # noqa: S608


def test_migration_of_an_unpartitioned_table_keeps_rows_and_indexes(
    prune_world: PruneWorld,
) -> None:
    prune_world.apply("004_learning.sql")  # the table as the earlier files create it
    prune_world.add_examples("a", T0, 50, SIX_H)
    prune_world.add_examples("b", T0 + timedelta(days=100), 3, SIX_H, first_id=1)
    before = prune_world.scalar(
        "SELECT sum(payment_id * extract(epoch FROM labelled_at)) FROM training_examples"
    )
    prune_world.apply()  # 004, 005, 006 as `freshloop db init` runs them ...
    prune_world.apply()  # ... and again: idempotent
    assert (
        prune_world.scalar("SELECT relkind FROM pg_class WHERE oid = 'training_examples'::regclass")
        == "p"
    )
    assert prune_world.scalar("SELECT count(*) FROM training_examples") == 53
    assert (
        prune_world.scalar(
            "SELECT sum(payment_id * extract(epoch FROM labelled_at)) FROM training_examples"
        )
        == before
    )
    assert prune_world.scalar("SELECT count(*) FROM training_examples_default") == 0
    assert prune_world.partitions()[:2] == [
        "training_examples_default",
        "training_examples_p20010101",
    ]
    assert len(prune_world.partitions()) == 1 + 13 + 1  # default, 50 rows over 13 days, one day
    indexes = prune_world.scalar(
        "SELECT string_agg(indexdef, ' | ' ORDER BY indexname) FROM pg_indexes "
        "WHERE tablename = 'training_examples' AND schemaname = current_schema()"
    )
    assert "(namespace, labelled_at)" in str(indexes)
    assert "UNIQUE INDEX training_examples_pkey" in str(indexes)
    # the learner's insert (online_learning.checkpoints) still skips a replayed example
    row = {
        "namespace": "a",
        "payment_id": 1,
        "features": {},
        "label": False,
        "score": 0.5,
        "model_version": "m1",
        "predicted_at": T0,
        "labelled_at": T0,
        "source": "outcome",
    }
    with prune_world.engine.begin() as conn:
        for _ in range(2):
            conn.execute(pg_insert(EXAMPLES).values([row]).on_conflict_do_nothing())
    assert prune_world.scalar("SELECT count(*) FROM training_examples") == 53


def test_prune_drops_expired_days_by_the_watermark_keeping_the_reference(
    prune_world: PruneWorld,
) -> None:
    prune_world.apply()
    settings = prune_world.settings.model_copy(
        update={
            "retention_examples_days": 30,
            "retention_partitions_ahead_days": 2,
            "drift_reference_size": 10,
        }
    )
    # 4 examples a day over 40 days, all into the default partition (no day partitions yet)
    prune_world.add_examples("a", T0, 160, SIX_H)
    # champion promoted on Jan 3 at noon: its reference is the first 10 rows after (Jan 3-5)
    with prune_world.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO model_registry (namespace, version, status, promoted_at, blob, "
                "river_version, spec) VALUES ('a', 'm1', 'champion', :at, '\\x00', 't', '[]')"
            ),
            {"at": T0 + timedelta(days=2, hours=12)},
        )
    before = _counts(prune_world)

    dry = prune(prune_world.engine, settings, dry_run=True)
    assert _counts(prune_world) == before
    assert prune_world.partitions() == ["training_examples_default"]
    # watermark Feb 9 18:00, cutoff Jan 10 18:00: Jan 1-9 expired, Jan 3-5 held
    assert dry.watermark == T0 + 159 * SIX_H
    examples = dry.tables[0]
    assert (examples.table, examples.rows) == ("training_examples", 6 * 4)
    assert examples.bytes > 0
    assert any("3 expired day(s) kept" in note for note in dry.notes)

    done = prune(prune_world.engine, settings)
    assert done.tables[0].rows == 24
    assert prune_world.scalar("SELECT count(*) FROM training_examples") == 160 - 24
    assert prune_world.scalar("SELECT count(*) FROM training_examples_default") == 0
    kept_days = prune_world.scalar(
        "SELECT string_agg(DISTINCT to_char(labelled_at AT TIME ZONE 'UTC', 'MM-DD'), ',') "
        "FROM training_examples WHERE labelled_at < '2001-01-11+00'"
    )
    assert kept_days == "01-03,01-04,01-05,01-10"
    parts = prune_world.partitions()
    assert "training_examples_p20010211" in parts  # two days ahead of the watermark
    assert "training_examples_p20010101" not in parts
    assert prune(prune_world.engine, settings).tables[0].rows == 0  # nothing more to do

    # event time moves on by a day: Jan 10, now a partition of its own, is dropped whole
    prune_world.add_examples("a", T0 + 160 * SIX_H, 4, SIX_H, first_id=1000)
    again = prune(prune_world.engine, settings)
    assert again.tables[0].rows == 4 and "1 partition(s) dropped" in again.tables[0].detail
    assert "training_examples_p20010110" not in prune_world.partitions()
    assert (
        prune_world.scalar(
            "SELECT count(*) FROM training_examples "
            "WHERE labelled_at >= '2001-01-03+00' "
            "AND labelled_at < '2001-01-06+00'"
        )
        == 12
    )


def test_a_running_retrain_keeps_its_window(prune_world: PruneWorld) -> None:
    prune_world.apply()
    settings = prune_world.settings.model_copy(
        update={"retention_examples_days": 5, "drift_reference_size": 10}
    )
    prune_world.add_examples("a", T0, 80, SIX_H)  # 20 days
    with prune_world.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO retrains (namespace, trigger, reason, data_start) "
                "VALUES ('a', 'manual', 'test', :start)"
            ),
            {"start": T0 + timedelta(days=8)},
        )
    report = prune(prune_world.engine, settings)
    # the reference (no champion: the first 10 rows, Jan 1-3) and the retrain (Jan 9 on) stay
    assert report.tables[0].rows == 5 * 4  # Jan 4 .. Jan 8
    assert prune_world.scalar(
        "SELECT min(labelled_at) FROM training_examples WHERE labelled_at > '2001-01-04+00'"
    ) == T0 + timedelta(days=8)


def test_counts_keep_the_champion_newest_checkpoint_and_running_retrain(
    prune_world: PruneWorld,
) -> None:
    prune_world.apply()
    settings = prune_world.settings.model_copy(
        update={
            "retention_drift_reports_keep": 2,
            "retention_retrains_keep": 1,
            "retention_models_keep": 2,
            "retention_checkpoints_keep": 1,
        }
    )
    with prune_world.engine.begin() as conn:
        for ns in ("a", "other"):
            for i in range(5):  # m0 (oldest) is the champion
                conn.execute(
                    text(
                        "INSERT INTO model_registry (namespace, version, created_at, status, blob, "
                        "river_version, spec) VALUES (:ns, :v, :at, :s, '\\x00', 't', '[]')"
                    ),
                    {
                        "ns": ns,
                        "v": f"m{i}",
                        "at": T0 + timedelta(hours=i),
                        "s": "champion" if i == 0 else "retired",
                    },
                )
            for _ in range(4):
                conn.execute(
                    text(
                        "INSERT INTO learner_checkpoints (namespace, model_version, model_blob, "
                        "snapshot, offsets, status, n_learned, river_version) VALUES (:ns, 'm4', "
                        "'\\x00', '\\x00', '{}', '{}', 0, 't')"
                    ),
                    {"ns": ns},
                )
            for _ in range(6):
                conn.execute(
                    text(
                        "INSERT INTO drift_reports (namespace, status, summary, report, decision, "
                        "html) VALUES (:ns, 'ok', '{}', '{}', '{}', repeat('x', 5000))"
                    ),
                    {"ns": ns},
                )
            # the retrain that promoted m0, two finished ones, then one running
            for status, challenger in (
                ("promoted", "m0"),
                ("kept", "m2"),
                ("kept", "m3"),
                ("running", "m4"),
            ):
                conn.execute(
                    text(
                        "INSERT INTO retrains (namespace, trigger, reason, status, "
                        "challenger_version) VALUES (:ns, 'manual', 't', :s, :c)"
                    ),
                    {"ns": ns, "s": status, "c": challenger},
                )
    before = _counts(prune_world)
    dry = {
        t.table: t.rows
        for t in prune(prune_world.engine, settings, dry_run=True, namespaces=["a"]).tables
    }
    assert _counts(prune_world) == before
    done = prune(prune_world.engine, settings, namespaces=["a"])
    assert (
        {t.table: t.rows for t in done.tables}
        == dry
        == {
            "training_examples": 0,
            "drift_reports": 4,
            "retrains": 2,
            "model_registry": 2,
            "learner_checkpoints": 3,
        }
    )
    assert next(t for t in done.tables if t.table == "drift_reports").bytes > 4 * 5000 / 100

    def names(query: str, ns: str = "a") -> list[object]:
        with prune_world.engine.connect() as conn:
            return list(conn.execute(text(query), {"ns": ns}).scalars())

    # the champion m0 (the oldest) and the newest two, m3 and m4
    assert names("SELECT version FROM model_registry WHERE namespace = :ns ORDER BY version") == [
        "m0",
        "m3",
        "m4",
    ]
    assert names(
        "SELECT max(checkpoint_id) = min(checkpoint_id) FROM learner_checkpoints "
        "WHERE namespace = :ns"
    ) == [True]
    assert names("SELECT status FROM retrains WHERE namespace = :ns ORDER BY retrain_id") == [
        "promoted",
        "running",
    ]
    assert _counts(prune_world)["drift_reports"] == 2 + 6  # the other namespace is untouched


def test_the_scheduled_job_prunes_its_namespace(prune_world: PruneWorld) -> None:
    prune_world.apply()
    settings = prune_world.settings.model_copy(
        update={"redis_namespace": "a", "retention_checkpoints_keep": 1}
    )
    with prune_world.engine.begin() as conn:
        for ns in ("a", "a", "a", "b", "b"):
            conn.execute(
                text(
                    "INSERT INTO learner_checkpoints (namespace, model_version, model_blob, "
                    "snapshot, offsets, status, n_learned, river_version) VALUES (:ns, 'm', "
                    "'\\x00', '\\x00', '{}', '{}', 0, 't')"
                ),
                {"ns": ns},
            )
    register(JobContext(settings, prune_world.engine))
    try:
        prune_job("a")
    finally:
        unregister("a")
    assert prune_world.scalar("SELECT count(*) FROM learner_checkpoints WHERE namespace = 'a'") == 1
    assert prune_world.scalar("SELECT count(*) FROM learner_checkpoints WHERE namespace = 'b'") == 2
