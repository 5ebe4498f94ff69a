"""What the dashboard shows, as plain values: pure helpers, then the one shell that reads them.

``aggregate_pipeline`` folds the live stats of every pipeline consumer into totals;
``History`` keeps a bounded, throttled series of those numbers for the dashboard's charts (the
API process samples them whenever the summary is read); ``drift_series`` turns report rows into
the drift-over-time chart. ``build_summary`` reads each part on its own: a dependency that is
down leaves its part empty and names itself under ``errors``, the rest still shows.

>>> h = History(maxlen=3, min_interval_s=1.0)
>>> [h.add(t, {"x": t}) for t in (0.0, 0.5, 1.0, 2.0, 3.0)]
[True, False, True, True, True]
>>> [p["t"] for p in h.points()]
[1.0, 2.0, 3.0]
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["History", "aggregate_pipeline", "build_summary", "drift_series"]

# A consumer whose stats hash was not refreshed for this long is shown as stale.
STALE_AFTER_S = 10.0


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def aggregate_pipeline(rows: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """Totals over consumers: rates and counters add up, lags take the worst consumer's.

    >>> a = {"consumer_id": "a", "updated_at": 99.0, "events_per_s": 10.0, "applied_total": 5,
    ...      "dead_lettered_total": 1, "lag_p50_ms": 4.0, "lag_p95_ms": 8.0, "lag_p99_ms": 9.0}
    >>> b = {**a, "consumer_id": "b", "updated_at": 50.0, "lag_p99_ms": 30.0}
    >>> t = aggregate_pipeline([a, b], now=100.0)
    >>> t["events_per_s"], t["applied_total"], t["lag_p99_ms"], t["live"], t["stale"]
    (10.0, 10, 30.0, 1, 1)
    """
    live = [r for r in rows if (_num(r.get("updated_at")) or 0.0) >= now - STALE_AFTER_S]
    newest = max((_num(r.get("updated_at")) or 0.0 for r in rows), default=None)

    def worst(field: str) -> float | None:
        values = [v for r in live if (v := _num(r.get(field))) is not None]
        return max(values) if values else None

    return {
        "consumers": [dict(r) for r in rows],
        "live": len(live),
        "stale": len(rows) - len(live),
        "events_per_s": sum(_num(r.get("events_per_s")) or 0.0 for r in live),
        "applied_total": sum(int(_num(r.get("applied_total")) or 0) for r in rows),
        "dead_lettered_total": sum(int(_num(r.get("dead_lettered_total")) or 0) for r in rows),
        "lag_p50_ms": worst("lag_p50_ms"),
        "lag_p95_ms": worst("lag_p95_ms"),
        "lag_p99_ms": worst("lag_p99_ms"),
        "updated_age_s": None if newest is None else max(0.0, now - newest),
    }


def drift_series(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Oldest-first points of the drift chart: share of drifted features and AUC per report.

    >>> drift_series([{"report_id": 2, "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    ...                "status": "drift", "summary": {"dataset_drift_share": 0.5}}])
    [{'report_id': 2, 't': 1767225600.0, 'status': 'drift', 'drift_share': 0.5, 'roc_auc': None}]
    """
    out = []
    for r in reversed(reports):
        summary = r.get("summary") or {}
        created = r["created_at"]
        out.append(
            {
                "report_id": int(r["report_id"]),
                "t": created.timestamp() if isinstance(created, datetime) else _num(created),
                "status": r.get("status"),
                "drift_share": _num(summary.get("dataset_drift_share")),
                "roc_auc": _num(summary.get("auc", summary.get("roc_auc"))),
            }
        )
    return out


class History:
    """A bounded series of samples, at most one per ``min_interval_s`` (thread-safe)."""

    def __init__(self, maxlen: int = 600, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self._points: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, t: float, values: Mapping[str, Any]) -> bool:
        """Keep ``values`` at time ``t`` unless the last sample is too recent; True if kept."""
        with self._lock:
            if self._points and t - self._points[-1]["t"] < self.min_interval_s:
                return False
            self._points.append({"t": t, **values})
            return True

    def points(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._points)


def build_summary(backends: Any, history: History) -> dict[str, Any]:
    """The dashboard's JSON: each part read on its own, failures named under ``errors``."""
    from feature_pipelines import pipeline_stats
    from freshloop.app.api import queries
    from freshloop.app.api.backends import dependency_error

    now = time.time()
    ns = backends.ns
    errors: dict[str, str] = {}
    out: dict[str, Any] = {
        "namespace": ns,
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(),
    }

    def part(name: str, read: Any) -> Any:
        try:
            return read()
        except Exception as exc:
            dep = dependency_error(backends.settings, exc)
            if dep is None:
                raise
            errors[dep.dependency] = str(dep)
            return None

    stats = part("pipeline", lambda: pipeline_stats(backends.redis, ns))
    out["pipeline"] = None if stats is None else aggregate_pipeline(stats, now)
    learner = part("learner", lambda: queries.latest_learner(backends.engine, ns))
    out["learner"] = learner
    champion = part("champion", backends.registry.champion_ref)
    out["champion"] = (
        None
        if champion is None
        else {
            "version": champion.version,
            "promoted_at": champion.promoted_at.isoformat(),
        }
    )
    reports = part("drift", lambda: queries.drift_reports(backends.engine, ns, 60))
    out["drift"] = (
        None
        if reports is None
        else {
            "series": drift_series(reports),
            "latest": [
                {
                    "report_id": int(r["report_id"]),
                    "created_at": r["created_at"].isoformat(),
                    "status": r["status"],
                    "drift_share": _num((r["summary"] or {}).get("dataset_drift_share")),
                    "skew_status": (r["summary"] or {}).get("skew_status"),
                    "skew_beyond_share": _num((r["summary"] or {}).get("skew_beyond_share")),
                    "action": (r["decision"] or {}).get("action"),
                    "html_url": f"/drift/reports/{int(r['report_id'])}",
                }
                for r in reports[:10]
            ],
        }
    )
    rows = part("retrains", lambda: queries.retrains(backends.engine, ns, 10))
    out["retrains"] = (
        None
        if rows is None
        else [
            {
                "retrain_id": int(r["retrain_id"]),
                "started_at": r["started_at"].isoformat(),
                "status": r["status"],
                "trigger": r["trigger"],
                "reason": r["reason"],
                "challenger_version": r["challenger_version"],
                "detail": r["detail"],
            }
            for r in rows
        ]
    )
    pipe = out["pipeline"] or {}
    metrics = (learner or {}).get("metrics", {})
    history.add(
        now,
        {
            "events_per_s": pipe.get("events_per_s"),
            "lag_p50_ms": pipe.get("lag_p50_ms"),
            "lag_p99_ms": pipe.get("lag_p99_ms"),
            "roc_auc": _num(metrics.get("roc_auc")),
            "rolling_roc_auc": _num(metrics.get("rolling_roc_auc")),
        },
    )
    out["history"] = history.points()
    out["errors"] = errors
    return out
