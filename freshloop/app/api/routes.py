"""The API's routes, thin: each reads through ``Backends`` and the stages' own readers. Feature
reads are async (one Redis round trip on the event loop, ``AsyncFeatureStore``); the others are
synchronous (FastAPI runs them in its thread pool)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from feature_pipelines import EntityFeatures
from freshloop.app.api import queries
from freshloop.app.api.backends import Backends
from freshloop.app.api.models import (
    BIGINT_MAX,
    BatchRequest,
    BatchResponse,
    ComponentState,
    Degraded,
    DependencyError,
    DriftReportRow,
    ErrorBody,
    FeatureResponse,
    Health,
    LearnerView,
    ModelRow,
    ModelsResponse,
    PredictionResponse,
    ReplicationSlot,
    RetrainRow,
)
from freshloop.app.api.summary import History, build_summary
from online_learning import get_prediction

__all__ = ["router"]

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": DependencyError, "description": "A backing service is unavailable."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such thing in this namespace."},
    **_ERRORS,
}

Key = Annotated[int, Path(ge=0, le=BIGINT_MAX, description="Entity key (a bigint id).")]
Limit = Annotated[int, Query(ge=1, le=200, description="How many rows, newest first.")]

# A drift report is a self-contained page: it may style and script itself, load nothing else.
_REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
)


def _backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


def _ms(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _feature_dict(f: EntityFeatures) -> dict[str, Any]:
    """``FeatureResponse`` as plain data for ``_json`` (the hot read path skips building and
    re-validating models: a test checks the bytes decode to what the model would write)."""
    return {
        "entity": f.entity,
        "key": f.key,
        "found": f.found,
        "values": f.values,
        "commit_at": _ms(f.commit_ms),
        "written_at": _ms(f.written_ms),
        "read_at": datetime.fromtimestamp(f.read_ms / 1000, UTC),
        "age_ms": f.age_ms,
    }


def _decimal_text(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact, as pydantic writes a Decimal
    msg = f"cannot write {type(value).__name__} as JSON"
    raise TypeError(msg)


def _json(payload: Any) -> Response:
    body = orjson.dumps(payload, default=_decimal_text, option=orjson.OPT_UTC_Z)
    return Response(content=body, media_type="application/json")


def _check_entity(b: Backends, entity: str) -> None:
    if entity not in b.features.entities():
        msg = (
            f"unknown entity {entity!r}: this API serves {', '.join(sorted(b.features.entities()))}"
        )
        raise HTTPException(status_code=404, detail=msg)


@router.get(
    "/features/{entity}/{key}",
    response_model=FeatureResponse,
    responses=_NOT_FOUND,
    tags=["features"],
    summary="Feature values of one entity, with freshness",
)
async def get_features(request: Request, entity: str, key: Key) -> Response:
    b = _backends(request)
    _check_entity(b, entity)
    return _json(_feature_dict(await b.astore.get(entity, key)))


@router.post(
    "/features/{entity}/batch",
    response_model=BatchResponse,
    responses=_NOT_FOUND,
    tags=["features"],
    summary="Feature values of many entities of one kind, in one Redis round trip",
)
async def post_features_batch(request: Request, entity: str, body: BatchRequest) -> Response:
    b = _backends(request)
    _check_entity(b, entity)
    found = await b.astore.get_many(entity, body.keys)
    return _json({"entity": entity, "results": [_feature_dict(f) for f in found]})


@router.get(
    "/predictions/{payment_id}",
    response_model=PredictionResponse,
    responses=_NOT_FOUND,
    tags=["predictions"],
    summary="The score a payment got when it was written",
)
def get_payment_prediction(
    request: Request,
    payment_id: Annotated[int, Path(ge=0, le=BIGINT_MAX)],
) -> PredictionResponse:
    b = _backends(request)
    prediction = get_prediction(b.redis, b.ns, payment_id)
    if prediction is None:
        msg = (
            f"no prediction for payment {payment_id} in namespace {b.ns!r}: it was never "
            "scored, or it is older than label_horizon + label_grace"
        )
        raise HTTPException(status_code=404, detail=msg)
    return PredictionResponse(
        payment_id=prediction.payment_id,
        score=prediction.score,
        model_version=prediction.model_version,
        features={k: float(v) for k, v in prediction.features.items()},
        created_at=prediction.created_at,
        predicted_at=prediction.predicted_at,
    )


@router.get(
    "/models",
    response_model=ModelsResponse,
    responses=_ERRORS,
    tags=["models"],
    summary="The champion, every registered version, and the learner's newest metrics",
)
def get_models(request: Request) -> ModelsResponse:
    b = _backends(request)
    rows = [ModelRow(**row) for row in b.registry.models()]
    champion = next((row for row in rows if row.status == "champion"), None)
    learner = queries.latest_learner(b.engine, b.ns)
    return ModelsResponse(
        namespace=b.ns,
        champion=champion,
        models=rows,
        learner=None if learner is None else LearnerView(**learner),
    )


@router.get(
    "/drift/reports",
    response_model=list[DriftReportRow],
    responses=_ERRORS,
    tags=["drift"],
    summary="The newest drift reports (summary and decision; the page at html_url)",
)
def list_drift_reports(request: Request, limit: Limit = 20) -> list[DriftReportRow]:
    b = _backends(request)
    return [
        DriftReportRow(**row, html_url=f"/drift/reports/{row['report_id']}")
        for row in queries.drift_reports(b.engine, b.ns, limit)
    ]


@router.get(
    "/drift/reports/{report_id}",
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}}, **_NOT_FOUND},
    tags=["drift"],
    summary="One drift report as its self-contained HTML page",
)
def get_drift_report(
    request: Request, report_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)]
) -> HTMLResponse:
    b = _backends(request)
    html = queries.drift_report_html(b.engine, b.ns, report_id)
    if html is None:
        msg = f"no drift report {report_id} in namespace {b.ns!r}"
        raise HTTPException(status_code=404, detail=msg)
    if not html.strip():
        html = f"<!doctype html><title>drift report {report_id}</title><p>(no page stored)</p>"
    return HTMLResponse(html, headers={"Content-Security-Policy": _REPORT_CSP})


@router.get(
    "/retrains",
    response_model=list[RetrainRow],
    responses=_ERRORS,
    tags=["drift"],
    summary="The newest retrains: why, on what data, and whether the challenger won",
)
def list_retrains(request: Request, limit: Limit = 20) -> list[RetrainRow]:
    b = _backends(request)
    return [RetrainRow(**row) for row in queries.retrains(b.engine, b.ns, limit)]


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "At least one dependency is down."}},
    tags=["operations"],
    summary=(
        "Each dependency's state (Postgres, Redis, Kafka, Connect) and each part of this process;"
        " 503 if a dependency is down or a part is degraded"
    ),
)
def healthz(request: Request) -> JSONResponse:
    b = _backends(request)
    states = b.health()
    components = _components()
    ok = all(s.ok for s in states.values()) and all(c.ok for c in components.values())
    slot = b.replication_slot() if states["postgres"].ok else None
    body = Health(
        status="ok" if ok else "degraded",
        dependencies=states,
        components=components,
        alarms=[slot.alarm] if slot is not None and slot.alarm else [],
        replication_slot=None if slot is None else ReplicationSlot(**slot.to_dict()),
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


def _components() -> dict[str, ComponentState]:
    """The parts of this process as ``freshloop.core.health.HEALTH`` knows them."""
    from freshloop.core.health import HEALTH

    return {
        name: ComponentState(
            ok=not problems,
            degraded=[
                Degraded(
                    dependency=d.dependency,
                    since=datetime.fromtimestamp(d.since, UTC),
                    errors=d.errors,
                    detail=d.detail,
                )
                for d in problems
            ],
        )
        for name, problems in HEALTH.components().items()
    }


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
    tags=["operations"],
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    return Response(m.render(), media_type=m.content_type())


@router.get(
    "/api/summary",
    tags=["dashboard"],
    summary="Everything the dashboard shows; a dependency that is down is named in 'errors'",
)
def summary(request: Request) -> dict[str, Any]:
    history: History = request.app.state.history
    return build_summary(_backends(request), history)
