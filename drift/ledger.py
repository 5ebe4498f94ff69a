"""The ``retrains`` table of one namespace: the one-at-a-time guard, progress and outcomes.

The guard is the database's: a partial unique index allows one ``running`` row per namespace,
so whichever process inserts second gets ``RetrainBusyError``, with no race between check and
insert. A process that dies mid-retrain leaves its row ``running``; a row whose progress has not
moved for ``stale_after_s`` (it shows life through ``progress->>'updated_at'``, else its start)
is marked ``failed`` ("abandoned") before the next retrain starts, and the policy does not count
it as running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError

from drift.exceptions import RetrainBusyError, RetrainError

__all__ = ["RetrainLedger", "RetrainState"]

# A running retrain is live while its last progress (or its start) is recent enough.
_LIVE = (
    "coalesce((progress->>'updated_at')::timestamptz, started_at) "
    ">= now() - make_interval(secs => :stale)"
)

log = logging.getLogger(__name__)

_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"

_COLUMNS = (
    "data_start",
    "data_end",
    "n_train",
    "n_holdout",
    "champion_version",
    "challenger_version",
    "champion_metrics",
    "challenger_metrics",
)
_JSON_COLUMNS = {"champion_metrics", "challenger_metrics", "progress"}


@dataclass(frozen=True)
class RetrainState:
    """What the policy needs: when the newest retrain started, and whether one runs now."""

    last_started_at: datetime | None
    running: bool


class RetrainLedger:
    """Rows of ``retrains`` for one namespace."""

    def __init__(self, engine: Engine, namespace: str, stale_after_s: float = 1800.0) -> None:
        self.engine = engine
        self.ns = namespace
        self.stale_after_s = stale_after_s

    def abandon_stale(self) -> int:
        """Mark ``running`` rows without progress for ``stale_after_s`` failed; returns how many."""
        with self.engine.begin() as conn:
            done = conn.execute(
                text(
                    "UPDATE retrains SET status = 'failed', finished_at = now(), detail = :detail "  # noqa: S608 (a fixed fragment)
                    f"WHERE namespace = :ns AND status = 'running' AND NOT ({_LIVE})"
                ),
                {
                    "ns": self.ns,
                    "stale": self.stale_after_s,
                    "detail": f"abandoned: no progress for {self.stale_after_s:.0f}s "
                    "(its process stopped?)",
                },
            )
        if done.rowcount:
            log.warning(
                "stale retrains marked failed namespace=%s count=%d", self.ns, done.rowcount
            )
        return int(done.rowcount)

    def start(self, trigger: str, reason: str, report_id: int | None = None) -> int:
        """Insert the ``running`` row of a new retrain; ``RetrainBusyError`` if one runs."""
        if trigger not in ("manual", "policy"):
            msg = f"retrain trigger must be 'manual' or 'policy', got {trigger!r}"
            raise RetrainError(msg)
        self.abandon_stale()
        try:
            with self.engine.begin() as conn:
                retrain_id = conn.execute(
                    text(
                        "INSERT INTO retrains (namespace, trigger, reason, report_id, progress) "
                        "VALUES (:ns, :trigger, :reason, :report_id, :progress) "
                        "RETURNING retrain_id"
                    ).bindparams(bindparam("progress", type_=JSONB)),
                    {
                        "ns": self.ns,
                        "trigger": trigger,
                        "reason": reason,
                        "report_id": report_id,
                        "progress": _progress("queued", 0.0),
                    },
                ).scalar_one()
        except IntegrityError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code == _FOREIGN_KEY_VIOLATION:
                msg = f"drift report {report_id} does not exist in namespace {self.ns!r}"
                raise RetrainError(msg) from exc
            if code != _UNIQUE_VIOLATION:
                raise
            msg = self._busy_message()
            raise RetrainBusyError(msg) from exc
        log.info(
            "retrain started namespace=%s retrain_id=%d trigger=%s reason=%r",
            self.ns,
            retrain_id,
            trigger,
            reason,
        )
        return int(retrain_id)

    def _busy_message(self) -> str:
        row = self.running()
        if row is None:  # it finished in between
            return f"a retrain of namespace {self.ns!r} was running; try again"
        pct = row["progress"].get("pct", 0)
        return (
            f"retrain {row['retrain_id']} of namespace {self.ns!r} is running since "
            f"{row['started_at'].isoformat()} ({pct:.0f}% done): one retrain at a time, wait "
            f"for it (a retrain without progress for {self.stale_after_s:.0f}s is given up)"
        )

    def progress(self, retrain_id: int, phase: str, pct: float, **extra: Any) -> dict[str, Any]:
        """Store how far a retrain got (also its sign of life); returns what was stored."""
        progress = _progress(phase, pct, **extra)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE retrains SET progress = :progress WHERE retrain_id = :id "
                    "AND status = 'running'"
                ).bindparams(bindparam("progress", type_=JSONB)),
                {"progress": progress, "id": retrain_id},
            )
        return progress

    def update(self, retrain_id: int, **fields: Any) -> None:
        """Set some of the data-window, size, version and metrics columns."""
        self._set(retrain_id, fields, only_running=True)

    def finish(self, retrain_id: int, status: str, detail: str, **fields: Any) -> None:
        """Close the row with its outcome (promoted, kept or failed)."""
        self._set(
            retrain_id,
            {**fields, "status": status, "detail": detail, "finished_at": datetime.now(UTC)},
            only_running=False,
        )
        log.info(
            "retrain finished namespace=%s retrain_id=%d status=%s detail=%r",
            self.ns,
            retrain_id,
            status,
            detail,
        )

    def _set(self, retrain_id: int, fields: dict[str, Any], *, only_running: bool) -> None:
        allowed = set(_COLUMNS) | {"status", "detail", "finished_at", "progress"}
        unknown = set(fields) - allowed
        if unknown:
            msg = f"unknown retrains columns {sorted(unknown)}; use {sorted(allowed)}"
            raise RetrainError(msg)
        if not fields:
            return
        assignments = ", ".join(f"{name} = :{name}" for name in fields)
        where = " AND status = 'running'" if only_running else ""
        stmt = text(
            f"UPDATE retrains SET {assignments} WHERE retrain_id = :retrain_id{where}"  # noqa: S608
        ).bindparams(*(bindparam(n, type_=JSONB) for n in fields if n in _JSON_COLUMNS))
        with self.engine.begin() as conn:
            conn.execute(stmt, {**fields, "retrain_id": retrain_id})

    def running(self) -> dict[str, Any] | None:
        """The running row of the namespace, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT * FROM retrains WHERE namespace = :ns AND status = 'running' "
                    "ORDER BY retrain_id DESC LIMIT 1"
                ),
                {"ns": self.ns},
            ).first()
        return None if row is None else dict(row._mapping)

    def state(self) -> RetrainState:
        """When the newest retrain started and whether a live (not stale) one runs."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT max(started_at) AS last_started_at, "  # noqa: S608 (a fixed fragment)
                    f"bool_or(status = 'running' AND {_LIVE}) AS running "
                    "FROM retrains WHERE namespace = :ns"
                ),
                {"ns": self.ns, "stale": self.stale_after_s},
            ).one()
        return RetrainState(row.last_started_at, bool(row.running))

    def get(self, retrain_id: int) -> dict[str, Any] | None:
        """One row as a dict."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM retrains WHERE retrain_id = :id AND namespace = :ns"),
                {"id": retrain_id, "ns": self.ns},
            ).first()
        return None if row is None else dict(row._mapping)

    def latest(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest rows, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT * FROM retrains WHERE namespace = :ns "
                    "ORDER BY retrain_id DESC LIMIT :limit"
                ),
                {"ns": self.ns, "limit": limit},
            ).all()
        return [dict(r._mapping) for r in rows]


def _progress(phase: str, pct: float, **extra: Any) -> dict[str, Any]:
    return {
        "phase": phase,
        "pct": round(float(pct), 1),
        "updated_at": datetime.now(UTC).isoformat(),
        **extra,
    }
