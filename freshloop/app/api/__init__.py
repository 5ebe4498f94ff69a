"""The HTTP API and live dashboard: features, predictions, models, drift reports, health.

``create_app(settings)`` builds the FastAPI app; ``ApiServer(settings).start()`` / ``.stop()``
runs it with uvicorn in a thread (what ``freshloop serve`` and the demo do);
``freshloop api serve`` runs it on its own. Names are imported lazily so that the command line
does not pay for FastAPI on every command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiServer", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from freshloop.app.api.app import create_app

        return create_app
    if name == "ApiServer":
        from freshloop.app.api.server import ApiServer

        return ApiServer
    msg = f"module 'freshloop.app.api' has no attribute {name!r}"
    raise AttributeError(msg)
