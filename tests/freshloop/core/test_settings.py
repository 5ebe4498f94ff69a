"""One typed settings object: defaults for the local stack, env overrides, clear errors."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings, load_settings


def test_defaults_point_at_the_local_stack_on_loopback() -> None:
    s = Settings()
    assert (s.postgres_host, s.postgres_port, s.postgres_db) == ("127.0.0.1", 5432, "freshloop")
    assert (s.kafka_port, s.connect_port, s.redis_port) == (9092, 8083, 6379)
    assert s.stack_bind == "127.0.0.1"
    assert s.topic("payments") == "freshloop.public.payments"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLOOP_REDIS_URL", "redis://127.0.0.1:7000/2")
    monkeypatch.setenv("FRESHLOOP_TOPIC_PREFIX", "shop")
    s = Settings()
    assert s.redis_port == 7000 and s.topic("payments") == "shop.public.payments"
    assert s.slot_name == "shop_slot"


def test_frozen_and_secrets_hidden() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.topic_prefix = "other"  # type: ignore[misc]
    assert "freshloop" not in repr(s.postgres_password) and "cdc-local-only" not in repr(s)
    assert "freshloop:freshloop@" in s.postgres_conninfo()


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("postgres_dsn", "postgresql://u:pw@h:5432/db", "FRESHLOOP_POSTGRES_PASSWORD"),
        ("postgres_dsn", "mysql://u@h/db", "postgresql://"),
        ("postgres_dsn", "postgresql://u@h:5432", "names no database"),
        ("topic_prefix", "9bad-prefix", "FRESHLOOP_TOPIC_PREFIX"),
        ("kafka_bootstrap", "localhost", "names no port"),
        ("retention_examples_days", "1", "more than label_horizon"),
        ("row_state_grace", "soon", "row_state_grace"),
    ],
)
def test_bad_values_say_how_to_fix_them(field: str, value: str, hint: str) -> None:
    with pytest.raises(ValidationError, match=hint):
        Settings(**{field: value})


def test_load_settings_turns_errors_into_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLOOP_TOPIC_PREFIX", "no spaces allowed")
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="FRESHLOOP_TOPIC_PREFIX"):
            load_settings()
    finally:
        load_settings.cache_clear()


def test_the_environment_of_settings_loads_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a parent hands a child process (``Settings.environment``) loads back equal."""
    chosen = Settings(redis_namespace="child", row_state_grace="7200", retention_examples_days=9)
    env = chosen.environment({"UNRELATED": "kept", "FRESHLOOP_PREDICTIONS_TOPIC": "gone"})
    assert env["UNRELATED"] == "kept" and "FRESHLOOP_PREDICTIONS_TOPIC" not in env
    for name in [k for k in os.environ if k.startswith("FRESHLOOP_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("FRESHLOOP_"):
            monkeypatch.setenv(name, value)
    assert Settings() == chosen
