"""Pure parts of the shells: which model a scorer serves, JSON-safe status, learning settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings, load_settings
from online_learning.checkpoints import CheckpointRef, json_safe
from online_learning.features import SCORING_FEATURES
from online_learning.model_source import choose_source
from online_learning.registry import ChampionRef
from online_learning.vector import SERVED_FEATURES
from tests.online_learning.fixtures import T0

CHAMPION = ChampionRef("v2", T0)


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        (None, None),  # nothing learned yet: the registry's blob
        (CheckpointRef(5, "v2", T0 + timedelta(seconds=1)), 5),  # trained champion
        (CheckpointRef(5, "v2", T0), 5),
        (CheckpointRef(5, "v1", T0 + timedelta(seconds=1)), None),  # learner not swapped yet
        (CheckpointRef(5, "v2", T0 - timedelta(seconds=1)), None),  # before a re-promotion
    ],
)
def test_scorers_serve_the_trained_champion_only(
    checkpoint: CheckpointRef | None, expected: int | None
) -> None:
    assert choose_source(CHAMPION, checkpoint) == expected


def test_status_is_json_safe() -> None:
    assert json_safe({"a": float("nan"), "b": [float("inf"), 1.5], "c": {1: 2}}) == {
        "a": None,
        "b": [None, 1.5],
        "c": {"1": 2},
    }


def test_learning_settings_defaults_and_seconds_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHLOOP_LABEL_HORIZON", "90")
    monkeypatch.setenv("FRESHLOOP_LABEL_GRACE", "PT1M")
    settings = Settings()
    assert settings.label_horizon == timedelta(seconds=90)
    assert settings.label_grace == timedelta(minutes=1)
    assert settings.horizon_negatives is True
    assert settings.predictions_topic_name == f"{settings.topic_prefix}.predictions"
    assert len(settings.model_signing_key.get_secret_value().encode()) >= 16
    assert settings.model_signing_key.get_secret_value() not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [("FRESHLOOP_MODEL_SIGNING_KEY", "short"), ("FRESHLOOP_LABEL_HORIZON", "0")],
)
def test_bad_learning_settings_stop_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match=name):
            load_settings()
    finally:
        load_settings.cache_clear()


def test_the_scoring_features_serve_everything_the_vector_reads() -> None:
    names = {f.name for f in SCORING_FEATURES}
    assert set(SERVED_FEATURES) <= names
    assert "channel" in SCORING_FEATURES.needed_columns("payments")
