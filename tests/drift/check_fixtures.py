"""Synthetic labelled examples for drift checks: a stable world and a shifted one.

Rows go into the real ``training_examples`` under a uuid namespace (payment ids far above any
real payment, so the freshness probe finds no customer to check) and are deleted afterwards,
with the namespace's reports, checkpoints and Redis stats keys.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from freshloop.core.settings import Settings

PAYMENT_ID_BASE = 10**15


def vectors(seed: int, n: int, *, shifted: bool) -> list[tuple[dict[str, float], bool, float]]:
    """(features, label, score) rows. Shifted: larger amounts, web channel, busier customers,
    more fraud, and scores that no longer rank fraud (the model lost its grip)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        amount = float(rng.gamma(2.0, 40.0 * (3.0 if shifted else 1.0)))
        web = rng.random() < (0.8 if shifted else 0.2)
        app = not web and rng.random() < 0.6
        hour = rng.uniform(0, 24)
        fraud = bool(rng.random() < (0.25 if shifted else 0.08))
        good = 0.55 + 0.35 * rng.random() if fraud else 0.05 + 0.35 * rng.random()
        score = float(rng.random() if shifted else good)
        out.append(
            (
                {
                    "amount": amount,
                    "log_amount": math.log1p(amount),
                    "channel_web": float(web),
                    "channel_app": float(app),
                    "channel_pos": float(not web and not app),
                    "hour_sin": math.sin(2 * math.pi * hour / 24),
                    "payment_count_1h": float(rng.poisson(6.0 if shifted else 2.0)),
                    "amount_mean_24h_missing": 0.0,
                },
                fraud,
                score,
            )
        )
    return out


@dataclass
class CheckWorld:
    """A namespace to fill with examples, and its settings for ``run_check``."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    next_id: int = PAYMENT_ID_BASE

    @property
    def ns(self) -> str:
        return self.settings.namespace

    def add(
        self,
        rows: list[tuple[dict[str, float], bool, float]],
        *,
        start: datetime,
        step: timedelta = timedelta(seconds=1),
    ) -> None:
        params = []
        for i, (features, label, score) in enumerate(rows):
            at = start + i * step
            params.append(
                {
                    "ns": self.ns,
                    "id": self.next_id + i,
                    "f": orjson.dumps(features).decode(),
                    "label": label,
                    "score": score,
                    "pat": at - timedelta(seconds=5),
                    "lat": at,
                }
            )
        self.next_id += len(rows)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO training_examples (namespace, payment_id, features, label, score, "
                    "model_version, predicted_at, labelled_at, source) VALUES (:ns, :id, "
                    "CAST(:f AS jsonb), :label, :score, 'm-test', :pat, :lat, 'outcome')"
                ),
                params,
            )

    def checkpoint(self, alarms: list[int]) -> None:
        """A learner checkpoint whose status carries ADWIN alarm indices (blobs are dummies)."""
        status = {"drift_alarms": alarms, "metrics": {"rolling_roc_auc": 0.9}}
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO learner_checkpoints (namespace, model_version, model_blob, "
                    "snapshot, "
                    "offsets, status, n_learned, river_version) VALUES (:ns, 'm-test', '\\x00', "
                    "'\\x00', '{}', CAST(:s AS jsonb), 0, 'test')"
                ),
                {"ns": self.ns, "s": orjson.dumps(status).decode()},
            )

    def origins(self, origins: dict[str, datetime]) -> None:
        """The source origins a previous report found, as ``drift.warmup`` stores them."""
        report = {"warmup": {"origins": {k: v.isoformat() for k, v in origins.items()}}}
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO drift_reports "
                    "(namespace, status, summary, report, decision, html) "
                    "VALUES (:ns, 'insufficient_data', '{}', CAST(:r AS jsonb), '{}', '')"
                ),
                {"ns": self.ns, "r": orjson.dumps(report).decode()},
            )

    def pipeline_stats(self, p99_ms: float) -> None:
        """One live feature-pipeline consumer, as ``feature_pipelines.live_stats`` writes it."""
        now = datetime.now(UTC).timestamp()
        self.redis.zadd(f"{self.ns}:stats:pipelines", {"c1": now})
        self.redis.hset(
            f"{self.ns}:stats:pipeline:c1",
            mapping={
                "updated_at": now,
                "applied_total": 10,
                "events_per_s": 5.0,
                "lag_p50_ms": 20.0,
                "lag_p95_ms": 40.0,
                "lag_p99_ms": p99_ms,
                "dead_lettered_total": 0,
            },
        )


@pytest.fixture
def check_world(stack_settings: Settings) -> Iterator[CheckWorld]:
    ns = f"drift_{uuid.uuid4().hex[:10]}"
    settings = stack_settings.model_copy(
        update={
            "redis_namespace": ns,
            "drift_reference_size": 400,
            "drift_current_size": 400,
            "drift_min_samples": 50,
            "drift_current_window_s": 3600.0,
            "drift_stale_recheck_s": 0.0,
            # these worlds test the statistics; the warm-up rule has tests of its own (test_warmup)
            "drift_warmup": False,
        }
    )
    engine = create_engine(settings.sqlalchemy_url())
    client = redis.Redis.from_url(settings.redis_conninfo())
    try:
        yield CheckWorld(settings, engine, client)
    finally:
        with engine.begin() as conn:
            for table in ("drift_reports", "learner_checkpoints", "training_examples"):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE namespace = :ns"),  # noqa: S608
                    {"ns": ns},
                )
        client.delete(f"{ns}:stats:pipelines", f"{ns}:stats:pipeline:c1")
        client.close()
        engine.dispose()
