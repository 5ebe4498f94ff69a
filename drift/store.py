"""Read stored drift reports back (``drift_reports``), newest first, namespace-scoped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from drift.check import DriftReport
from drift.exceptions import ReportNotFoundError

__all__ = ["list_reports", "load_report"]

_COLUMNS = (
    "report_id, namespace, created_at, status, champion_version, reference_start, "
    "reference_end, current_start, current_end, summary, report, decision, html"
)


def load_report(engine: Engine, namespace: str, report_id: int | None = None) -> DriftReport:
    """The report ``report_id`` of ``namespace``, or its newest one."""
    where = "namespace = :ns" + (" AND report_id = :id" if report_id is not None else "")
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f"SELECT {_COLUMNS} FROM drift_reports WHERE {where} "  # noqa: S608 (fixed text)
                "ORDER BY report_id DESC LIMIT 1"
            ),
            {"ns": namespace, "id": report_id},
        ).first()
    if row is None:
        msg = (
            f"no drift report {report_id} in namespace {namespace!r}"
            if report_id is not None
            else f"namespace {namespace!r} has no drift report yet: run "
            "'freshloop drift check-now' (or 'freshloop drift run')"
        )
        raise ReportNotFoundError(msg)
    return DriftReport(
        report_id=row.report_id,
        namespace=row.namespace,
        created_at=row.created_at,
        status=row.status,
        champion_version=row.champion_version,
        reference_start=row.reference_start,
        reference_end=row.reference_end,
        current_start=row.current_start,
        current_end=row.current_end,
        summary=dict(row.summary),
        report=dict(row.report),
        decision=dict(row.decision),
        html=row.html,
    )


def list_reports(engine: Engine, namespace: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` reports of ``namespace`` without their bodies: id, time, status,
    summary and decision."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT report_id, created_at, status, champion_version, summary, decision "
                "FROM drift_reports WHERE namespace = :ns ORDER BY report_id DESC LIMIT :n"
            ),
            {"ns": namespace, "n": limit},
        ).all()
    return [
        {
            "report_id": r.report_id,
            "created_at": r.created_at.isoformat(),
            "status": r.status,
            "champion_version": r.champion_version,
            "summary": r.summary,
            "decision": r.decision,
        }
        for r in rows
    ]
