"""API tokens against the real stack (own namespace): every route but /healthz refuses without a
token, each scope gets exactly its routes, revoked and expired tokens are refused, Postgres keeps
only a salted hash, the dashboard takes a token once and keeps it in an HttpOnly cookie, a
Postgres outage keeps tokens checked before it working, and anonymous access is loopback-only."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import sqlalchemy
from click.testing import CliRunner

from freshloop.app.api.exceptions import ApiStartError
from freshloop.app.api.server import ApiServer
from freshloop.app.api.tokens import TokenStore
from freshloop.app.cli import cli
from freshloop.core.settings import Settings, load_settings
from tests.freshloop.app.api.fixtures import ApiHandle, api, api_ns, make_token, serve
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

__all__ = ["api", "api_ns"]  # fixtures, re-exported for pytest

# What each route needs, written out here (not read from the code under test). None: open;
# "any": any valid token. A route missing from this table fails the first test: classify it.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/features/{entity}/{key}"): "features:read",
    ("POST", "/features/{entity}/batch"): "features:read",
    ("GET", "/predictions/{payment_id}"): "predictions:read",
    ("GET", "/models"): "predictions:read",
    ("GET", "/drift/reports"): "predictions:read",
    ("GET", "/drift/reports/{report_id}"): "predictions:read",
    ("GET", "/retrains"): "predictions:read",
    ("GET", "/api/summary"): "predictions:read",
    ("GET", "/"): "predictions:read",
    ("GET", "/metrics"): "any",
    ("GET", "/openapi.json"): "any",
    ("GET", "/docs"): "any",
    ("GET", "/docs/oauth2-redirect"): "any",
    ("GET", "/redoc"): "any",
}
_PARAMS = {"{entity}": "customer", "{key}": "1", "{payment_id}": "1", "{report_id}": "1"}
_TOKEN_TEXT = re.compile(r"^flt_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


# Served but not in the OpenAPI document: the dashboard page and the documentation itself.
_UNDOCUMENTED = {
    ("GET", p) for p in ("/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
}


def _routes(handle: ApiHandle) -> set[tuple[str, str]]:
    paths = handle.server.app.openapi()["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops} | _UNDOCUMENTED


def _call(http: httpx.Client, method: str, template: str, token: str | None) -> httpx.Response:
    path = template
    for name, value in _PARAMS.items():
        path = path.replace(name, value)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = {"keys": [1]} if method == "POST" else None
    return http.request(method, path, headers=headers, json=body)


@pytest.fixture
def bare(api: ApiHandle) -> Iterator[httpx.Client]:
    """A client of the same server that sends no token of its own."""
    with httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


def test_every_route_but_healthz_refuses_without_a_token(
    api: ApiHandle, bare: httpx.Client
) -> None:
    assert _routes(api) == set(EXPECTED), "a route was added or removed: classify it in EXPECTED"
    for method, template in sorted(EXPECTED):
        for token in (None, "flt_0123456789abcdef_" + "x" * 43, "not-a-token"):
            answer = _call(bare, method, template, token)
            if template == "/healthz":
                assert answer.status_code in {200, 503}, answer.text
                continue
            assert answer.status_code == 401, (method, template, token, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert bare.get("/no/such/path").status_code == 401  # unknown routes are closed too
    missing = bare.get("/models").json()["detail"]
    assert "Authorization: Bearer" in missing and "freshloop api token create" in missing
    assert (
        "not a Freshloop API token"
        in bare.get("/models", headers={"Authorization": "Bearer nope"}).json()["detail"]
    )
    assert (
        "unknown token"
        in _call(bare, "GET", "/models", "flt_0123456789abcdef_" + "x" * 43).json()["detail"]
    )


def test_each_scope_gets_exactly_its_routes(api: ApiHandle, bare: httpx.Client) -> None:
    tokens = {
        scope: make_token(api.settings, scope)
        for scope in ("features:read", "predictions:read", "admin")
    }
    both = make_token(api.settings, "features:read", "predictions:read")
    for (method, template), needed in sorted(EXPECTED.items(), key=str):
        for scope, token in [*tokens.items(), ("features+predictions", both)]:
            answer = _call(bare, method, template, token)
            granted = (
                needed in {None, "any"}
                or scope in {needed, "admin"}
                or (scope == "features+predictions" and needed != "admin")
            )
            if granted:
                assert answer.status_code not in {401, 403}, (scope, template, answer.text)
            else:
                assert answer.status_code == 403, (scope, template, answer.text)
                detail = answer.json()["detail"]
                assert f"needs scope {needed}" in detail and f"--scope {needed}" in detail
    # an unknown route needs admin: a 404 for admin, a 403 for the others
    assert _call(bare, "GET", "/no/such", tokens["admin"]).status_code == 404
    assert _call(bare, "GET", "/no/such", tokens["features:read"]).status_code == 403


def test_a_revoked_token_is_refused_within_the_cache_ttl(api_ns: Settings) -> None:
    engine = sqlalchemy.create_engine(api_ns.sqlalchemy_url())
    store = TokenStore(engine, api_ns.namespace)
    cached = api_ns.model_copy(update={"api_token_cache_s": 3.0})
    try:
        for handle in serve(cached):
            first = store.create("revoke-me", ["features:read"])
            auth = {"Authorization": f"Bearer {first.token}"}
            assert handle.http.get("/features/customer/1", headers=auth).status_code == 200
            revoked_at = time.monotonic()
            store.revoke("revoke-me")
            # trusted from the cache for at most api_token_cache_s, then refused
            answer = handle.http.get("/features/customer/1", headers=auth)
            while answer.status_code == 200 and time.monotonic() - revoked_at < 10:
                time.sleep(0.2)
                answer = handle.http.get("/features/customer/1", headers=auth)
            assert answer.status_code == 401, answer.text
            assert "revoked" in answer.json()["detail"]
            assert time.monotonic() - revoked_at >= 2.0  # it was cached, not asked each time
        uncached = api_ns.model_copy(update={"api_token_cache_s": 0.0})
        for handle in serve(uncached):
            second = store.create("revoke-me", ["features:read"])  # the name is free again
            auth = {"Authorization": f"Bearer {second.token}"}
            assert handle.http.get("/features/customer/1", headers=auth).status_code == 200
            store.revoke("revoke-me")
            assert handle.http.get("/features/customer/1", headers=auth).status_code == 401
    finally:
        engine.dispose()


def test_an_expired_token_is_refused_even_while_cached(api: ApiHandle, bare: httpx.Client) -> None:
    token = make_token(api.settings, "features:read", expires_days=3 / 86_400)
    assert _call(bare, "GET", "/features/{entity}/{key}", token).status_code == 200
    deadline = time.monotonic() + 10
    while (answer := _call(bare, "GET", "/features/{entity}/{key}", token)).status_code == 200:
        assert time.monotonic() < deadline, "the token did not expire"
        time.sleep(0.2)
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


def test_the_stored_value_is_not_the_token(api: ApiHandle) -> None:
    token = make_token(api.settings, "predictions:read")
    token_id, secret = token.split("_", 2)[1:]
    with psycopg.connect(api.settings.postgres_conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT * FROM api_tokens WHERE token_id = %s", (token_id,)).fetchone()
        assert row is not None
        names = [d.name for d in conn.execute("SELECT * FROM api_tokens LIMIT 0").description]
    stored = dict(zip(names, row, strict=True))
    for value in stored.values():
        text = value.hex() if isinstance(value, bytes) else str(value)
        raw = bytes(value) if isinstance(value, bytes | memoryview) else text.encode()
        assert secret not in text and token not in text
        assert secret.encode() not in raw and hashlib.sha256(token.encode()).digest() != raw
    salt, digest = bytes(stored["salt"]), bytes(stored["digest"])
    assert len(salt) == 16 and digest == hmac.new(salt, token.encode(), "sha256").digest()


def test_the_dashboard_takes_the_token_once_and_keeps_it_in_a_cookie(
    api: ApiHandle, bare: httpx.Client
) -> None:
    page = bare.get("/")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/login">' in page.text
    wrong = bare.get("/", params={"token": "flt_0123456789abcdef_" + "y" * 43})
    assert wrong.status_code == 401 and "unknown token" in wrong.text

    token = make_token(api.settings, "predictions:read")
    login = bare.get("/", params={"token": token})
    assert login.status_code == 303 and login.headers["location"] == "/"  # token leaves the URL
    cookie = login.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert bare.cookies.get(f"freshloop_token_{api.settings.namespace}") == token
    assert bare.get("/").status_code == 200 and "/api/summary" in bare.get("/").text
    assert bare.get("/api/summary").status_code == 200
    assert bare.get("/features/customer/1").status_code == 403  # the cookie's scopes, no more

    with httpx.Client(base_url=api.url, timeout=30) as browser:
        posted = browser.post("/login", data={"token": token})
        assert posted.status_code == 303 and browser.get("/models").status_code == 200
        assert browser.post("/login", data={"token": ""}).status_code == 401
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        denied = browser.post("/login", data={"token": "flt_0123456789abcdef_" + "z" * 43})
        assert denied.status_code == 401 and "set-cookie" not in denied.headers


def test_tokens_checked_before_a_postgres_outage_keep_reading_features(api_ns: Settings) -> None:
    proxy = TcpProxy(api_ns.postgres_host, api_ns.postgres_port)
    try:
        via_proxy = api_ns.model_copy(
            update={
                "postgres_dsn": api_ns.postgres_dsn.replace(
                    f":{api_ns.postgres_port}/", f":{proxy.port}/"
                ),
                "api_token_cache_s": 0.5,
            }
        )
        unchecked = make_token(api_ns, "features:read")
        for handle in serve(via_proxy, tokens_from=api_ns):
            assert handle.http.get("/features/customer/1").status_code == 200
            assert handle.http.get("/models").status_code == 200
            proxy.cut()  # Postgres goes away, as a restart looks to the API
            time.sleep(1.0)  # past the cache TTL: the next check would ask Postgres
            assert handle.http.get("/features/customer/1").status_code == 200  # Redis serves
            models = handle.http.get("/models")
            assert models.status_code == 503 and models.json()["dependency"] == "postgres"
            never = handle.http.get(
                "/features/customer/1", headers={"Authorization": f"Bearer {unchecked}"}
            )
            assert never.status_code == 503, never.text  # cannot be checked: not trusted
            assert never.json()["dependency"] == "postgres"
            assert "tokens are checked there" in never.json()["detail"]
            proxy.restore()
    finally:
        proxy.close()


def test_anonymous_reads_only_on_loopback(api_ns: Settings) -> None:
    anonymous = api_ns.model_copy(update={"api_anonymous": True})
    for host in ("0.0.0.0", "::"):  # noqa: S104 - refused before anything listens
        with pytest.raises(ApiStartError, match="FRESHLOOP_API_ANONYMOUS=false") as refused:
            ApiServer(anonymous, host=host, port=0)
        assert "not loopback" in str(refused.value) and "127.0.0.1" in str(refused.value)
    server = ApiServer(anonymous, port=0).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/models").status_code == 200
            assert http.get("/").status_code == 200
            bad = http.get("/models", headers={"Authorization": "Bearer flt_nope"})
            assert bad.status_code == 401  # a token that is given is still checked
    finally:
        server.stop()


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


def _freshloop(settings: Settings, *args: str) -> _Run:
    """The command line in this process, with these settings as its environment."""
    env = {k: v for k, v in settings.environment({}).items() if k.startswith("FRESHLOOP_")}
    load_settings.cache_clear()
    try:
        result = CliRunner(env=env).invoke(cli, list(args))
    finally:
        load_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return _Run(result.exit_code, result.stdout, result.stderr)


def test_the_token_commands(api: ApiHandle, bare: httpx.Client) -> None:
    made = _freshloop(
        api.settings,
        "api",
        "token",
        "create",
        "--name",
        "ci",
        "--scope",
        "features:read",
        "--scope",
        "predictions:read",
        "--expires-days",
        "2",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert _TOKEN_TEXT.match(token) and "shown only now" in made.stderr
    assert _call(bare, "GET", "/models", token).status_code == 200

    listed = _freshloop(api.settings, "api", "token", "list")
    assert listed.returncode == 0 and "ci" in listed.stdout
    assert "features:read,predictions:read" in listed.stdout and token not in listed.stdout

    again = _freshloop(api.settings, "api", "token", "create", "--name", "ci", "--scope", "admin")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = _freshloop(api.settings, "api", "token", "create", "--name", "x", "--scope", "root")
    assert bad.returncode == 2 and "root" in bad.stderr

    gone = _freshloop(api.settings, "api", "token", "revoke", "ci")
    assert gone.returncode == 0 and "revoked" in gone.stdout
    twice = _freshloop(api.settings, "api", "token", "revoke", "ci")
    assert twice.returncode == 2 and "no live token named 'ci'" in twice.stderr
