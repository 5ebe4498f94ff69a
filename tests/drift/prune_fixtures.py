"""A private schema per test holding the learning tables as ``sql/`` builds them.

Partitions are database-wide (one day's partition holds every namespace), so a retention test
on the shared ``training_examples`` would drop other people's rows. Each test gets its own
schema (uuid) with ``sql/004``..``sql/006`` applied in it, and an engine whose search_path is
that schema only; the schema is dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, create_engine, text

from freshloop.core.db import SQL_DIR
from freshloop.core.settings import Settings

LEARNING_FILES = ("004_learning.sql", "005_drift.sql", "006_retention.sql")


@dataclass
class PruneWorld:
    settings: Settings
    schema: str
    engine: Engine

    def apply(self, *files: str) -> None:
        """Run ``sql/`` files in the schema, as ``freshloop db init`` does (one transaction)."""
        with psycopg.connect(self.settings.postgres_conninfo()) as conn:
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
            for name in files or LEARNING_FILES:
                conn.execute(sql.SQL((SQL_DIR / name).read_text()).format())

    def add_examples(
        self, ns: str, start: datetime, n: int, step: timedelta, first_id: int = 1
    ) -> None:
        rows = [{"ns": ns, "id": first_id + i, "at": start + i * step} for i in range(n)]
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO training_examples (namespace, payment_id, features, label, score, "
                    "model_version, predicted_at, labelled_at, source) VALUES (:ns, :id, "
                    "'{\"amount\": 1.0}', false, 0.5, 'm1', :at, :at, 'outcome')"
                ),
                rows,
            )

    def scalar(self, query: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(text(query), params).scalar_one()

    def partitions(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(
                conn.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits AS i "
                        "JOIN pg_class AS c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'training_examples'::regclass"
                    )
                ).scalars()
            )


@pytest.fixture
def prune_world(stack_settings: Settings) -> Iterator[PruneWorld]:
    schema = f"prune_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(stack_settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    engine = create_engine(
        stack_settings.sqlalchemy_url(), connect_args={"options": f"-csearch_path={schema}"}
    )
    try:
        yield PruneWorld(stack_settings, schema, engine)
    finally:
        engine.dispose()
        with psycopg.connect(stack_settings.postgres_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
