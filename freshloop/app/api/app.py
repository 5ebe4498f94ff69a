"""``create_app(settings)``: the FastAPI app of one namespace.

Nothing connects at start-up: a dependency that is down does not stop the API, it makes the
answers that need it a 503 naming it (and ``/healthz`` says which one). OpenAPI lives at
``/openapi.json``, its pages at ``/docs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import psycopg
import redis
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feature_pipelines import FeatureSet
from freshloop.app.api.auth import Authenticate, document_security
from freshloop.app.api.backends import Backends, dependency_error
from freshloop.app.api.exceptions import DependencyUnavailable
from freshloop.app.api.metrics import ApiMetrics
from freshloop.app.api.routes import router
from freshloop.app.api.summary import History
from freshloop.app.api.tokens import TokenStore
from freshloop.core.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class _Observe:
    """Counts and times every HTTP request by route template, method and status.

    Plain ASGI, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` runs each
    request through a task group and memory streams, which cost more than a feature read. A
    request that raises counts as a 500."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = getattr(scope.get("route"), "path", "(unmatched)")
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - started)


def _dashboard_html() -> str:
    return resources.files("freshloop.app.api").joinpath("dashboard.html").read_text("utf-8")


def create_app(settings: Settings, features: FeatureSet | None = None) -> FastAPI:
    """The API over ``settings.namespace``; ``features`` defaults to the set in use
    (``FRESHLOOP_FEATURE_DEFINITIONS``), the one the namespace's pipeline computes."""
    if features is None:
        from feature_pipelines.definitions import feature_set

        features = feature_set(settings)
    backends = Backends(settings, features)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backends.aclose()

    app = FastAPI(
        title="Freshloop",
        version="0.1.0",
        description=(
            "Fresh per-entity features, the predictions made with them, the models, drift "
            f"reports and retrains of namespace '{settings.namespace}'. The live dashboard is "
            "at /."
        ),
        lifespan=lifespan,
    )
    app.state.backends = backends
    app.state.metrics = ApiMetrics(backends.redis, backends.ns, backends.replication_slot)
    app.state.history = History()
    app.include_router(router)
    page = _dashboard_html()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(page)

    async def unavailable(request: Request, exc: Exception) -> Response:
        dep = dependency_error(settings, exc)
        if dep is None:  # a database error that is not about reaching it: a bug, say so
            log.error("request failed path=%s error=%r", request.url.path, exc)
            return JSONResponse({"detail": "internal error (see the API's log)"}, 500)
        log.warning(
            "dependency unavailable dependency=%s path=%s", dep.dependency, request.url.path
        )
        return JSONResponse(
            {"detail": str(dep), "dependency": dep.dependency},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for kind in (
        DependencyUnavailable,
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.ClusterDownError,  # a Redis Cluster: a slot without its primary
        redis.exceptions.RedisClusterException,  # a Redis Cluster: no node answers
        DBAPIError,
        psycopg.OperationalError,
    ):
        app.add_exception_handler(kind, unavailable)

    metrics = app.state.metrics

    # Inside _Observe (added last, so outermost): refused requests are counted too.
    app.add_middleware(
        Authenticate,
        settings=settings,
        store=TokenStore(backends.engine, backends.ns),
    )
    document_security(app)
    app.add_middleware(_Observe, metrics=metrics)

    return app
