"""API tokens: their text, their stored hash, their scopes, and the ``api_tokens`` table.

A token reads ``flt_<id>_<secret>``: 16 hex digits of id, then 256 random bits. Postgres keeps
its id, name, namespace, scopes, expiry and ``HMAC-SHA256(salt, token)`` with a random salt per
token, never the token itself; a check is one read by primary key and a constant-time compare.
A token is valid for the namespace it was created in only.

    store = TokenStore(engine, "demo")
    created = store.create("dashboard", ["predictions:read"], expires_days=7)
    created.token            # shown once; only its hash is stored
    store.verify(created.token).scopes  # ('predictions:read',)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from freshloop.app.api.exceptions import TokenError, TokenRefused

__all__ = [
    "ADMIN",
    "FEATURES_READ",
    "PREDICTIONS_READ",
    "SCOPES",
    "CreatedToken",
    "TokenInfo",
    "TokenStore",
    "grants",
    "new_token",
    "parse_token",
    "token_digest",
]

FEATURES_READ: Final = "features:read"
PREDICTIONS_READ: Final = "predictions:read"
ADMIN: Final = "admin"
SCOPES: Final = (FEATURES_READ, PREDICTIONS_READ, ADMIN)

_PREFIX = "flt"
_ID_HEX = 16
_TOKEN = re.compile(r"^flt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    return token_id, f"{_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> str:
    """The id of a well-formed token; ``TokenRefused`` for anything else."""
    match = _TOKEN.match(token)
    if match is None:
        msg = (
            "the token is not a Freshloop API token (expected flt_<16 hex>_<43 characters>, "
            "as 'freshloop api token create' prints it)"
        )
        raise TokenRefused(msg)
    return match.group(1)


def token_digest(salt: bytes, token: str) -> bytes:
    """What is stored of a token: HMAC-SHA256 keyed by its own random salt."""
    return hmac.new(salt, token.encode(), hashlib.sha256).digest()


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether a token with ``scopes`` may use a route needing ``needed`` (admin implies all)."""
    held = set(scopes)
    return ADMIN in held or needed in held


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed and as verified (never its text)."""

    token_id: str
    name: str
    namespace: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "token_id": self.token_id,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


@dataclass(frozen=True)
class CreatedToken:
    """A new token: ``token`` is its only copy."""

    info: TokenInfo
    token: str


def _check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if not scopes or unknown:
        msg = (
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}: give one or more of "
            f"{', '.join(SCOPES)} with --scope"
        )
        raise TokenError(msg)
    return tuple(s for s in SCOPES if s in scopes)


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        token_id=row.token_id,
        name=row.name,
        namespace=row.namespace,
        scopes=tuple(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class TokenStore:
    """The tokens of one namespace in Postgres (table ``api_tokens``, sql/008)."""

    def __init__(self, engine: Engine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace

    def create(
        self, name: str, scopes: Sequence[str], *, expires_days: float | None = None
    ) -> CreatedToken:
        """A new token named ``name``; ``TokenError`` if a live token has that name."""
        if not _NAME.match(name):
            msg = (
                f"token name {name!r} is not usable: 1-100 letters, digits or ._:@- starting "
                "with a letter or digit"
            )
            raise TokenError(msg)
        ordered = _check_scopes(scopes)
        if expires_days is not None and expires_days <= 0:
            msg = f"--expires-days must be positive, got {expires_days}"
            raise TokenError(msg)
        token_id, token = new_token()
        salt = secrets.token_bytes(16)
        expires = None if expires_days is None else datetime.now(UTC) + timedelta(expires_days)
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    text(
                        "INSERT INTO api_tokens (token_id, namespace, name, scopes, salt, digest,"
                        " expires_at) VALUES (:id, :ns, :name, :scopes, :salt, :digest, :exp)"
                        " RETURNING token_id, name, namespace, scopes, created_at, expires_at,"
                        " revoked_at"
                    ),
                    {
                        "id": token_id,
                        "ns": self.namespace,
                        "name": name,
                        "scopes": list(ordered),
                        "salt": salt,
                        "digest": token_digest(salt, token),
                        "exp": expires,
                    },
                ).one()
        except IntegrityError as exc:
            msg = (
                f"a token named {name!r} already exists in namespace {self.namespace!r}: "
                f"revoke it first ('freshloop api token revoke {name}') or pick another name"
            )
            raise TokenError(msg) from exc
        return CreatedToken(_info(row), token)

    def tokens(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        """This namespace's tokens, oldest first (revoked ones only when asked)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT token_id, name, namespace, scopes, created_at, expires_at, revoked_at"
                    " FROM api_tokens WHERE namespace = :ns AND (:all OR revoked_at IS NULL)"
                    " ORDER BY created_at, name"
                ),
                {"ns": self.namespace, "all": include_revoked},
            ).all()
        return [_info(row) for row in rows]

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the live token named ``name``; ``TokenError`` if there is none."""
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    "UPDATE api_tokens SET revoked_at = now() WHERE namespace = :ns AND"
                    " name = :name AND revoked_at IS NULL RETURNING token_id, name, namespace,"
                    " scopes, created_at, expires_at, revoked_at"
                ),
                {"ns": self.namespace, "name": name},
            ).one_or_none()
        if row is None:
            msg = (
                f"no live token named {name!r} in namespace {self.namespace!r} "
                "('freshloop api token list' shows them)"
            )
            raise TokenError(msg)
        return _info(row)

    def verify(self, token: str) -> TokenInfo:
        """The live token ``token`` is; ``TokenRefused`` (saying why) when it is not one."""
        token_id = parse_token(token)
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT token_id, name, namespace, scopes, created_at, expires_at,"
                    " revoked_at, salt, digest FROM api_tokens WHERE token_id = :id"
                ),
                {"id": token_id},
            ).one_or_none()
        if row is None or not hmac.compare_digest(
            token_digest(bytes(row.salt), token), bytes(row.digest)
        ):
            msg = "unknown token: it was never created here (or its text was changed)"
            raise TokenRefused(msg)
        info = _info(row)
        if info.namespace != self.namespace:
            msg = (
                f"this token was created for namespace {info.namespace!r}, this API serves "
                f"{self.namespace!r}: create one with FRESHLOOP_REDIS_NAMESPACE={self.namespace}"
            )
            raise TokenRefused(msg)
        if info.revoked_at is not None:
            msg = f"token {info.name!r} was revoked at {info.revoked_at.isoformat()}"
            raise TokenRefused(msg)
        if info.expires_at is not None and info.expired():
            msg = f"token {info.name!r} expired at {info.expires_at.isoformat()}"
            raise TokenRefused(msg)
        return info
