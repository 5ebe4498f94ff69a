"""Payments with a row history and the examples a scorer would have logged for them.

The payments go into the real (shared) ``payments`` table, each in its own transaction so each
has its own commit position, for a customer and a merchant of their own; the examples go into
``training_examples`` under the test's uuid namespace (``drift_ns`` removes them). The vectors
logged are the history's own at each payment's commit (what a scorer reading right at the
commit would have served), so a test starts from no skew and changes what it needs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
import psycopg

from freshloop.core.settings import Settings
from online_learning.point_in_time import Probe, scored_payments, vectors_as_of
from online_learning.services import feature_service
from online_learning.training_set import ScoredPayment

__all__ = ["HistoryWorld", "log_examples", "write_payments"]

CHANNELS = ("web", "app", "pos")


@dataclass
class HistoryWorld:
    """Payments written for a test: ids in commit order, their scored form and customers."""

    ids: list[int] = field(default_factory=list)
    scored: dict[int, ScoredPayment] = field(default_factory=dict)
    customers: list[int] = field(default_factory=list)
    merchant: int = 0


def write_payments(
    settings: Settings, n: int, *, customers: int = 4, seed: int = 5, gap_s: float = 0.0
) -> HistoryWorld:
    """``n`` payments of ``customers`` new customers at one new merchant, channels cycling per
    customer, one transaction each (``gap_s`` apart), then read back with their commits."""
    rng = random.Random(seed)
    world = HistoryWorld()
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        world.merchant = conn.execute(
            "INSERT INTO merchants (name, category, country) VALUES ('skew test', 'test', 'DE') "
            "RETURNING merchant_id"
        ).fetchone()[0]  # type: ignore[index]
        for _ in range(customers):
            world.customers.append(
                conn.execute(
                    "INSERT INTO customers (email, country) VALUES ('skew@test.invalid', 'DE') "
                    "RETURNING customer_id"
                ).fetchone()[0]  # type: ignore[index]
            )
        for i in range(n):
            customer = world.customers[i % customers]
            row = conn.execute(
                "INSERT INTO payments (customer_id, merchant_id, amount, channel, status) "
                "VALUES (%s, %s, %s, %s, 'approved') RETURNING payment_id",
                (customer, world.merchant, round(rng.uniform(5, 300), 2), CHANNELS[i % 3]),
            ).fetchone()
            world.ids.append(row[0])  # type: ignore[index]
            if gap_s:
                time.sleep(gap_s)
        world.scored = scored_payments(conn, world.ids)
    return world


def log_examples(
    settings: Settings,
    world: HistoryWorld,
    *,
    service: str = "fraud",
    labelled_at: datetime | None = None,
    changes: dict[int, dict[str, float]] | None = None,
    seed: int = 7,
) -> dict[int, dict[str, float]]:
    """Log one example per payment of ``world``: the ``service``'s vector as of its commit,
    read at its commit (``changes``: inputs to overwrite per payment), a random label and
    score, labelled one second apart from ``labelled_at`` (default: each commit time).
    Returns the logged vectors by payment."""
    rng = random.Random(seed)
    svc = feature_service(settings, service)
    probes = [
        Probe(world.scored[p], world.scored[p].position, world.scored[p].committed_at)
        for p in world.ids
    ]
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        vectors = vectors_as_of(conn, svc, probes)
        logged = {}
        for i, (pid, x) in enumerate(zip(world.ids, vectors, strict=True)):
            x = {**x, **(changes or {}).get(pid, {})}
            logged[pid] = x
            s = world.scored[pid]
            at = (labelled_at + timedelta(seconds=i)) if labelled_at else s.committed_at
            conn.execute(
                "INSERT INTO training_examples (namespace, payment_id, features, label, score, "
                "model_version, predicted_at, labelled_at, source) VALUES "
                "(%s, %s, %s, %s, %s, 'test', %s, %s, 'outcome')",
                (
                    settings.namespace,
                    pid,
                    orjson.dumps(x).decode(),
                    rng.random() < 0.3,
                    rng.random(),
                    s.committed_at,
                    at,
                ),
            )
    return logged
