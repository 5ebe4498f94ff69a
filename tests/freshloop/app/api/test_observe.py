"""The request-metrics middleware: every request counted by route template, method and status,
including one whose handler raises (a 500)."""

from __future__ import annotations

from typing import Any, cast

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from freshloop.app.api.app import _Observe
from freshloop.app.api.metrics import ApiMetrics


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((route, method, status))


def _ok(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("fine", status_code=201)


def _boom(_request: Any) -> PlainTextResponse:
    msg = "handler failed"
    raise RuntimeError(msg)


def test_requests_are_counted_by_route_method_and_status() -> None:
    recorder = _Recorder()
    app = Starlette(routes=[Route("/items/{n}", _ok), Route("/boom", _boom)])
    app.add_middleware(_Observe, metrics=cast(ApiMetrics, recorder))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/items/7").status_code == 201
        assert client.get("/boom").status_code == 500
        assert client.get("/nowhere").status_code == 404
    assert recorder.seen == [
        ("/items/{n}", "GET", 201),
        ("/boom", "GET", 500),
        ("(unmatched)", "GET", 404),
    ]
