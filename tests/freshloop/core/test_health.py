"""The health registry and the retry shell: pure, no services."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import REGISTRY

from freshloop.core.exceptions import DependencyRetryStopped
from freshloop.core.health import HEALTH, HealthRegistry, backoff_delay, retry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_part_is_degraded_per_dependency_until_that_dependency_works() -> None:
    clock = Clock()
    health = HealthRegistry(clock)
    health.register("learner")
    assert health.components() == {"learner": []}
    assert health.degraded("scorer", "kafka", TimeoutError("no ack")) is True
    clock.now = 105.0
    assert health.degraded("scorer", "kafka", "still no ack") is False
    health.degraded("scorer", "postgres", "down")
    assert health.healthy("scorer", "postgres") is not None
    (kafka,) = health.problems()
    assert (kafka.component, kafka.dependency, kafka.since, kafka.errors) == (
        "scorer",
        "kafka",
        100.0,
        2,
    )
    assert kafka.detail == "still no ack"
    assert [d.dependency for d in health.components()["scorer"]] == ["kafka"]
    ended = health.healthy("scorer", "kafka")
    assert ended is not None and ended.errors == 2
    assert health.problems() == []
    health.degraded("scorer", "kafka", "again")
    assert health.degradations == {("scorer", "kafka"): 2, ("scorer", "postgres"): 1}
    assert health.errors[("scorer", "kafka")] == 3


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_delay(a, 0.25, 2.0) for a in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff_delay(1000, 0.25, 2.0) == 2.0  # no overflow
    assert backoff_delay(3, 0.25, 2.0, jitter=0.25) == 1.5


def test_retry_reports_each_failure_and_the_recovery() -> None:
    health = HealthRegistry()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            msg = "refused"
            raise ConnectionError(msg)
        return "answer"

    seen: list[int] = []
    original = health.degraded

    def spy(component: str, dependency: str, error: BaseException | str) -> bool:
        seen.append(len(health.problems()))
        return original(component, dependency, error)

    health.degraded = spy  # type: ignore[method-assign]
    result = retry(
        flaky,
        component="learner",
        dependency="postgres",
        errors=(ConnectionError,),
        stop=threading.Event(),
        health=health,
        base_s=0.001,
        cap_s=0.002,
    )
    assert result == "answer" and len(calls) == 3
    assert seen == [0, 1]  # degraded after the first failure, still degraded at the second
    assert health.problems() == []  # the success ended it
    assert health.errors == {("learner", "postgres"): 2}


def test_retry_lets_other_errors_through_and_ends_when_stopped() -> None:
    health = HealthRegistry()

    def bug() -> None:
        msg = "a bug is not an outage"
        raise ValueError(msg)

    with pytest.raises(ValueError, match="a bug"):
        retry(
            bug,
            component="c",
            dependency="d",
            errors=(ConnectionError,),
            stop=threading.Event(),
            health=health,
        )
    assert health.problems() == []

    stop = threading.Event()

    def down() -> None:
        stop.set()  # asked to stop while the dependency is down
        msg = "refused"
        raise ConnectionError(msg)

    with pytest.raises(DependencyRetryStopped, match="c stopped while waiting for d"):
        retry(
            down,
            component="c",
            dependency="d",
            errors=(ConnectionError,),
            stop=stop,
            health=health,
            base_s=10.0,
        )
    assert [(p.component, p.dependency) for p in health.problems()] == [("c", "d")]


def test_degradations_are_prometheus_metrics() -> None:
    HEALTH.clear()
    try:
        HEALTH.degraded("scorer", "kafka", "no ack")
        HEALTH.degraded("scorer", "kafka", "no ack")
        labels = {"component": "scorer", "dependency": "kafka"}
        assert REGISTRY.get_sample_value("freshloop_degradations_total", labels) == 1.0
        assert REGISTRY.get_sample_value("freshloop_dependency_errors_total", labels) == 2.0
        assert REGISTRY.get_sample_value("freshloop_degraded", labels) == 1.0
        HEALTH.healthy("scorer", "kafka")
        assert REGISTRY.get_sample_value("freshloop_degraded", labels) is None
    finally:
        HEALTH.clear()
