"""Pure parts of the shells: which model a scorer serves, JSON-safe status, learning settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from freshloop.exceptions import ConfigurationError
from freshloop.settings import Settings, load_settings
from online_learning.checkpoints import CheckpointRef, json_safe
from online_learning.features import SCORING_FEATURES
from online_learning.registry import ChampionRef
from online_learning.serving import choose_source
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
        "a": None, "b": [None, 1.5], "c": {"1": 2}
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


def _kafka_error(code: int) -> Exception:
    from confluent_kafka import KafkaError, KafkaException

    return KafkaException(KafkaError(code))


def test_a_transient_kafka_error_is_asked_again() -> None:
    """A new topic's leader may not be elected yet when the learner starts (seen in CI:
    NOT_LEADER_FOR_PARTITION from get_watermark_offsets killed the learner's start)."""
    from confluent_kafka import KafkaError

    from online_learning.service import _asking_again

    answers: list[object] = [
        _kafka_error(KafkaError.NOT_LEADER_FOR_PARTITION),
        _kafka_error(KafkaError.LEADER_NOT_AVAILABLE),
        (0, 42),
    ]
    calls = []

    def ask() -> object:
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert _asking_again(ask, "watermarks", timeout_s=10) == (0, 42)
    assert len(calls) == 3


def test_other_kafka_errors_and_lasting_ones_are_raised() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from online_learning.service import _asking_again

    calls = []

    def denied() -> None:
        calls.append(1)
        raise _kafka_error(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        _asking_again(denied, "watermarks", timeout_s=10)
    assert len(calls) == 1

    def leaderless() -> None:
        calls.append(1)
        raise _kafka_error(KafkaError.NOT_LEADER_FOR_PARTITION)

    calls.clear()
    with pytest.raises(KafkaException, match="NOT_LEADER"):
        _asking_again(leaderless, "watermarks", timeout_s=0.8)
    assert 2 <= len(calls) <= 4
