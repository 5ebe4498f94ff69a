"""Retention of the row history (``sql/009_history.sql``), part of ``freshloop db prune``.

``freshloop_prune_history(before)`` drops the versions closed before ``before``: every payment
committed after it keeps its point-in-time vector exact. What the history must serve is the
training examples that stay (those retention keeps, and the days it holds for drift reference
windows and running retrains): a retrain from recomputed vectors and the skew audit recompute
their payments. So ``before`` is the first commit of the oldest payment of any example that
stays (the smallest payment id: ids are drawn in insert order), less ``HISTORY_MARGIN``
(transactions that drew their ids in one order and committed in the other, and the skew
audit's neighbouring commits). Nothing is pruned without examples, or when the oldest
payment has no history (committed before it started: everything after may still be needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, text

from drift.retention import DayPlan, TableResult, day_bounds

__all__ = ["HISTORY_MARGIN", "history_before", "kept_from", "prune_history"]

HISTORY_MARGIN = timedelta(hours=1)

_TABLES = ("payments_history", "payment_outcomes_history")


def kept_from(
    partitions: Iterable[date], default_days: Iterable[date], plan: DayPlan
) -> datetime | None:
    """The start of the oldest day of examples the plan leaves (None: none left).

    >>> from datetime import UTC
    >>> plan = DayPlan(None, drop=(date(2026, 1, 1),), purge=(date(2026, 1, 2),))
    >>> kept_from({date(2026, 1, 1), date(2026, 1, 3)}, {date(2026, 1, 2)}, plan)
    datetime.datetime(2026, 1, 3, 0, 0, tzinfo=datetime.timezone.utc)
    """
    left = (set(partitions) | set(default_days)) - set(plan.drop) - set(plan.purge)
    return day_bounds(min(left))[0] if left else None


def history_before(
    first_commit: datetime | None, margin: timedelta = HISTORY_MARGIN
) -> datetime | None:
    """The ``before`` of ``freshloop_prune_history`` given the first commit of the oldest
    payment still needed (None, or the history's start at -infinity: prune nothing).

    >>> from datetime import UTC
    >>> history_before(datetime(2026, 1, 3, 12, tzinfo=UTC))
    datetime.datetime(2026, 1, 3, 11, 0, tzinfo=datetime.timezone.utc)
    >>> history_before(datetime.min.replace(tzinfo=UTC)) is None
    True
    """
    if (
        first_commit is None
        or first_commit <= datetime.min.replace(tzinfo=first_commit.tzinfo) + margin
    ):
        return None
    return first_commit - margin


def _oldest_payment(conn: Connection, namespaces: Sequence[str], since: datetime) -> int | None:
    """The smallest payment id of the examples labelled at or after ``since`` (per namespace:
    older day partitions pruned by the plan, each read in payment order)."""
    found = [
        conn.execute(
            text(
                "SELECT payment_id FROM training_examples WHERE namespace = :ns "
                "AND labelled_at >= :since ORDER BY payment_id LIMIT 1"
            ),
            {"ns": ns, "since": since},
        ).scalar_one_or_none()
        for ns in namespaces
    ]
    ids = [p for p in found if p is not None]
    return min(ids) if ids else None


def prune_history(
    conn: Connection,
    *,
    partitions: Iterable[date],
    default_days: Iterable[date],
    plan: DayPlan,
    namespaces: Sequence[str],
    dry_run: bool,
    notes: list[str],
) -> TableResult | None:
    """Prune (``dry_run``: count) the history versions no example that stays needs; None when
    the database keeps no history (``freshloop db init`` not run since sql/009)."""
    if conn.execute(text("SELECT to_regclass('payments_history')")).scalar_one() is None:
        return None
    since = kept_from(partitions, default_days, plan)
    oldest = None if since is None else _oldest_payment(conn, namespaces, since)
    first = (
        None
        if oldest is None
        else conn.execute(
            text(
                "SELECT nullif(_committed_at, '-infinity') FROM payments_history "
                "WHERE payment_id = :p ORDER BY _version LIMIT 1"
            ),
            {"p": oldest},
        ).scalar_one_or_none()
    )
    before = history_before(first)
    if before is None:
        why = (
            "no training examples stay"
            if oldest is None
            else f"the oldest payment an example still needs ({oldest}) predates the history"
        )
        notes.append(f"row history: nothing pruned ({why})")
        return TableResult("row history", 0, 0, "kept whole")
    detail = (
        f"versions closed before {before.isoformat()} (payment {oldest}, the oldest an example "
        f"that stays needs, committed at {first.isoformat() if first else '-'})"
    )
    rows = size = 0
    for table in _TABLES:
        n, b = conn.execute(
            text(
                f"SELECT count(*), coalesce(sum(pg_column_size(h.*)), 0) FROM {table} AS h "  # noqa: S608
                "WHERE _closed_at < :before"
            ),
            {"before": before},
        ).one()
        rows, size = rows + int(n), size + int(b)
    if not dry_run:
        gone = conn.execute(
            text("SELECT freshloop_prune_history(:before)"), {"before": before}
        ).scalar_one()
        rows = int(gone)
    return TableResult("row history", rows, size, detail)
