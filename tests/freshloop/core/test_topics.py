"""Asking Kafka again while it answers with a transient error (a new topic's leader not
elected yet, a broker restarting), and only then (pure: the errors are made here)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from freshloop.core.topics import asking_again


def _kafka_error(code: int) -> Exception:
    return KafkaException(KafkaError(code))


def test_a_transient_kafka_error_is_asked_again() -> None:
    """A new topic's leader may not be elected yet when the learner starts (seen in CI:
    NOT_LEADER_FOR_PARTITION from get_watermark_offsets killed the learner's start)."""
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

    assert asking_again(ask, "watermarks", timeout_s=10) == (0, 42)
    assert len(calls) == 3


def test_other_kafka_errors_and_lasting_ones_are_raised() -> None:
    calls = []

    def denied() -> None:
        calls.append(1)
        raise _kafka_error(KafkaError.TOPIC_AUTHORIZATION_FAILED)

    with pytest.raises(KafkaException):
        asking_again(denied, "watermarks", timeout_s=10)
    assert len(calls) == 1

    def leaderless() -> None:
        calls.append(1)
        raise _kafka_error(KafkaError.NOT_LEADER_FOR_PARTITION)

    calls.clear()
    with pytest.raises(KafkaException, match="NOT_LEADER"):
        asking_again(leaderless, "watermarks", timeout_s=0.8)
    assert 2 <= len(calls) <= 4
