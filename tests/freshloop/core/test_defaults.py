"""A public default password or key is refused at start-up unless the stack is the local one."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from freshloop.core.defaults import (
    PUBLIC_DEFAULT_SECRETS,
    is_local,
    public_defaults_in_use,
    refuse_public_defaults,
)
from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings, load_settings

_REAL = {name: SecretStr(f"real-{name}-0123456789") for name in PUBLIC_DEFAULT_SECRETS}


def test_the_local_stack_accepts_its_defaults() -> None:
    settings = Settings()
    assert is_local(settings)
    assert public_defaults_in_use(settings) == list(PUBLIC_DEFAULT_SECRETS)
    refuse_public_defaults(settings)  # no error
    refuse_public_defaults(Settings(postgres_dsn="postgresql://freshloop@localhost:5432/x"))
    refuse_public_defaults(Settings(redis_url="redis://[::1]:6379/0"))


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        (
            "postgres_dsn",
            "postgresql://freshloop@db.internal:5432/freshloop",
            "FRESHLOOP_POSTGRES_DSN",
        ),
        ("redis_url", "redis://10.0.0.5:6379/0", "FRESHLOOP_REDIS_URL"),
        ("redis_read_url", "redis://replica:6379/0", "FRESHLOOP_REDIS_READ_URL"),
        ("kafka_bootstrap", "127.0.0.1:9092,broker2:9092", "FRESHLOOP_KAFKA_BOOTSTRAP (2)"),
        ("connect_url", "http://connect:8083", "FRESHLOOP_CONNECT_URL"),
        ("api_host", "0.0.0.0", "FRESHLOOP_API_HOST"),  # noqa: S104 - the case refused
        ("stack_bind", "192.168.1.2", "FRESHLOOP_STACK_BIND"),
    ],
)
def test_a_default_secret_beyond_loopback_is_refused(field: str, value: str, variable: str) -> None:
    settings = Settings(**{field: value})
    assert not is_local(settings)
    with pytest.raises(ConfigurationError) as refused:
        refuse_public_defaults(settings)
    text = str(refused.value)
    assert variable in text
    assert "FRESHLOOP_MODEL_SIGNING_KEY" in text and "FRESHLOOP_REDIS_PASSWORD" in text
    assert "set each to a random value" in text and "FRESHLOOP_ENV=local" in text
    for secret in _REAL.values():  # the message names variables, never values
        assert secret.get_secret_value() not in text


def test_only_the_defaults_left_are_named() -> None:
    settings = Settings(
        redis_url="redis://10.0.0.5:6379/0",
        **{k: v for k, v in _REAL.items() if k != "cdc_password"},
    )
    assert public_defaults_in_use(settings) == ["cdc_password"]
    with pytest.raises(ConfigurationError, match=r"^FRESHLOOP_CDC_PASSWORD still hold"):
        refuse_public_defaults(settings)


def test_real_secrets_are_accepted_anywhere() -> None:
    refuse_public_defaults(Settings(redis_url="redis://10.0.0.5:6379/0", **_REAL))
    refuse_public_defaults(Settings(env="production", **_REAL))


def test_declared_local_and_declared_production() -> None:
    compose = Settings(env="local", postgres_dsn="postgresql://freshloop@postgres:5432/freshloop")
    refuse_public_defaults(compose)
    with pytest.raises(ConfigurationError, match="FRESHLOOP_ENV is production"):
        refuse_public_defaults(Settings(env="production"))


def test_start_up_refuses_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command loads its settings through load_settings."""
    monkeypatch.setenv("FRESHLOOP_REDIS_URL", "redis://redis.internal:6379/0")
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="FRESHLOOP_REDIS_URL"):
            load_settings()
        monkeypatch.setenv("FRESHLOOP_ENV", "local")
        load_settings.cache_clear()
        assert load_settings().env == "local"
    finally:
        load_settings.cache_clear()
