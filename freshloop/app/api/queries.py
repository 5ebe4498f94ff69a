"""Reads of the Postgres tables the API shows, scoped to one namespace (no blobs fetched)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

__all__ = ["drift_report_html", "drift_reports", "latest_learner", "retrains"]

_REPORT_COLUMNS = (
    "report_id, created_at, status, champion_version, current_start, current_end, summary, decision"
)


def drift_reports(engine: Engine, ns: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` drift reports, newest first, without their HTML."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT {_REPORT_COLUMNS} FROM drift_reports WHERE namespace = :ns "  # noqa: S608
                "ORDER BY report_id DESC LIMIT :limit"
            ),
            {"ns": ns, "limit": limit},
        ).mappings()
        return [dict(row) for row in rows]


def drift_report_html(engine: Engine, ns: str, report_id: int) -> str | None:
    """The page of one report, or None when this namespace has no such report."""
    with engine.connect() as conn:
        html = conn.execute(
            text("SELECT html FROM drift_reports WHERE namespace = :ns AND report_id = :id"),
            {"ns": ns, "id": report_id},
        ).scalar()
    return None if html is None else str(html)


def retrains(engine: Engine, ns: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` retrains, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT retrain_id, started_at, finished_at, trigger, reason, status, report_id, "
                "champion_version, challenger_version, champion_metrics, challenger_metrics, "
                "detail, progress FROM retrains WHERE namespace = :ns "
                "ORDER BY retrain_id DESC LIMIT :limit"
            ),
            {"ns": ns, "limit": limit},
        ).mappings()
        return [dict(row) for row in rows]


def latest_learner(engine: Engine, ns: str) -> dict[str, Any] | None:
    """What the newest learner checkpoint says, read without its blobs."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT checkpoint_id, created_at, model_version, n_learned, status "
                    "FROM learner_checkpoints WHERE namespace = :ns "
                    "ORDER BY checkpoint_id DESC LIMIT 1"
                ),
                {"ns": ns},
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    status = dict(row["status"] or {})
    return {
        "checkpoint_id": int(row["checkpoint_id"]),
        "checkpoint_at": row["created_at"],
        "model_version": row["model_version"],
        "n_learned": int(row["n_learned"]),
        "metrics": dict(status.get("metrics") or {}),
        "counts": dict(status.get("counts") or {}),
        "backlog": status.get("backlog"),
        "drift_alarms": len(status.get("drift_alarms") or []),
    }
