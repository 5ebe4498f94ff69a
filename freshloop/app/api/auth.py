"""Who may read what: every route but ``/healthz`` needs a token with the route's scope.

A client sends ``Authorization: Bearer <token>``; a browser gives the token once (the login form
the dashboard shows, or ``/?token=...``) and then sends it as an HttpOnly, SameSite=Strict cookie.
Scopes (``admin`` implies both others):

- ``features:read``: ``/features/...``;
- ``predictions:read``: ``/predictions/...`` and what tells how the model decides and how well:
  ``/models``, ``/drift/reports...``, ``/retrains``, the dashboard (``/``, ``/api/summary``);
- any valid token: ``/metrics`` (give the scraper the narrowest token), ``/docs``,
  ``/openapi.json``;
- ``admin``: any route not listed in ``ROUTE_SCOPES`` (a new route is closed until given one).

A verified token is trusted for ``api_token_cache_s`` (default 30 s) without asking Postgres
again, so a revoked token keeps working at most that long in each API process. Without a token,
requests are served only if ``api_anonymous`` is set and the connection came in on loopback; the
server refuses to start with ``api_anonymous`` on any other address (``check_anonymous_bind``).
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs

import anyio.to_thread
from sqlalchemy.exc import DBAPIError
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from freshloop.app.api.exceptions import ApiStartError, TokenRefused
from freshloop.app.api.tokens import (
    ADMIN,
    FEATURES_READ,
    PREDICTIONS_READ,
    SCOPES,
    TokenInfo,
    TokenStore,
    grants,
)
from freshloop.core.db import POSTGRES_DOWN
from freshloop.core.settings import Settings

__all__ = [
    "AUTHENTICATED",
    "OPEN",
    "ROUTE_SCOPES",
    "Authenticate",
    "TokenCache",
    "check_anonymous_bind",
    "cookie_name",
    "document_security",
    "needed_scope",
    "route_template",
]

log = logging.getLogger(__name__)

OPEN: Final = "open"  # no token
AUTHENTICATED: Final = "authenticated"  # any valid token, whatever its scopes

ROUTE_SCOPES: Final[dict[str, str]] = {
    "/healthz": OPEN,
    "/features/{entity}/{key}": FEATURES_READ,
    "/features/{entity}/batch": FEATURES_READ,
    "/predictions/{payment_id}": PREDICTIONS_READ,
    "/models": PREDICTIONS_READ,
    "/drift/reports": PREDICTIONS_READ,
    "/drift/reports/{report_id}": PREDICTIONS_READ,
    "/retrains": PREDICTIONS_READ,
    "/api/summary": PREDICTIONS_READ,
    "/": PREDICTIONS_READ,
    "/metrics": AUTHENTICATED,
    "/openapi.json": AUTHENTICATED,
    "/docs": AUTHENTICATED,
    "/docs/oauth2-redirect": AUTHENTICATED,
    "/redoc": AUTHENTICATED,
}

# A token check that could not read Postgres: a 503 naming it, never a 500.
_DB_FAILED: tuple[type[Exception], ...] = (*POSTGRES_DOWN, DBAPIError)
_LOGIN_PATH = "/login"
_LOGIN_BODY_MAX = 8192
_NEGATIVE_TTL_S = 5.0
_CREATE_HINT = (
    "create one with 'freshloop api token create --name NAME --scope SCOPE' "
    f"(scopes: {', '.join(SCOPES)})"
)


def needed_scope(template: str | None) -> str:
    """What a route template needs; a route not in ``ROUTE_SCOPES`` (or none) needs admin."""
    if template is None:
        return ADMIN
    return ROUTE_SCOPES.get(template, ADMIN)


def cookie_name(namespace: str) -> str:
    """The dashboard's cookie: one per namespace (cookies do not tell ports apart)."""
    return "freshloop_token_" + re.sub(r"[^A-Za-z0-9_-]", "_", namespace)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def check_anonymous_bind(settings: Settings, host: str) -> None:
    """Refuse ``api_anonymous`` on an address that is not loopback (``ApiStartError``)."""
    if not settings.api_anonymous:
        return
    try:
        addresses = {str(i[4][0]) for i in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        addresses = {host}  # the bind that follows says what is wrong with it
    if addresses and all(_is_loopback(a) for a in addresses):
        return
    msg = (
        f"FRESHLOOP_API_ANONYMOUS=true lets anyone read features, predictions and models without "
        f"a token, and the API would listen on {host!r}, which is not loopback: set "
        "FRESHLOOP_API_ANONYMOUS=false and give clients tokens ('freshloop api token create'), "
        "or listen on 127.0.0.1 (FRESHLOOP_API_HOST or --host)"
    )
    raise ApiStartError(msg)


class TokenCache:
    """Verified tokens (and refusals, briefly) by the SHA-256 of their text.

    An answer is fresh for ``ttl_s`` (a refusal for at most 5 s). A verified token stays after
    that, stale, for when Postgres cannot be asked: the last known answer then serves (revocation
    cannot be read meanwhile; expiry is still checked here). Bounded: when full, stale entries
    go, and if none were, all of them."""

    def __init__(
        self, ttl_s: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[bytes, tuple[float, TokenInfo | TokenRefused]] = {}

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> tuple[TokenInfo | TokenRefused, bool] | None:
        """``(answer, fresh)``, or None when nothing is known."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        fresh = entry[0] > self.clock()
        if not fresh and isinstance(entry[1], TokenRefused):
            self._entries.pop(key, None)
            return None
        return entry[1], fresh

    def put(self, key: bytes, value: TokenInfo | TokenRefused) -> None:
        ttl = self.ttl_s if isinstance(value, TokenInfo) else min(self.ttl_s, _NEGATIVE_TTL_S)
        now = self.clock()
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
        self._entries[key] = (now + ttl, value)


# Matched here on the path (not through the router, whose routes FastAPI may nest): the table is
# what decides, and a path it does not know needs admin.
_TEMPLATES: Final = [(compile_path(t)[0], t) for t in ROUTE_SCOPES]


def route_template(path: str) -> str | None:
    """The ``ROUTE_SCOPES`` template a request path falls under, if any."""
    for regex, template in _TEMPLATES:
        if regex.match(path):
            return template
    return None


class _Refused:
    """Stands for the route of a refused request, so the request metrics name it."""

    def __init__(self, path: str) -> None:
        self.path = path


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Freshloop: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}}
input{{width:100%;padding:.5em;font:inherit;box-sizing:border-box}}button{{margin-top:.8em;
padding:.4em 1.2em;font:inherit}}.why{{color:#a33}}code{{background:#eee;padding:0 .2em}}</style>
</head><body><h1>Freshloop dashboard</h1>
<p>Namespace <b>{namespace}</b>. This API needs a token with scope <code>predictions:read</code>
(or <code>admin</code>); create one with
<code>freshloop api token create --name me --scope predictions:read</code>.</p>
<p class="why">{reason}</p>
<form method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" autofocus required>
<button type="submit">Open the dashboard</button></form>
<p>The token is kept in an HttpOnly cookie of this browser session only.</p>
</body></html>
"""
_LOGIN_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"


class Authenticate:
    """Plain ASGI (no ``BaseHTTPMiddleware`` per request): finds what the path needs, and
    answers 401/403/503 itself; requests that may pass go on untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, store: TokenStore) -> None:
        self.app = app
        self.settings = settings
        self.store = store
        self.anonymous = settings.api_anonymous
        self.cache = TokenCache(settings.api_token_cache_s)
        self.cookie = cookie_name(settings.namespace)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == _LOGIN_PATH and scope["method"] == "POST":
            await self._login(scope, receive, send)
            return
        template = route_template(scope["path"])
        needed = needed_scope(template)
        if needed == OPEN:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        token, from_cookie = self._credential(headers)
        is_page = scope["path"] == "/" and scope["method"] in {"GET", "HEAD"}
        if is_page and scope.get("query_string"):
            given = parse_qs(scope["query_string"].decode("latin-1")).get("token")
            if given:
                await self._start_session(scope, receive, send, given[0])
                return
        if token is None:
            if self.anonymous and _is_loopback(str((scope.get("server") or ("",))[0])):
                await self.app(scope, receive, send)
                return
            reason = (
                f"this route needs a token: send 'Authorization: Bearer <token>'; {_CREATE_HINT}"
            )
            await self._unauthorized(scope, receive, send, reason, is_page, given_token=False)
            return
        try:
            info = await self._verify(token)
        except TokenRefused as exc:
            await self._unauthorized(
                scope, receive, send, str(exc), is_page, given_token=True, clear=from_cookie
            )
            return
        except _DB_FAILED as exc:
            await self._postgres_down(scope, receive, send, exc)
            return
        if needed != AUTHENTICATED and not grants(info.scopes, needed):
            if template is not None:
                scope["route"] = _Refused(template)  # the request metrics name the route
            msg = (
                f"token {info.name!r} has scope(s) {', '.join(info.scopes)}; "
                f"{scope['method']} {template or scope['path']} needs scope {needed} (or admin): "
                f"create a token with --scope {needed}"
            )
            log.info("token lacks scope token=%s needed=%s path=%s", info.name, needed, template)
            await JSONResponse({"detail": msg, "needed_scope": needed}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _credential(self, headers: dict[str, str]) -> tuple[str | None, bool]:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), False
        cookie = _cookie(headers.get("cookie", ""), self.cookie)
        return cookie, cookie is not None

    async def _verify(self, token: str) -> TokenInfo:
        """The cache first; else one indexed Postgres read, off the event loop. While Postgres
        cannot be read, a token verified earlier is still trusted (its last known answer)."""
        key = self.cache.key(token)
        known = self.cache.get(key)
        answer: TokenInfo | TokenRefused
        if known is not None and known[1]:
            answer = known[0]
        else:
            try:
                answer = await self._ask_postgres(token)
                self.cache.put(key, answer)
            except _DB_FAILED:
                if known is None or not isinstance(known[0], TokenInfo):
                    raise
                log.warning(
                    "tokens not readable from postgres: trusting the last check token=%s",
                    known[0].name,
                )
                answer = known[0]
        if isinstance(answer, TokenRefused):
            raise TokenRefused(str(answer))  # a fresh one: the cached answer keeps no traceback
        if answer.expires_at is not None and answer.expired():  # it may expire while cached
            msg = f"token {answer.name!r} expired at {answer.expires_at.isoformat()}"
            raise TokenRefused(msg)
        return answer

    async def _ask_postgres(self, token: str) -> TokenInfo | TokenRefused:
        try:
            info: TokenInfo = await anyio.to_thread.run_sync(self.store.verify, token)
        except TokenRefused as exc:
            return exc
        return info

    async def _unauthorized(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        reason: str,
        is_page: bool,
        *,
        given_token: bool,
        clear: bool = False,
    ) -> None:
        log.info("request refused path=%s reason=%s", scope["path"], reason)
        template = route_template(scope["path"])
        if template is not None:
            scope["route"] = _Refused(template)  # the request metrics name the route
        challenge = 'Bearer realm="freshloop"' + (', error="invalid_token"' if given_token else "")
        response: Response
        if is_page:
            response = self._login_page(reason)
        else:
            response = JSONResponse({"detail": reason}, 401)
        response.headers["WWW-Authenticate"] = challenge
        if clear:
            response.delete_cookie(self.cookie, path="/", httponly=True, samesite="strict")
        await response(scope, receive, send)

    def _login_page(self, reason: str, status: int = 401) -> HTMLResponse:
        page = _LOGIN_PAGE.format(
            namespace=html.escape(self.settings.namespace), reason=html.escape(reason)
        )
        return HTMLResponse(
            page,
            status,
            headers={"Content-Security-Policy": _LOGIN_CSP, "Cache-Control": "no-store"},
        )

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /login`` with ``token=...`` (the login form): a session cookie, then the page."""
        body = b""
        more = True
        while more and len(body) <= _LOGIN_BODY_MAX:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if len(body) > _LOGIN_BODY_MAX:
            await self._login_page("the form was too large", 413)(scope, receive, send)
            return
        token = parse_qs(body.decode("latin-1")).get("token", [""])[0].strip()
        if not token:
            await self._login_page("no token was given")(scope, receive, send)
            return
        await self._start_session(scope, receive, send, token)

    async def _start_session(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        """A valid token becomes the session cookie and the browser goes to ``/`` (the token
        leaves the address bar and history); an invalid one gets the login page, 401."""
        try:
            await self._verify(token)
        except TokenRefused as exc:
            await self._unauthorized(scope, receive, send, str(exc), True, given_token=True)
            return
        except _DB_FAILED as exc:
            await self._postgres_down(scope, receive, send, exc)
            return
        response = RedirectResponse("/", 303, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            self.cookie,
            token,
            path="/",
            httponly=True,
            samesite="strict",
            secure=scope.get("scheme") == "https",
        )
        await response(scope, receive, send)

    async def _postgres_down(self, scope: Scope, receive: Receive, send: Send, exc: Any) -> None:
        from freshloop.app.api.backends import dependency_error

        dep = dependency_error(self.settings, exc)
        detail = (
            str(dep) if dep is not None else "tokens could not be read from Postgres"
        ) + " (tokens are checked there)"
        log.warning("token check failed dependency=postgres path=%s", scope["path"])
        await JSONResponse(
            {"detail": detail, "dependency": "postgres"}, 503, headers={"Retry-After": "5"}
        )(scope, receive, send)


def document_security(app: Any) -> None:
    """Put the token rules in the OpenAPI document: a bearer scheme, each operation's scope,
    and its 401/403 answers (the /docs page then offers to send a token)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            cached: dict[str, Any] = app.openapi_schema
            return cached
        schema: dict[str, Any] = generate()
        schema.setdefault("components", {})["securitySchemes"] = {
            "token": {
                "type": "http",
                "scheme": "bearer",
                "description": f"An API token; {_CREATE_HINT}.",
            }
        }
        for path, operations in schema.get("paths", {}).items():
            needed = needed_scope(path)
            for operation in operations.values():
                if needed == OPEN:
                    operation["security"] = []
                    continue
                operation["security"] = [{"token": []}]
                what = (
                    "any valid token" if needed == AUTHENTICATED else f"scope `{needed}` (or admin)"
                )
                operation["description"] = (
                    f"{operation.get('description', '')}\n\nNeeds a token with {what}."
                ).strip()
                answers = operation.setdefault("responses", {})
                answers["401"] = {"description": "No token, or an unknown, revoked or expired one."}
                if needed != AUTHENTICATED:
                    answers["403"] = {"description": f"The token lacks scope {needed}."}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
