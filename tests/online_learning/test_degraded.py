"""The scoring hook and the learner when a dependency fails: they degrade, retry and say so
(``freshloop.core.health``), and a learner learns only its own namespace's predictions."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from sqlalchemy import create_engine

from freshloop.core.exceptions import DependencyRetryStopped
from freshloop.core.health import HEALTH
from freshloop.core.settings import Settings
from online_learning import LearnerService, Scorer
from online_learning.records import Payment
from tests.online_learning.fixtures import make_payment
from tests.online_learning.stack import learn_ns, wait_for
from tests.tcp_proxy import TcpProxy

__all__ = ["learn_ns"]  # fixture, re-exported for pytest

pytestmark = pytest.mark.integration


def _payment(payment_id: int) -> Payment:
    return make_payment(payment_id, created_at=datetime.now(UTC))


def _problems(component: str) -> dict[str, int]:
    return {d.dependency: d.errors for d in HEALTH.problems() if d.component == component}


def test_scorer_keeps_its_model_while_postgres_is_down_and_says_so(learn_ns: Settings) -> None:
    HEALTH.clear()
    proxy = TcpProxy(learn_ns.postgres_host, learn_ns.postgres_port)
    try:
        via_proxy = learn_ns.model_copy(
            update={
                "postgres_dsn": learn_ns.postgres_dsn.replace(
                    f":{learn_ns.postgres_port}/", f":{proxy.port}/"
                ),
                "champion_poll_s": 0.2,
            }
        )
        engine = create_engine(
            via_proxy.sqlalchemy_url(), pool_pre_ping=True, connect_args={"connect_timeout": 2}
        )
        scorer = Scorer(via_proxy, engine=engine)
        (first,) = scorer.score([_payment(1)])
        proxy.cut()  # a Postgres restart as the scorer sees it
        time.sleep(0.3)  # the champion poll is due
        (second,) = scorer.score([_payment(2)])  # the old code raised here
        assert second.model_version == first.model_version
        assert scorer.stats.stale_model_batches == 1
        assert "postgres" in _problems("scorer")
        proxy.restore()
        time.sleep(0.3)
        (third,) = scorer.score([_payment(3)])
        assert third.model_version == first.model_version
        assert _problems("scorer") == {}
        assert HEALTH.degradations[("scorer", "postgres")] == 1
        engine.dispose()
    finally:
        proxy.close()
        HEALTH.clear()


def test_scorer_flushes_again_while_kafka_does_not_answer(learn_ns: Settings) -> None:
    HEALTH.clear()
    scorer = Scorer(learn_ns)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        scorer.producer = Producer(
            {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": 120_000}
        )
        scorer.flush_timeout_s = 0.2
        outcome: list[BaseException | None] = []

        def score() -> None:
            try:
                scorer.score([_payment(1)])
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

        thread = threading.Thread(target=score, daemon=True)
        thread.start()
        wait_for(lambda: _problems("scorer").get("kafka", 0) >= 3, 30, "three failed flushes")
        assert thread.is_alive() and outcome == []  # retrying, not dead (the old code raised)
        scorer.stop.set()
        thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], DependencyRetryStopped)
    assert "scorer stopped while waiting for kafka" in str(outcome[0])
    HEALTH.clear()


def test_a_learner_learns_only_its_own_namespace(learn_ns: Settings) -> None:
    """Two namespaces on one topic prefix and, here, even one predictions topic: each learner
    takes its own namespace's predictions and skips (and counts) the other's."""
    other = learn_ns.model_copy(update={"redis_namespace": f"{learn_ns.namespace}b"})
    learners = {s.namespace: LearnerService(s) for s in (learn_ns, other)}
    threads = [threading.Thread(target=lr.run, daemon=True) for lr in learners.values()]
    try:
        for thread in threads:
            thread.start()
        wait_for(
            lambda: all(lr.learner is not None for lr in learners.values()),
            60,
            "both learners started",
        )
        time.sleep(1.0)  # both consumers positioned at the topic's end
        Scorer(learn_ns).score([_payment(i) for i in (1, 2, 3)])
        mine, theirs = learners[learn_ns.namespace], learners[other.namespace]
        wait_for(
            lambda: mine.counts.predictions == 3 and theirs.counts.foreign == 3,
            30,
            "each learner to see the three predictions",
        )
        assert theirs.counts.predictions == 0 and mine.counts.foreign == 0
    finally:
        for lr in learners.values():
            lr.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        from tests.fixtures import drop_namespace

        drop_namespace(other, other.namespace)
