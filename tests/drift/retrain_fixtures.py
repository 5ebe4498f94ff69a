"""Retrain test helpers: an isolated namespace in the real Postgres and synthetic examples.

Two concepts over the same three inputs: before the change fraud follows ``a``, after it
follows ``b``; ``noise`` never matters. A champion trained on the first concept scores the
second badly, so a challenger trained on recent examples should beat it.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import psycopg
import pytest
from sqlalchemy import Engine, create_engine

from freshloop.core.settings import Settings
from online_learning import OnlineModel

__all__ = ["Concept", "drift_engine", "drift_ns", "insert_examples", "make_rows", "trained_model"]

SPEC = "river.preprocessing.StandardScaler | river.linear_model.LogisticRegression"
_TABLES = (
    "retrains",
    "drift_reports",
    "training_examples",
    "learner_checkpoints",
    "model_registry",
)


@pytest.fixture
def drift_ns(stack_settings: Settings) -> Iterator[Settings]:
    """Settings of a namespace of its own (uuid); its rows in every learning table are removed."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = stack_settings.model_copy(
        update={
            "redis_namespace": tag,
            "model_spec": SPEC,
            "retrain_min_examples": 100,
            "retrain_window_s": 3600.0,
            "retrain_holdout_share": 0.25,
            "retrain_epochs": 2,
            "retrain_promote_margin": 0.02,
            "retrain_log_loss_tolerance": 0.05,
        }
    )
    yield settings
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (tag,))  # noqa: S608


@pytest.fixture
def drift_engine(drift_ns: Settings) -> Iterator[Engine]:
    engine = create_engine(drift_ns.sqlalchemy_url())
    yield engine
    engine.dispose()


@dataclass(frozen=True)
class Concept:
    """Fraud probability sigmoid(4 * x[key] - 5): about 5% fraud, well separable by ``key``."""

    key: str

    def label(self, x: dict[str, float], rng: random.Random) -> bool:
        return rng.random() < 1.0 / (1.0 + math.exp(-(4.0 * x[self.key] - 5.0)))


def make_rows(n: int, concept: Concept, seed: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1), "noise": rng.gauss(0, 1)}
        rows.append((x, concept.label(x, rng)))
    return rows


def trained_model(rows: list[tuple[dict[str, float], bool]], version: str) -> OnlineModel:
    model = OnlineModel(SPEC, version)
    for x, y in rows:
        model.learn(x, y)
    return model


def insert_examples(
    settings: Settings,
    rows: list[tuple[dict[str, float], bool]],
    scorer: OnlineModel,
    *,
    end: datetime,
    first_id: int = 1,
    learn: bool = False,
) -> None:
    """Store ``rows`` as training examples labelled one second apart up to ``end``.

    Each row's ``score`` is what ``scorer`` served BEFORE learning it (prequential); with
    ``learn`` the scorer learns each row after scoring it, as the online learner does.
    """
    start = end - timedelta(seconds=len(rows))
    values = []
    for i, (x, y) in enumerate(rows):
        at = start + timedelta(seconds=i)
        score = scorer.predict_proba(x)
        if learn:
            scorer.learn(x, y)
        values.append(
            (
                settings.namespace,
                first_id + i,
                orjson.dumps(x).decode(),
                y,
                score,
                scorer.version,
                at - timedelta(seconds=2),
                at,
                "outcome",
            )
        )
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO training_examples (namespace, payment_id, features, label, score,"
                " model_version, predicted_at, labelled_at, source)"
                " VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)",
                values,
            )
