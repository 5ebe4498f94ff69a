"""One drift check: compare the current window with the reference, store and return the report.

``run_check`` reads both windows (``drift.windows``), measures feature, score and label-rate
drift (``drift.stats``), performance against the champion's baseline, the learner's new
concept-drift alarms, freshness (``drift.freshness``) and data quality (``drift.quality``), lets
``decide`` (the retrain policy, when one runs) judge the headline numbers, renders the HTML page
(``drift.report``) and stores everything as one ``drift_reports`` row.

Status: ``drift`` when the decision says a trigger fired (``decision["drift"]``: with too few
rows only the learner's concept alarms can fire); else ``insufficient_data`` when either window
has fewer than ``drift_min_samples`` rows; else ``warning``
when a feature, the scores or the label rate drifted, a quality expectation failed, entities
are stale or the skew audit (``drift.skew``: logged vectors against the row history, the newest
``skew_sample`` examples) found inputs differing beyond its tolerance; else ``ok``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import Connection, Engine, create_engine, text

from drift import freshness, quality, stats, warmup
from drift.windows import (
    Champion,
    Window,
    champion_of,
    count_from,
    current_spec,
    load_window,
    reference_spec,
)
from freshloop.core.exceptions import FreshloopError
from freshloop.core.settings import Settings
from online_learning.services import feature_service

__all__ = [
    "SUMMARY_KEYS",
    "Decide",
    "DriftReport",
    "build_summary",
    "new_alarms",
    "performance",
    "run_check",
    "status_of",
]

log = logging.getLogger(__name__)

Decide = Callable[[dict[str, Any]], dict[str, Any]]

SUMMARY_KEYS = (
    "dataset_drift_share",
    "drifted_features",
    "score_drift",
    "label_rate_drift",
    "auc",
    "baseline_auc",
    "auc_drop",
    "log_loss",
    "concept_alarms",
    "freshness_p99_ms",
    "stale_entities",
    "quality_success",
    "n_reference",
    "n_current",
)


@dataclass(frozen=True)
class DriftReport:
    """One stored check: the ``drift_reports`` row."""

    report_id: int
    namespace: str
    created_at: datetime
    status: str
    champion_version: str | None
    reference_start: datetime | None
    reference_end: datetime | None
    current_start: datetime | None
    current_end: datetime | None
    summary: dict[str, Any]
    report: dict[str, Any]
    decision: dict[str, Any]
    html: str

    def to_dict(self, *, html: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not html:
            out.pop("html")
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


def _thresholds(settings: Settings) -> stats.Thresholds:
    return stats.Thresholds(
        p_value=settings.drift_p_value,
        psi_threshold=settings.drift_psi_threshold,
        js_threshold=settings.drift_js_threshold,
        large_sample=settings.drift_large_sample,
        min_samples=settings.drift_min_samples,
        bins=settings.drift_psi_bins,
    )


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def performance(
    reference: Window, current: Window, champion: Champion | None, min_samples: int = 1
) -> dict[str, Any]:
    """ROC AUC and log loss of the served scores over the current window, against a baseline:
    the champion's held-out metrics from its retrain when recorded, else the reference's.
    A window with fewer than ``min_samples`` rows gives no metrics (None)."""

    def metrics(w: Window) -> tuple[float | None, float | None]:
        if len(w.rows) < min_samples:
            return None, None
        labels = [r.label for r in w.rows]
        scores = [r.score for r in w.rows]
        return stats.roc_auc(labels, scores), stats.log_loss(labels, scores)

    auc, loss = metrics(current)
    ref_auc, ref_loss = metrics(reference)
    holdout = (champion.metrics.get("holdout") if champion else None) or {}
    if isinstance(holdout, Mapping) and holdout.get("roc_auc") is not None:
        base_auc, base_loss, source = holdout.get("roc_auc"), holdout.get("log_loss"), "retrain"
    else:
        base_auc, base_loss, source = ref_auc, ref_loss, "reference"
    drop = None if auc is None or base_auc is None else float(base_auc) - auc
    return {
        "auc": _round(auc),
        "log_loss": _round(loss),
        "baseline_auc": _round(base_auc),
        "baseline_log_loss": _round(base_loss),
        "baseline_source": source,
        "auc_drop": _round(drop),
        "reference_auc": _round(ref_auc),
        "reference_log_loss": _round(ref_loss),
    }


def new_alarms(alarms: Sequence[int], previous_max: int | None) -> list[int]:
    """Alarm indices raised since the previous report saw ``previous_max`` (pure).

    The learner's indices only grow; a largest index below ``previous_max`` means the learner
    started over, so all its alarms are new.

    >>> new_alarms([10, 250, 900], 250)
    [900]
    >>> new_alarms([5], 250)
    [5]
    """
    if previous_max is None or not alarms or max(alarms) < previous_max:
        return list(alarms)
    return [a for a in alarms if a > previous_max]


def build_summary(
    features: Mapping[str, stats.FeatureDrift],
    score: stats.FeatureDrift,
    label: stats.FeatureDrift,
    perf: Mapping[str, Any],
    alarms: Sequence[int],
    fresh: Mapping[str, Any],
    quality_result: Mapping[str, Any] | None,
    n_reference: int,
    n_current: int,
) -> dict[str, Any]:
    """The headline numbers the retrain policy and the dashboard read (pure)."""
    head = stats.summarize(features)
    share = head["dataset_drift_share"]
    label_delta = (
        None
        if label.reference_mean is None or label.current_mean is None
        else label.current_mean - label.reference_mean
    )
    return {
        "dataset_drift_share": _round(share),
        "drifted_features": head["drifted_features"],
        "n_features": head["n_features"],
        "score_drift": _round(score.psi),
        "score_drifted": score.drifted,
        "label_rate_drift": _round(label_delta),
        "label_rate_drifted": label.drifted,
        "label_rate_reference": _round(label.reference_mean),
        "label_rate_current": _round(label.current_mean),
        "auc": perf.get("auc"),
        "baseline_auc": perf.get("baseline_auc"),
        "auc_drop": perf.get("auc_drop"),
        "log_loss": perf.get("log_loss"),
        "baseline_log_loss": perf.get("baseline_log_loss"),
        "concept_alarms": len(alarms),
        "freshness_p99_ms": fresh.get("p99_ms"),
        "stale_entities": fresh.get("stale"),
        "quality_success": None if quality_result is None else quality_result.get("success"),
        "n_reference": n_reference,
        "n_current": n_current,
    }


def status_of(summary: Mapping[str, Any], decision: Mapping[str, Any], min_samples: int) -> str:
    """The row's status from the summary and the decision (rule in the module docstring)."""
    if decision.get("drift"):
        return "drift"
    if min(summary.get("n_reference") or 0, summary.get("n_current") or 0) < min_samples:
        return "insufficient_data"
    if (
        summary.get("drifted_features")
        or summary.get("score_drifted")
        or summary.get("label_rate_drifted")
        or summary.get("quality_success") is False
        or (summary.get("stale_entities") or 0) > 0
        or summary.get("skew_status") == "warning"
    ):
        return "warning"
    return "ok"


def _default_decide(settings: Settings) -> Decide:
    """Without a scheduler: name the policy's triggers, but take no action."""
    from drift.policy import RetrainPolicy

    policy = RetrainPolicy.from_settings(settings)

    def decide(summary: dict[str, Any]) -> dict[str, Any]:
        reasons = policy.triggers(summary)
        return {
            "action": "none",
            "reasons": reasons,
            "drift": bool(reasons),
            "blocked": "no retrain policy acts on this check ('freshloop drift run' does)"
            if reasons
            else None,
        }

    return decide


def _learner(conn: Connection, namespace: str) -> dict[str, Any]:
    row = conn.execute(
        text(
            "SELECT checkpoint_id, created_at, status FROM learner_checkpoints "
            "WHERE namespace = :ns ORDER BY checkpoint_id DESC LIMIT 1"
        ),
        {"ns": namespace},
    ).first()
    if row is None:
        return {}
    status = dict(row.status or {})
    return {
        "checkpoint_id": row.checkpoint_id,
        "checkpoint_at": row.created_at.isoformat(),
        "alarms": [int(a) for a in status.get("drift_alarms") or []],
        "metrics": status.get("metrics") or {},
    }


def _history(conn: Connection, namespace: str, limit: int) -> list[dict[str, Any]]:
    """Previous reports of the namespace, oldest first, for the over-time charts."""
    rows = conn.execute(
        text(
            "SELECT report_id, created_at, status, summary, "
            "report -> 'concept' -> 'max_alarm_index' AS max_alarm "
            "FROM drift_reports WHERE namespace = :ns ORDER BY report_id DESC LIMIT :n"
        ),
        {"ns": namespace, "n": limit},
    ).all()
    out = []
    for r in reversed(rows):
        s = r.summary or {}
        out.append(
            {
                "report_id": r.report_id,
                "created_at": r.created_at.isoformat(),
                "status": r.status,
                "dataset_drift_share": s.get("dataset_drift_share"),
                "score_drift": s.get("score_drift"),
                "auc": s.get("auc"),
                "baseline_auc": s.get("baseline_auc"),
                "max_alarm_index": r.max_alarm,
            }
        )
    return out


def _stored_origins(conn: Connection, namespace: str) -> dict[str, Any]:
    """The source origins the namespace's newest report found (``drift.warmup``)."""
    row = conn.execute(
        text(
            "SELECT report -> 'warmup' -> 'origins' FROM drift_reports WHERE namespace = :ns "
            "ORDER BY report_id DESC LIMIT 1"
        ),
        {"ns": namespace},
    ).scalar_one_or_none()
    return dict(row) if isinstance(row, dict) else {}


class _Clock:
    """Milliseconds per phase of a check, kept with the report (where did the time go)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self._t) * 1000, 1)
        self._t = now


def _quality(
    reference: Window, current: Window, settings: Settings, ignored: set[str]
) -> dict[str, Any] | None:
    names = [n for n in reference.feature_names() if n not in ignored]
    if not names:
        return None
    specs = quality.expectations_from_reference(
        {n: reference.column(n) for n in names},
        quality.QualityConfig(
            mostly=settings.drift_quality_mostly,
            mean_sd=settings.drift_quality_mean_sd,
            min_rows=settings.drift_min_samples,
        ),
    )
    return quality.validate([r.features for r in current.rows], specs)


def _skew(settings: Settings) -> dict[str, Any] | None:
    """The skew audit's section (None: off); an audit that cannot run is named, not raised."""
    if settings.skew_sample <= 0:
        return None
    from drift.skew_audit import audit

    try:
        return audit(settings).to_dict()
    except (psycopg.Error, FreshloopError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("skew audit failed namespace=%s error=%s", settings.namespace, first)
        return {"status": "error", "error": first}


@dataclass
class _Read:
    """What a check reads from Postgres, in one connection."""

    champion: Champion | None
    reference: Window
    current: Window
    learner: dict[str, Any]
    history: list[dict[str, Any]]
    origins: dict[str, Any]
    ref_start: datetime | None


@dataclass
class _Observed:
    """What a check asks of the running parts: pipeline lag, stale entities, the skew audit."""

    lag: dict[str, Any]
    stale: dict[str, Any]
    skew: dict[str, Any] | None


def _read(conn: Connection, settings: Settings, now: datetime) -> _Read:
    """Read step: the champion, both windows, the learner, the history, warm-up origins."""
    ns = settings.namespace
    service = feature_service(settings)
    champion = champion_of(conn, ns)
    size = settings.drift_reference_size
    available = count_from(conn, ns, None if champion is None else champion.since, 2 * size)
    reference = load_window(conn, ns, reference_spec(champion, size, available))
    current = load_window(
        conn,
        ns,
        current_spec(
            now,
            settings.drift_current_window_s,
            settings.drift_current_size,
            reference.end if reference.rows else None,
        ),
    )
    origins: dict[str, Any] = {}
    ref_start = None
    if settings.drift_warmup:
        origins = warmup.read_origins(
            conn, ns, service.source, service.features, _stored_origins(conn, ns)
        )
        ref_start = warmup.reference_start(
            conn,
            [r.payment_id for r in reference.rows],
            (r.predicted_at for r in reference.rows),
        )
    return _Read(
        champion,
        reference,
        current,
        _learner(conn, ns),
        _history(conn, ns, settings.drift_history),
        origins,
        ref_start,
    )


def _observe(settings: Settings, engine: Engine, current: Window, clock: _Clock) -> _Observed:
    """Observe step: freshness of the pipeline and of the current window's entities, and the
    skew audit (each names its own failure rather than failing the check)."""
    lag = freshness.pipeline_lag(settings)
    clock.lap("freshness_lag")
    recent = [
        r.payment_id for r in sorted(current.rows, key=lambda r: r.predicted_at, reverse=True)
    ]
    stale = freshness.stale_entities(settings, engine, recent)
    clock.lap("freshness_stale")
    skew = _skew(settings)
    clock.lap("skew")
    return _Observed(lag, stale, skew)


def _compute(
    settings: Settings,
    read: _Read,
    observed: _Observed,
    decide: Decide,
    now: datetime,
    clock: _Clock,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Compute step (no I/O): drift statistics, performance, alarms, data quality, the summary,
    the decision and the report; returns ``(summary, decision, report)``."""
    reference, current, champion = read.reference, read.current, read.champion
    service = feature_service(settings)
    t = _thresholds(settings)
    every = set(reference.feature_names()) | set(current.feature_names())
    warm = (
        warmup.assess(sorted(every), service.source, service.features, read.origins, read.ref_start)
        if settings.drift_warmup
        else warmup.Warmup({}, None)
    )
    ignored = set(settings.drift_ignored_features) | set(warm.unjudged)
    names = sorted(every - ignored)
    features = {
        n: stats.feature_drift(n, _numbers(reference.column(n)), _numbers(current.column(n)), t)
        for n in names
    }
    score = stats.feature_drift(
        "score",
        [r.score for r in reference.rows],
        [r.score for r in current.rows],
        t,
        categorical=False,
    )
    label = stats.feature_drift(
        "label",
        [float(r.label) for r in reference.rows],
        [float(r.label) for r in current.rows],
        t,
        categorical=True,
    )
    perf = performance(reference, current, champion, settings.drift_min_samples)
    clock.lap("statistics")
    previous_max = next(
        (h["max_alarm_index"] for h in reversed(read.history) if h["max_alarm_index"] is not None),
        None,
    )
    alarms = read.learner.get("alarms", [])
    fresh_alarms = new_alarms(alarms, previous_max)
    quality_result = _quality(reference, current, settings, ignored) if current.rows else None
    clock.lap("quality")
    lag, stale, skew = observed.lag, observed.stale, observed.skew
    fresh = {"p99_ms": lag["p99_ms"], "stale": stale["stale"]}
    summary = build_summary(
        features,
        score,
        label,
        perf,
        fresh_alarms,
        fresh,
        quality_result,
        len(reference.rows),
        len(current.rows),
    )
    if skew is not None:
        summary["skew_status"] = skew.get("status")
        summary["skew_beyond_share"] = skew.get("beyond_share")
    decision = dict(decide(dict(summary)))
    status = status_of(summary, decision, settings.drift_min_samples)
    report = {
        "namespace": settings.namespace,
        "created_at": now.isoformat(),
        "status": status,
        "champion": None
        if champion is None
        else {
            "version": champion.version,
            "since": champion.since.isoformat(),
            "retrain_start": _iso(champion.retrain_start),
            "retrain_end": _iso(champion.retrain_end),
        },
        "reference": reference.describe(),
        "current": current.describe(),
        "thresholds": asdict(t),
        "ignored_features": sorted(set(settings.drift_ignored_features)),
        "warmup": warm.to_dict(),
        "features": {n: f.to_dict() for n, f in features.items()},
        "score": score.to_dict(),
        "label": label.to_dict(),
        "performance": {
            **perf,
            "learner": read.learner.get("metrics", {}),
            "learner_checkpoint_id": read.learner.get("checkpoint_id"),
        },
        "concept": {
            "new_alarms": fresh_alarms,
            "alarms_total": len(alarms),
            "max_alarm_index": max(alarms) if alarms else previous_max,
        },
        "freshness": {"lag": lag, "stale": stale},
        "quality": quality_result,
        "skew": skew,
        "history": read.history,
        "timings_ms": clock.laps,
    }
    return summary, decision, _jsonable(report)


def _store(
    conn: Connection,
    read: _Read,
    now: datetime,
    summary: dict[str, Any],
    decision: dict[str, Any],
    report: dict[str, Any],
) -> tuple[int, str]:
    """Store step: the ``drift_reports`` row, then its HTML page (which shows the report id);
    returns ``(report_id, html)``. ``report`` gains its ``report_id``."""
    from drift.report import render_html

    champion = read.champion
    report_id = conn.execute(
        text(
            "INSERT INTO drift_reports (namespace, created_at, champion_version, "
            "reference_start, reference_end, current_start, current_end, status, summary, "
            "report, decision, html) VALUES (:ns, :at, :cv, :rs, :re, :cs, :ce, :st, "
            "CAST(:summary AS jsonb), CAST(:report AS jsonb), "
            "CAST(:decision AS jsonb), '') "
            "RETURNING report_id"
        ),
        {
            "ns": report["namespace"],
            "at": now,
            "cv": None if champion is None else champion.version,
            "rs": read.reference.start,
            "re": read.reference.end,
            "cs": read.current.start,
            "ce": read.current.end,
            "st": report["status"],
            "summary": _dumps(summary),
            "report": _dumps(report),
            "decision": _dumps(decision),
        },
    ).scalar_one()
    report["report_id"] = report_id
    html = render_html(report, summary, decision)
    conn.execute(
        text(
            "UPDATE drift_reports SET html = :html, "
            "report = CAST(:report AS jsonb) WHERE report_id = :id"
        ),
        {"html": html, "report": _dumps(report), "id": report_id},
    )
    return int(report_id), html


def run_check(
    settings: Settings,
    *,
    decide: Decide | None = None,
    now: datetime | None = None,
    engine: Engine | None = None,
) -> DriftReport:
    """Check the namespace of ``settings`` now; store and return the report: read (Postgres),
    observe (the running parts), compute (no I/O), store (one transaction)."""
    now = now or datetime.now(UTC)
    clock = _Clock()
    own_engine = engine is None
    engine = engine or create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            read = _read(conn, settings, now)
        clock.lap("read")
        observed = _observe(settings, engine, read.current, clock)
        summary, decision, report = _compute(
            settings, read, observed, decide or _default_decide(settings), now, clock
        )
        with engine.begin() as conn:
            report_id, html = _store(conn, read, now, summary, decision, report)
    finally:
        if own_engine:
            engine.dispose()
    status = report["status"]
    log.info(
        "drift check namespace=%s report_id=%s status=%s share=%s auc=%s n_ref=%s n_cur=%s",
        settings.namespace,
        report_id,
        status,
        summary["dataset_drift_share"],
        summary["auc"],
        summary["n_reference"],
        summary["n_current"],
    )
    champion = read.champion
    return DriftReport(
        report_id,
        settings.namespace,
        now,
        status,
        None if champion is None else champion.version,
        read.reference.start,
        read.reference.end,
        read.current.start,
        read.current.end,
        summary,
        report,
        decision,
        html,
    )


def _numbers(values: Sequence[Any]) -> list[float]:
    """Numeric feature values; anything else (None, text) is left to the quality suite."""
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _jsonable(value: Any) -> Any:
    return orjson.loads(_dumps(value))


def _dumps(value: Any) -> str:
    """JSON text; NaN/inf (not JSON) become null."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
