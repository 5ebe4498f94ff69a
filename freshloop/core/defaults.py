"""Public default secrets are for the local stack only.

Every password and the model signing key have a default so that ``make demo`` works on a fresh
machine; those defaults are in this repository for anyone to read. They are accepted only when
the stack is the local one: ``FRESHLOOP_ENV=local``, or ``auto`` (the default) with every
service the settings name, and every address Freshloop listens on, on loopback. Anywhere else a
command stops at start-up with a sentence naming the variables to set.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import SecretStr

from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings

__all__ = [
    "PUBLIC_DEFAULT_SECRETS",
    "is_local",
    "is_loopback_host",
    "public_defaults_in_use",
    "refuse_public_defaults",
]

PUBLIC_DEFAULT_SECRETS = (
    "postgres_password",
    "cdc_password",
    "redis_password",
    "redis_read_password",
    "redis_admin_password",
    "model_signing_key",
)


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); a name that needs DNS is not."""
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hosts(settings: Settings) -> dict[str, str | None]:
    """Every host the settings connect to or listen on, by the variable that sets it."""
    hosts: dict[str, str | None] = {
        "FRESHLOOP_POSTGRES_DSN": settings.postgres_host,
        "FRESHLOOP_REDIS_URL": urlsplit(settings.redis_url).hostname,
        "FRESHLOOP_CONNECT_URL": urlsplit(settings.connect_url).hostname,
        "FRESHLOOP_STACK_BIND": settings.stack_bind,
        "FRESHLOOP_API_HOST": settings.api_host,
    }
    if settings.redis_read_url:
        hosts["FRESHLOOP_REDIS_READ_URL"] = urlsplit(settings.redis_read_url).hostname
    if settings.connector_database_host:
        hosts["FRESHLOOP_CONNECTOR_DATABASE_HOST"] = settings.connector_database_host
    for n, server in enumerate(settings.kafka_bootstrap.split(",")):
        hosts[f"FRESHLOOP_KAFKA_BOOTSTRAP ({n + 1})"] = server.strip().rsplit(":", 1)[0]
    return hosts


def is_local(settings: Settings) -> bool:
    """Whether the public defaults may be used: declared local, or (auto) all on loopback."""
    if settings.env != "auto":
        return settings.env == "local"
    return all(is_loopback_host(host) for host in _hosts(settings).values())


def public_defaults_in_use(settings: Settings) -> list[str]:
    """The secret settings still at their public default value."""
    fields = type(settings).model_fields
    out = []
    for name in PUBLIC_DEFAULT_SECRETS:
        default = fields[name].default
        value: SecretStr = getattr(settings, name)
        if not isinstance(default, SecretStr):
            continue
        if value.get_secret_value() == default.get_secret_value():
            out.append(name)
    return out


def refuse_public_defaults(settings: Settings) -> None:
    """Stop when a public default secret is used outside the local stack."""
    defaults = public_defaults_in_use(settings)
    if not defaults or is_local(settings):
        return
    names = ", ".join(f"FRESHLOOP_{name.upper()}" for name in defaults)
    if settings.env == "production":
        where = "FRESHLOOP_ENV is production"
    else:
        remote = [var for var, host in _hosts(settings).items() if not is_loopback_host(host)]
        where = f"not every service is on loopback ({', '.join(remote)})"
    msg = (
        f"{names} still hold their public default, which anyone can read in Freshloop's source, "
        f"and {where}: set each to a random value of your own (e.g. the output of "
        "'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'), the same for "
        "every Freshloop process and the server it opens, or set FRESHLOOP_ENV=local if this "
        "really is a stack only this machine can reach"
    )
    raise ConfigurationError(msg)
