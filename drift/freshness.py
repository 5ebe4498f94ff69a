"""Freshness for a drift report: commit -> visible lag, and entities whose features are stale.

Lag: the feature pipeline's live stats in Redis (``feature_pipelines.pipeline_stats``); the
report takes the worst ``lag_p99_ms`` over the live consumers (no consumer: unknown).

Stale entities: checking every entity against the SQL oracle costs a query per entity, so the
check takes the customers of the most recently labelled payments of the current window (the
entities a model just scored: the ones whose staleness matters) up to ``sample``, compares
their online features with the oracle, and compares the ones that differ once more after
``recheck_s``. A difference that outlives the recheck is not in-flight pipeline lag: the entity
is stale. Failures are recorded in the result (``error``), never raised: a report still matters
when Redis is down, and says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, text

from freshloop.core.settings import Settings

__all__ = ["pipeline_lag", "stale_entities", "worst_p99"]

log = logging.getLogger(__name__)


def worst_p99(stats: Sequence[dict[str, Any]]) -> float | None:
    """The largest ``lag_p99_ms`` over consumers that applied something recently (pure).

    >>> worst_p99([{"lag_p99_ms": 12.0}, {"lag_p99_ms": None}, {"lag_p99_ms": 30.5}])
    30.5
    >>> worst_p99([]) is None
    True
    """
    values = [float(s["lag_p99_ms"]) for s in stats if s.get("lag_p99_ms") is not None]
    return max(values) if values else None


def pipeline_lag(settings: Settings) -> dict[str, Any]:
    """The live consumers' stats and their worst p99 lag (None: unknown)."""
    import redis

    from feature_pipelines import pipeline_stats
    from feature_pipelines.cluster_read import layout_client

    try:
        client = layout_client(settings, "reader", socket_timeout=5)
        try:
            stats = pipeline_stats(client, settings.namespace)
        finally:
            client.close()
    except redis.RedisError as exc:
        log.warning(
            "freshness: pipeline stats unreadable namespace=%s error=%s", settings.namespace, exc
        )
        return {"p99_ms": None, "consumers": [], "error": f"Redis: {exc}"}
    return {"p99_ms": worst_p99(stats), "consumers": stats, "error": None}


def _recent_customers(engine: Engine, payment_ids: Sequence[int], sample: int) -> list[int]:
    if not payment_ids or sample <= 0:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT customer_id, max(payment_id) AS last FROM payments "
                "WHERE payment_id = ANY(:ids) GROUP BY customer_id ORDER BY last DESC LIMIT :n"
            ),
            {"ids": list(payment_ids), "n": sample},
        )
        return [int(r.customer_id) for r in rows]


def stale_entities(
    settings: Settings, engine: Engine, recent_payment_ids: Sequence[int]
) -> dict[str, Any]:
    """Customers of ``recent_payment_ids`` (newest first) whose features stay wrong."""
    if settings.drift_stale_sample <= 0:
        return {"stale": None, "checked": 0, "entities": [], "error": "disabled"}
    try:
        customers = _recent_customers(engine, recent_payment_ids, settings.drift_stale_sample)
        if not customers:
            return {"stale": 0, "checked": 0, "entities": [], "error": None}
        from feature_pipelines import SAMPLE_FEATURES, verify
        from feature_pipelines.cluster_read import store_for

        store = store_for(settings, SAMPLE_FEATURES)  # one Redis or a cluster (redis_layout)
        conninfo = settings.postgres_conninfo()
        first = verify(conninfo, store, only={"customer": customers})
        differing = sorted({m.key for m in first.mismatches if m.entity == "customer"})
        stale: list[str] = []
        if differing:
            time.sleep(settings.drift_stale_recheck_s)
            again = verify(conninfo, store, only={"customer": differing})
            stale = sorted({m.key for m in again.mismatches if m.entity == "customer"})
    except Exception as exc:  # a freshness probe must not sink the report
        log.warning("freshness: stale check failed namespace=%s error=%s", settings.namespace, exc)
        return {
            "stale": None,
            "checked": 0,
            "entities": [],
            "error": f"{type(exc).__name__}: {exc}",
        }
    return {"stale": len(stale), "checked": len(customers), "entities": stale[:50], "error": None}
