"""The skew audit's shell: read logged examples, recompute them from history, judge them.

``freshloop skew report [--from --to]`` and the scheduled drift check (a section of every
report, ``FRESHLOOP_SKEW_SAMPLE`` newest examples, 0: off) run ``audit``: the namespace's
logged training examples (newest first, at most ``limit``), each payment's vector as of its own
commit position read at its ``predicted_at``, and, for the examples that differ, the vectors at
the commit positions of changes within ``FRESHLOOP_SKEW_TOLERANCE_S`` of its commit (at most
``_MAX_NEIGHBOURS`` per example, the nearest). Reads only: nothing is stored here.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg

from drift.skew import ExampleVerdict, SkewSummary, judge_example, summarize
from feature_pipelines.services import FeatureService
from freshloop.core.settings import Settings
from online_learning.point_in_time import Probe, positions_near, scored_payments, vectors_as_of
from online_learning.services import feature_service
from online_learning.training_set import ScoredPayment
from online_learning.vector import input_sources

__all__ = ["audit", "input_groups"]

log = logging.getLogger(__name__)

_MAX_NEIGHBOURS = 300


def input_groups(service: FeatureService, names: list[str]) -> dict[str, str]:
    """Each input's entity ('' for the payment's own inputs), as the scorer reads them."""
    entity = {f.name: f.entity.name for f in service.definitions()}
    out = {}
    for name in names:
        sources = input_sources(name, service.features)
        out[name] = entity.get(sources[0], "") if sources else ""
    return out


def _examples(
    conn: psycopg.Connection,
    namespace: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[tuple[int, dict[str, Any], datetime]]:
    where = ["namespace = %(ns)s"]
    params: dict[str, Any] = {"ns": namespace, "limit": limit}
    if start is not None:
        where.append("predicted_at >= %(start)s")
        params["start"] = start
    if end is not None:
        where.append("predicted_at < %(end)s")
        params["end"] = end
    query = (
        "SELECT payment_id, features, predicted_at FROM training_examples "  # noqa: S608
        f"WHERE {' AND '.join(where)} ORDER BY labelled_at DESC, payment_id DESC LIMIT %(limit)s"
    )
    return [(r[0], dict(r[1]), r[2]) for r in conn.execute(query, params)]


def _neighbour_probes(
    conn: psycopg.Connection,
    service: FeatureService,
    s: ScoredPayment,
    read_at: datetime,
    tol: float,
) -> list[Probe]:
    span = timedelta(seconds=tol)
    found = positions_near(conn, service, s.committed_at - span, s.committed_at + span, s.payment)
    candidates = {p for p in found if p != s.position}
    if found:
        candidates.add(found[0] - 1)  # the state as the span began
    nearest = sorted(candidates, key=lambda p: (abs(p - s.position), p))[:_MAX_NEIGHBOURS]
    return [Probe(s, p, read_at) for p in sorted(nearest)]


def audit(
    settings: Settings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> SkewSummary:
    """Audit the namespace's newest ``limit`` (default ``skew_sample``) logged examples scored
    in [start, end) against the row history; see the module docstring."""
    started = time.perf_counter()
    service = feature_service(settings)
    tol = settings.skew_tolerance_s
    n = settings.skew_sample if limit is None else limit
    verdicts: list[ExampleVerdict] = []
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("SET jit = off")  # many small index scans per statement
        rows = _examples(conn, settings.namespace, start, end, n) if n > 0 else []
        scored = scored_payments(conn, [r[0] for r in rows])
        kept = [r for r in rows if r[0] in scored]
        own = vectors_as_of(
            conn, service, [Probe(scored[p], scored[p].position, t) for p, _, t in kept]
        )
        groups = input_groups(service, list(own[0]) if own else [])
        for (pid, logged, predicted_at), x in zip(kept, own, strict=True):
            verdict = judge_example(pid, logged, x, [], groups)
            if verdict.verdict != "exact":
                probes = _neighbour_probes(conn, service, scored[pid], predicted_at, tol)
                verdict = judge_example(
                    pid, logged, x, vectors_as_of(conn, service, probes), groups
                )
            verdicts.append(verdict)
    summary = summarize(
        verdicts, tolerance_s=tol, max_share=settings.skew_max_share, sampled=len(rows)
    )
    times = [r[2] for r in rows]
    summary.window = (
        min(times).isoformat() if times else None,
        max(times).isoformat() if times else None,
    )
    log.info(
        "skew audit namespace=%s sampled=%s compared=%s examples=%s status=%s seconds=%.2f",
        settings.namespace,
        summary.sampled,
        summary.compared,
        summary.examples,
        summary.status,
        time.perf_counter() - started,
    )
    return summary
