"""The pure parts of API tokens, without services: token text, the stored hash, scopes, the
route table, the verification cache, the loopback rule and the OpenAPI document."""

from __future__ import annotations

import pytest

from freshloop.app.api.auth import (
    AUTHENTICATED,
    OPEN,
    TokenCache,
    check_anonymous_bind,
    cookie_name,
    needed_scope,
    route_template,
)
from freshloop.app.api.exceptions import ApiStartError, TokenRefused
from freshloop.app.api.tokens import TokenInfo, grants, new_token, parse_token, token_digest
from freshloop.core.settings import Settings


def test_token_text_carries_its_id_and_256_random_bits() -> None:
    token_id, token = new_token()
    assert parse_token(token) == token_id and len(token_id) == 16
    assert len(token) == len("flt_") + 16 + 1 + 43
    assert new_token()[1] != token
    for bad in ("", "flt_", token[:-1], token + "x", token.replace("flt_", "flx_"), "Bearer x"):
        with pytest.raises(TokenRefused, match="not a Freshloop API token"):
            parse_token(bad)


def test_the_stored_digest_is_keyed_by_a_salt() -> None:
    _, token = new_token()
    one, two = token_digest(b"a" * 16, token), token_digest(b"b" * 16, token)
    assert one != two and len(one) == 32 and token.encode() not in one


def test_admin_implies_every_scope_and_others_only_themselves() -> None:
    assert grants(["admin"], "features:read") and grants(["admin"], "predictions:read")
    assert grants(["admin"], "admin")
    assert grants(["features:read"], "features:read")
    assert not grants(["features:read"], "predictions:read")
    assert not grants(["predictions:read", "features:read"], "admin")


def test_paths_fall_under_their_route_and_unknown_ones_need_admin() -> None:
    assert route_template("/healthz") == "/healthz" and needed_scope("/healthz") == OPEN
    assert needed_scope(route_template("/features/customer/42")) == "features:read"
    assert needed_scope(route_template("/features/merchant/batch")) == "features:read"
    assert needed_scope(route_template("/predictions/7")) == "predictions:read"
    assert needed_scope(route_template("/drift/reports/3")) == "predictions:read"
    assert needed_scope(route_template("/metrics")) == AUTHENTICATED
    for unknown in ("/admin", "/healthz/x", "/models/", "/features/customer", "/login"):
        assert needed_scope(route_template(unknown)) == "admin", unknown


def _info(name: str = "t") -> TokenInfo:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return TokenInfo("0" * 16, name, "ns", ("features:read",), now, None, None)


def test_the_cache_serves_fresh_answers_then_keeps_verified_ones_stale() -> None:
    now = [100.0]
    cache = TokenCache(ttl_s=30, max_entries=3, clock=lambda: now[0])
    good, bad = TokenCache.key("good"), TokenCache.key("bad")
    cache.put(good, _info())
    cache.put(bad, TokenRefused("unknown token"))
    hit, refused = cache.get(good), cache.get(bad)
    assert hit is not None and hit[1] is True and isinstance(hit[0], TokenInfo)
    assert refused is not None and isinstance(refused[0], TokenRefused)
    now[0] += 6  # a refusal is trusted for 5 s at most
    assert cache.get(bad) is None
    now[0] += 30  # past the TTL: kept, stale, for when Postgres cannot be asked
    stale = cache.get(good)
    assert stale is not None and stale[1] is False
    for i in range(5):  # bounded: stale ones go first
        cache.put(TokenCache.key(f"k{i}"), _info(f"k{i}"))
    assert len(cache._entries) <= 3


def test_anonymous_is_for_loopback_only() -> None:
    anonymous = Settings(api_anonymous=True)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_anonymous_bind(anonymous, host)
    for host in ("0.0.0.0", "::", "192.0.2.10"):  # noqa: S104 - nothing binds here
        with pytest.raises(ApiStartError, match="not loopback"):
            check_anonymous_bind(anonymous, host)
    check_anonymous_bind(Settings(api_anonymous=False), "0.0.0.0")  # noqa: S104 - tokens: fine


def test_cookie_names_are_per_namespace_and_safe() -> None:
    assert cookie_name("demo") == "freshloop_token_demo"
    assert cookie_name("a:b c") == "freshloop_token_a_b_c"


def test_the_openapi_document_says_which_token_each_operation_needs() -> None:
    from freshloop.app.api import create_app

    spec = create_app(Settings(redis_namespace="unit")).openapi()
    assert spec["components"]["securitySchemes"]["token"]["scheme"] == "bearer"
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    models = spec["paths"]["/models"]["get"]
    assert models["security"] == [{"token": []}] and {"401", "403"} <= set(models["responses"])
    assert "predictions:read" in models["description"]
    assert "403" not in spec["paths"]["/metrics"]["get"]["responses"]
