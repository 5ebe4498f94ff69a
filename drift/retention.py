"""What retention keeps and drops, as pure decisions (the database shell is ``drift.prune``).

Training examples are partitioned by UTC day of ``labelled_at`` (``sql/006_retention.sql``), so
their retention is a choice of whole days. It is measured in EVENT time: against the newest
example in the table (the watermark), never the wall clock, so a replay of last month, or a run
where event time goes 2000x faster than the wall clock, drops exactly the days a real month
would. A day goes only when all of it lies ``retention_days`` or more before the watermark and
no protected span (a drift reference window, a running retrain's data) touches it.

>>> from datetime import UTC, date, datetime
>>> plan = plan_days({date(2026, 1, 1), date(2026, 1, 2)}, set(),
...                  watermark=datetime(2026, 1, 4, 12, tzinfo=UTC), retention_days=2,
...                  ahead_days=1, protected=[])
>>> plan.drop, plan.create
((datetime.date(2026, 1, 1),), (datetime.date(2026, 1, 4), datetime.date(2026, 1, 5)))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

__all__ = [
    "DayPlan",
    "PruneReport",
    "Span",
    "TableResult",
    "day_bounds",
    "partition_day",
    "partition_name",
    "plan_days",
]

PARTITION_PREFIX = "training_examples_p"


@dataclass(frozen=True)
class Span:
    """Examples labelled in [start, end] someone still reads (``end`` None: open, still growing;
    ``start`` None: from the first row on)."""

    start: datetime | None
    end: datetime | None
    why: str = ""

    def touches(self, day: date) -> bool:
        lo, hi = day_bounds(day)
        return (self.start is None or self.start < hi) and (self.end is None or self.end >= lo)


@dataclass(frozen=True)
class DayPlan:
    """Days to act on: ``drop`` existing partitions, ``purge`` rows of the default partition,
    ``split`` the default partition's rows into new day partitions, ``create`` empty ones ahead;
    ``held`` old enough to go but protected."""

    cutoff: datetime | None
    drop: tuple[date, ...] = ()
    purge: tuple[date, ...] = ()
    split: tuple[date, ...] = ()
    create: tuple[date, ...] = ()
    held: tuple[date, ...] = ()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC half-open range [start, end) of one day's partition."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


def partition_name(day: date) -> str:
    """``training_examples_pYYYYMMDD``, as ``freshloop_examples_partition`` names it."""
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day of a partition named by ``partition_name``; None for any other table."""
    if not name.startswith(PARTITION_PREFIX):
        return None
    try:
        return datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None


def plan_days(
    partitions: Iterable[date],
    default_days: Iterable[date],
    *,
    watermark: datetime | None,
    retention_days: int,
    ahead_days: int,
    protected: Sequence[Span],
) -> DayPlan:
    """Which days to drop, purge, split out of the default partition and create (pure).

    ``partitions``: days with a partition; ``default_days``: days with rows in the default
    partition; ``watermark``: the newest ``labelled_at`` (None: no examples, nothing to do).
    """
    existing = set(partitions)
    in_default = set(default_days)
    if watermark is None:
        return DayPlan(None, split=tuple(sorted(in_default - existing)))
    cutoff = watermark - timedelta(days=retention_days)

    def expired(day: date) -> bool:
        return day_bounds(day)[1] <= cutoff

    def guarded(day: date) -> bool:
        return any(span.touches(day) for span in protected)

    old = {d for d in existing | in_default if expired(d)}
    held = {d for d in old if guarded(d)}
    gone = old - held
    today = watermark.astimezone(UTC).date()
    ahead = {today + timedelta(days=i) for i in range(ahead_days + 1)}
    split = in_default - gone
    return DayPlan(
        cutoff=cutoff,
        drop=tuple(sorted(gone & existing)),
        purge=tuple(sorted(gone & in_default - existing)),
        split=tuple(sorted(split)),
        create=tuple(sorted(ahead - existing - split)),
        held=tuple(sorted(held)),
    )


@dataclass(frozen=True)
class TableResult:
    """What went (or would go) from one table: rows and their bytes."""

    table: str
    rows: int
    bytes: int
    detail: str = ""


@dataclass
class PruneReport:
    """One prune: per table, what went (``dry_run``: what would go), and the notes to read."""

    dry_run: bool
    watermark: datetime | None = None
    cutoff: datetime | None = None
    tables: list[TableResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("watermark", "cutoff"):
            value = out[key]
            out[key] = None if value is None else value.isoformat()
        return out

    def lines(self) -> list[str]:
        """Human lines, one per table, then the notes."""
        verb = "would go" if self.dry_run else "went"
        head = (
            f"examples watermark {self.watermark.isoformat() if self.watermark else '-'}, "
            f"cutoff {self.cutoff.isoformat() if self.cutoff else '-'}"
        )
        out = [head]
        for t in self.tables:
            tail = f" ({t.detail})" if t.detail else ""
            out.append(f"{t.table}: {t.rows} rows, {t.bytes} bytes {verb}{tail}")
        out.extend(f"note: {n}" for n in self.notes)
        return out
