"""Apply retention to Postgres: ``freshloop db prune`` and the drift scheduler's prune job.

- ``training_examples``: partition maintenance, database-wide (a day's partition holds every
  namespace): rows waiting in the default partition move into their day's partition, the days
  just ahead of the watermark are created, and days past the retention are dropped (default
  rows of such days deleted), except days a drift reference window or a live retrain reads,
  in any namespace (``drift.retention.plan_days`` decides).
- the row history (``sql/009_history.sql``): versions no payment of an example that stays can
  see (``drift.prune_history``), so retrains from recomputed vectors and the skew audit keep
  what they read.
- ``drift_reports``, ``retrains``, ``model_registry``, ``learner_checkpoints``: the newest N per
  namespace (``namespaces``: only those; None: all). Never the champion, a model a running retrain
  or the newest checkpoint names, a running retrain, the retrain that promoted the champion (its
  data window is the drift reference), or the newest checkpoint.

``dry_run`` reads the same decisions and changes nothing. One prune at a time per schema (a
transaction-level advisory lock); locks are waited for at most ``_LOCK_TIMEOUT`` so the
learner is never stalled for long.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from drift.prune_history import prune_history
from drift.retention import (
    DayPlan,
    PruneReport,
    Span,
    TableResult,
    day_bounds,
    partition_day,
    partition_name,
    plan_days,
)
from drift.windows import champion_of, reference_spec
from freshloop.core.settings import Settings

__all__ = ["prune"]

log = logging.getLogger(__name__)

_LOCK_TIMEOUT = "10s"
_DEFAULT = "training_examples_default"
_COLUMNS = (
    "namespace, payment_id, features, label, score, model_version, predicted_at, "
    "labelled_at, source, learned_at"
)

# Each victims query selects the key of the rows to go; {scope} limits the namespaces.
_VICTIMS: dict[str, tuple[str, str, str]] = {
    "drift_reports": (
        "report_id",
        "SELECT report_id FROM (SELECT report_id, row_number() OVER (PARTITION BY namespace "
        "ORDER BY report_id DESC) AS rn FROM drift_reports WHERE {scope}) AS r WHERE rn > :keep",
        "retention_drift_reports_keep",
    ),
    "retrains": (
        "retrain_id",
        "SELECT retrain_id FROM (SELECT retrain_id, status, row_number() OVER (PARTITION BY "
        "namespace ORDER BY retrain_id DESC) AS rn FROM retrains WHERE {scope}) AS r "
        "WHERE rn > :keep AND status <> 'running' AND retrain_id NOT IN ("
        " SELECT max(t.retrain_id) FROM retrains AS t JOIN model_registry AS m"
        " ON m.namespace = t.namespace AND m.version = t.challenger_version"
        " AND m.status = 'champion' WHERE t.status = 'promoted' GROUP BY t.namespace)",
        "retention_retrains_keep",
    ),
    "model_registry": (
        "(namespace, version)",
        "SELECT namespace, version FROM (SELECT namespace, version, status, row_number() OVER "
        "(PARTITION BY namespace ORDER BY created_at DESC, version DESC) AS rn "
        "FROM model_registry WHERE {scope}) AS m WHERE rn > :keep AND status <> 'champion' "
        "AND NOT EXISTS (SELECT 1 FROM retrains AS r WHERE r.namespace = m.namespace "
        " AND r.status = 'running' AND m.version IN (r.champion_version, r.challenger_version)) "
        "AND NOT EXISTS (SELECT 1 FROM (SELECT DISTINCT ON (namespace) namespace, model_version "
        " FROM learner_checkpoints ORDER BY namespace, checkpoint_id DESC) AS c "
        " WHERE c.namespace = m.namespace AND c.model_version = m.version)",
        "retention_models_keep",
    ),
    "learner_checkpoints": (
        "checkpoint_id",
        "SELECT checkpoint_id FROM (SELECT checkpoint_id, row_number() OVER (PARTITION BY "
        "namespace ORDER BY checkpoint_id DESC) AS rn FROM learner_checkpoints WHERE {scope}) "
        "AS c WHERE rn > :keep",
        "retention_checkpoints_keep",
    ),
}

# A running retrain protects what it reads while it shows life (as drift.ledger judges it).
_LIVE_RETRAINS = (
    "SELECT namespace, data_start FROM retrains WHERE status = 'running' AND "
    "coalesce((progress->>'updated_at')::timestamptz, started_at) "
    ">= now() - make_interval(secs => :stale)"
)


def prune(
    engine: Engine,
    settings: Settings,
    *,
    dry_run: bool = False,
    namespaces: Sequence[str] | None = None,
) -> PruneReport:
    """Apply (``dry_run``: show) retention; see the module docstring."""
    report = PruneReport(dry_run=dry_run)
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
            got = conn.execute(
                text(
                    "SELECT pg_try_advisory_xact_lock("
                    "hashtext('freshloop prune ' || current_schema()))"
                )
            ).scalar_one()
            if not got:
                report.notes.append("another prune is running: nothing done")
            else:
                _examples(conn, settings, report, dry_run)
                for table in _VICTIMS:
                    report.tables.append(_count_table(conn, settings, table, namespaces, dry_run))
        except BaseException:
            trans.rollback()
            raise
        if dry_run or not got:
            trans.rollback()  # a dry run read the same decisions; nothing is kept
        else:
            trans.commit()
    log.info("prune dry_run=%s %s", dry_run, " ".join(f"{t.table}={t.rows}" for t in report.tables))
    return report


# -- training_examples ----------------------------------------------------------------------
def _examples(conn: Connection, settings: Settings, report: PruneReport, dry_run: bool) -> None:
    partitions, has_default = _partitions(conn)
    default_days = _default_days(conn) if has_default else {}
    namespaces = _example_namespaces(conn)
    watermark = _watermark(conn, namespaces)
    protected = _protected(conn, settings, namespaces)
    plan = plan_days(
        partitions,
        default_days,
        watermark=watermark,
        retention_days=settings.retention_examples_days,
        ahead_days=settings.retention_partitions_ahead_days,
        protected=protected,
    )
    report.watermark, report.cutoff = watermark, plan.cutoff
    rows, size = 0, 0
    for day in plan.drop:
        name = partition_name(day)
        n, b = conn.execute(
            text(
                f"SELECT (SELECT count(*) FROM {name}), pg_total_relation_size(:t)"  # noqa: S608
            ),
            {"t": name},
        ).one()
        rows, size = rows + int(n), size + int(b)
    for day in plan.purge:
        n, b = default_days[day]
        rows, size = rows + n, size + b
    if plan.held:
        report.notes.append(
            f"training_examples: {len(plan.held)} expired day(s) kept for drift reference "
            f"windows or running retrains ({plan.held[0]} .. {plan.held[-1]})"
        )
    report.tables.append(TableResult("training_examples", rows, size, _describe(plan)))
    if not dry_run:
        _apply(conn, plan)
    history = prune_history(
        conn,
        partitions=partitions,
        default_days=default_days,
        plan=plan,
        namespaces=namespaces,
        dry_run=dry_run,
        notes=report.notes,
    )
    if history is not None:
        report.tables.append(history)


def _describe(plan: DayPlan) -> str:
    parts = [f"{len(plan.drop)} partition(s) dropped"]
    if plan.purge:
        parts.append(f"{len(plan.purge)} day(s) purged from the default partition")
    if plan.split:
        parts.append(f"{len(plan.split)} day(s) moved out of the default partition")
    if plan.create:
        parts.append(f"{len(plan.create)} partition(s) created ahead")
    return ", ".join(parts)


def _apply(conn: Connection, plan: DayPlan) -> None:
    for day in plan.purge:
        lo, hi = day_bounds(day)
        conn.execute(
            text(
                f"DELETE FROM {_DEFAULT} WHERE labelled_at >= :lo "  # noqa: S608
                "AND labelled_at < :hi"
            ),
            {"lo": lo, "hi": hi},
        )
    for day in plan.split:
        # The new partition may not be created while the default holds rows of its day: move
        # them aside, create it, put them back (routed into it), all in this transaction.
        lo, hi = day_bounds(day)
        conn.execute(
            text("CREATE TEMP TABLE _freshloop_moving (LIKE training_examples) ON COMMIT DROP")
        )
        conn.execute(
            text(
                f"WITH moved AS (DELETE FROM {_DEFAULT} WHERE labelled_at >= :lo AND "  # noqa: S608
                f"labelled_at < :hi RETURNING {_COLUMNS}) "
                f"INSERT INTO _freshloop_moving ({_COLUMNS}) SELECT {_COLUMNS} FROM moved"
            ),
            {"lo": lo, "hi": hi},
        )
        conn.execute(text("SELECT freshloop_examples_partition(:d)"), {"d": day})
        conn.execute(
            text(
                f"INSERT INTO training_examples ({_COLUMNS}) "  # noqa: S608
                f"SELECT {_COLUMNS} FROM _freshloop_moving"
            )
        )
        conn.execute(text("DROP TABLE _freshloop_moving"))
    for day in plan.create:
        conn.execute(text("SELECT freshloop_examples_partition(:d)"), {"d": day})
    for day in plan.drop:
        conn.execute(text(f"DROP TABLE IF EXISTS {partition_name(day)}"))
    if plan.drop or plan.purge or plan.split or plan.create:
        log.info(
            "training_examples partitions dropped=%s purged=%s split=%s created=%s",
            [str(d) for d in plan.drop],
            [str(d) for d in plan.purge],
            [str(d) for d in plan.split],
            [str(d) for d in plan.create],
        )


def _partitions(conn: Connection) -> tuple[set[date], bool]:
    names = (
        conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'training_examples'::regclass"
            )
        )
        .scalars()
        .all()
    )
    days = {d for d in (partition_day(n) for n in names) if d is not None}
    return days, _DEFAULT in names


def _default_days(conn: Connection) -> dict[date, tuple[int, int]]:
    rows = conn.execute(
        text(
            f"SELECT (labelled_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n, "  # noqa: S608
            f"coalesce(sum(pg_column_size(t.*)), 0) AS b FROM {_DEFAULT} AS t GROUP BY 1"
        )
    ).all()
    return {r.day: (int(r.n), int(r.b)) for r in rows}


def _example_namespaces(conn: Connection) -> list[str]:
    """Every namespace with examples, by a skip scan of the (namespace, labelled_at) index."""
    return list(
        conn.execute(
            text(
                "WITH RECURSIVE ns AS ("
                " (SELECT namespace FROM training_examples ORDER BY namespace LIMIT 1)"
                " UNION ALL SELECT (SELECT t.namespace FROM training_examples AS t"
                "  WHERE t.namespace > ns.namespace ORDER BY t.namespace LIMIT 1)"
                " FROM ns WHERE ns.namespace IS NOT NULL)"
                " SELECT namespace FROM ns WHERE namespace IS NOT NULL"
            )
        )
        .scalars()
        .all()
    )


def _watermark(conn: Connection, namespaces: Sequence[str]) -> datetime | None:
    """The newest ``labelled_at`` of the table (per namespace: served by the index)."""
    newest = [
        conn.execute(
            text("SELECT max(labelled_at) FROM training_examples WHERE namespace = :ns"), {"ns": ns}
        ).scalar_one()
        for ns in namespaces
    ]
    found = [t for t in newest if t is not None]
    return max(found) if found else None


def _protected(conn: Connection, settings: Settings, namespaces: Sequence[str]) -> list[Span]:
    """What the drift reference windows and the live retrains of every namespace read."""
    spans = []
    for ns in namespaces:
        span = _reference_span(conn, ns, settings.drift_reference_size)
        if span is not None:
            spans.append(span)
    for row in conn.execute(text(_LIVE_RETRAINS), {"stale": settings.retrain_stale_after_s}):
        # no data window yet: it is about to read; keep every day until it has chosen
        spans.append(Span(row.data_start, None, f"retrain running in {row.namespace}"))
    return spans


def _reference_span(conn: Connection, namespace: str, size: int) -> Span | None:
    """The labelled_at span of the rows ``drift.windows`` reads as this namespace's reference
    (up to ``size`` of them); open-ended while the reference is still filling up."""
    spec = reference_spec(champion_of(conn, namespace), size)
    where = ["namespace = :ns"]
    params: dict[str, Any] = {"ns": namespace, "limit": spec.limit}
    if spec.start is not None:
        where.append("labelled_at >= :start")
        params["start"] = spec.start
    if spec.end is not None:
        where.append("labelled_at <= :end")
        params["end"] = spec.end
    order = "DESC" if spec.newest else "ASC"
    row = conn.execute(
        text(
            "SELECT min(labelled_at) AS lo, max(labelled_at) AS hi, count(*) AS n FROM ("  # noqa: S608
            f"SELECT labelled_at FROM training_examples WHERE {' AND '.join(where)} "
            f"ORDER BY labelled_at {order} LIMIT :limit) AS w"
        ),
        params,
    ).one()
    why = f"drift reference of {namespace} ({spec.kind})"
    if spec.kind == "retrain":
        return None if row.n == 0 else Span(row.lo, row.hi, why)
    if row.n < spec.limit:  # still filling: everything from its start on may join it
        start = row.lo if row.lo is not None else spec.start
        return Span(start, None, why) if start is not None else None
    return Span(row.lo, row.hi, why)


# -- the count-bounded tables ---------------------------------------------------------------
def _count_table(
    conn: Connection,
    settings: Settings,
    table: str,
    namespaces: Sequence[str] | None,
    dry_run: bool,
) -> TableResult:
    key, victims, setting = _VICTIMS[table]
    keep = int(getattr(settings, setting))
    scope = "TRUE" if namespaces is None else "namespace = ANY(:namespaces)"
    params: dict[str, Any] = {"keep": keep, "namespaces": list(namespaces or [])}
    chosen = victims.format(scope=scope)
    if dry_run:
        sql = (
            f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {table} AS t "  # noqa: S608
            f"WHERE {_qualified(key)} IN ({chosen})"
        )
    else:
        sql = (
            f"WITH gone AS (DELETE FROM {table} AS t WHERE {_qualified(key)} IN "  # noqa: S608
            f"({chosen}) RETURNING pg_column_size(t.*) AS b) "
            "SELECT count(*), coalesce(sum(b), 0) FROM gone"
        )
    n, b = conn.execute(text(sql), params).one()
    return TableResult(table, int(n), int(b), f"newest {keep} per namespace kept")


def _qualified(key: str) -> str:
    if key.startswith("("):
        return "(" + ", ".join(f"t.{k.strip()}" for k in key.strip("()").split(",")) + ")"
    return f"t.{key}"
