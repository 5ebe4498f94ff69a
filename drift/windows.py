"""The two windows a drift check compares, read from ``training_examples`` of one namespace.

Reference (``reference_spec``, pure): what the champion was trained on when a retrain promoted
it (the newest ``size`` examples of that retrain's data window); otherwise the first ``size``
examples labelled after the champion was promoted (or registered); with no champion at all, the
first ``size`` examples of the namespace. Current (``current_spec``, pure): the newest ``size``
examples labelled within the last ``window_s`` seconds and after the reference ended, so the two
never overlap. Rows are the vectors exactly as scored, with label and served score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, text

from drift.exceptions import DriftCheckError

__all__ = [
    "Champion",
    "Example",
    "Window",
    "WindowSpec",
    "champion_of",
    "count_from",
    "current_spec",
    "load_window",
    "reference_spec",
]

ReferenceKind = Literal["retrain", "promotion", "first", "current"]


@dataclass(frozen=True)
class Champion:
    """The champion model and where its reference comes from."""

    version: str
    since: datetime  # promoted_at, or created_at when it was never promoted
    metrics: dict[str, Any] = field(default_factory=dict)  # model_registry.metrics
    retrain_start: datetime | None = None  # data window of the retrain that promoted it
    retrain_end: datetime | None = None


@dataclass(frozen=True)
class WindowSpec:
    """Which rows a window holds: labelled in [start, end] (``start_open``: start excluded),
    at most ``limit`` of them, the oldest first or the newest (``newest``)."""

    kind: ReferenceKind
    start: datetime | None
    end: datetime | None
    limit: int
    newest: bool
    start_open: bool = False


@dataclass(frozen=True)
class Example:
    payment_id: int
    features: dict[str, Any]
    label: bool
    score: float
    model_version: str
    predicted_at: datetime
    labelled_at: datetime


@dataclass(frozen=True)
class Window:
    """Rows of one window in label order, and the span they actually cover."""

    spec: WindowSpec
    rows: list[Example]

    @property
    def start(self) -> datetime | None:
        return self.rows[0].labelled_at if self.rows else self.spec.start

    @property
    def end(self) -> datetime | None:
        return self.rows[-1].labelled_at if self.rows else self.spec.end

    def column(self, name: str) -> list[Any]:
        """One feature over the rows; a row without it gives None (a quality finding)."""
        return [row.features.get(name) for row in self.rows]

    def feature_names(self) -> list[str]:
        names: set[str] = set()
        for row in self.rows:
            names.update(row.features)
        return sorted(names)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "n": len(self.rows),
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "limit": self.spec.limit,
        }


def reference_spec(
    champion: Champion | None, size: int, available: int | None = None
) -> WindowSpec:
    """The reference rule above, as a spec (pure).

    ``available``: how many rows there are from the reference's start on (counted up to
    ``2 * size``). While fewer than ``2 * size`` exist, a promotion or first-rows reference
    takes the first half of them, so the current window has the other half to be compared
    with; the reference grows until it holds ``size`` rows, then stays put.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> reference_spec(Champion("m2", t, retrain_start=t, retrain_end=t), 500).kind
    'retrain'
    >>> reference_spec(Champion("m1", t), 500).newest
    False
    >>> reference_spec(Champion("m1", t), 500, available=300).limit
    150
    """
    if (
        champion is not None
        and champion.retrain_start is not None
        and champion.retrain_end is not None
    ):
        return WindowSpec(
            "retrain", champion.retrain_start, champion.retrain_end, size, newest=True
        )
    limit = size if available is None or available >= 2 * size else max(available // 2, 1)
    if champion is None:
        return WindowSpec("first", None, None, limit, newest=False)
    return WindowSpec("promotion", champion.since, None, limit, newest=False)


def count_from(conn: Connection, namespace: str, start: datetime | None, cap: int) -> int:
    """Rows labelled at or after ``start`` (all rows: None), counted up to ``cap``."""
    where = "namespace = :ns" + ("" if start is None else " AND labelled_at >= :start")
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM training_examples WHERE {where} "  # noqa: S608
        "LIMIT :cap) AS t"
    )
    return int(conn.execute(text(sql), {"ns": namespace, "start": start, "cap": cap}).scalar_one())


def current_spec(
    now: datetime, window_s: float, size: int, reference_end: datetime | None
) -> WindowSpec:
    """The newest ``size`` rows of the last ``window_s`` seconds, after the reference (pure)."""
    start = now - timedelta(seconds=window_s)
    start_open = False
    if reference_end is not None and reference_end >= start:
        start, start_open = reference_end, True
    return WindowSpec("current", start, now, size, newest=True, start_open=start_open)


def champion_of(conn: Connection, namespace: str) -> Champion | None:
    """The namespace's champion, with the data window of the retrain that promoted it."""
    row = conn.execute(
        text(
            "SELECT version, coalesce(promoted_at, created_at) AS since, metrics "
            "FROM model_registry WHERE namespace = :ns AND status = 'champion'"
        ),
        {"ns": namespace},
    ).first()
    if row is None:
        return None
    retrain = conn.execute(
        text(
            "SELECT data_start, data_end FROM retrains WHERE namespace = :ns "
            "AND challenger_version = :v AND status = 'promoted' ORDER BY retrain_id DESC LIMIT 1"
        ),
        {"ns": namespace, "v": row.version},
    ).first()
    return Champion(
        version=row.version,
        since=row.since,
        metrics=dict(row.metrics or {}),
        retrain_start=None if retrain is None else retrain.data_start,
        retrain_end=None if retrain is None else retrain.data_end,
    )


def load_window(conn: Connection, namespace: str, spec: WindowSpec) -> Window:
    """The rows ``spec`` names, oldest first."""
    where = ["namespace = :ns"]
    params: dict[str, Any] = {"ns": namespace, "limit": spec.limit}
    if spec.start is not None:
        where.append("labelled_at > :start" if spec.start_open else "labelled_at >= :start")
        params["start"] = spec.start
    if spec.end is not None:
        where.append("labelled_at <= :end")
        params["end"] = spec.end
    order = "DESC" if spec.newest else "ASC"
    head = (
        "SELECT payment_id, features, label, score, model_version, predicted_at, "
        "labelled_at FROM training_examples"
    )
    cond = " AND ".join(where)
    tail = f"ORDER BY labelled_at {order}, payment_id {order} LIMIT :limit"
    # the fragments are fixed text; every value is a bound parameter
    sql = f"{head} WHERE {cond} {tail}"  # noqa: S608
    rows = []
    for r in conn.execute(text(sql), params):
        if not isinstance(r.features, dict):
            msg = (
                f"training_examples row {r.payment_id} of namespace {namespace!r} has "
                f"features of type {type(r.features).__name__}, expected a JSON object"
            )
            raise DriftCheckError(msg)
        rows.append(
            Example(
                int(r.payment_id),
                r.features,
                bool(r.label),
                float(r.score),
                r.model_version,
                r.predicted_at,
                r.labelled_at,
            )
        )
    if spec.newest:
        rows.reverse()
    return Window(spec, rows)
