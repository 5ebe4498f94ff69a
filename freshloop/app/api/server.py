"""Running the API: ``ApiServer`` wraps ``uvicorn.Server`` on a socket bound up front.

Binding first turns a port in use into one clear sentence (naming ``FRESHLOOP_API_PORT``) and
makes port 0 usable (the bound port is in ``url``). ``start()`` serves from a thread and returns
once uvicorn accepts connections; ``stop()`` asks it to finish and waits. ``run()`` serves in
the calling thread (``freshloop api serve``; uvicorn handles SIGINT/SIGTERM there).

    server = ApiServer(settings).start()
    print(server.url)   # http://127.0.0.1:8000
    server.stop()
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from freshloop.app.api.app import create_app
from freshloop.app.api.auth import check_anonymous_bind
from freshloop.app.api.exceptions import ApiStartError
from freshloop.core.settings import Settings

__all__ = ["ApiServer"]

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        msg = f"cannot listen on {host!r}: {exc}; set FRESHLOOP_API_HOST to an address of this host"
        raise ApiStartError(msg) from exc
    family, _, proto, _, address = infos[0]
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it
    # every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        msg = (
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; another process holds the "
            "port: stop it or set FRESHLOOP_API_PORT (or --port) to a free one"
        )
        raise ApiStartError(msg) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """The API of ``settings`` served by uvicorn on ``host:port`` (defaults from settings)."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        port: int | None = None,
        app: FastAPI | None = None,
    ) -> None:
        self.host = host or settings.api_host
        check_anonymous_bind(settings, self.host)  # before listening, before building the app
        self.app = app or create_app(settings)
        self._sock = _bind(self.host, settings.api_port if port is None else port)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="on", timeout_notify=5
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in {"0.0.0.0", "[::]"}:  # noqa: S104 - only names the wildcard, binds nothing
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (or ``stop()`` from another thread)."""
        try:
            self.server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start(self, timeout: float = 15.0) -> ApiServer:
        """Serve from a daemon thread; returns once requests are accepted."""
        self._thread = threading.Thread(target=self.run, name="freshloop-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                msg = f"the API did not start on {self.url} within {timeout:.0f} s (see its log)"
                raise ApiStartError(msg)
            time.sleep(0.02)
        log.info("api serving url=%s", self.url)
        return self

    @property
    def alive(self) -> bool:
        """True while the server thread started by ``start()`` runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish open requests and stop; safe to call twice."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout)
            self._thread = None
        else:
            self._sock.close()
