"""Through Kafka, Redis and Postgres: the horizon runs on event time, a backlog drained after
downtime learns what live learning would, and a replay of the topics learns exactly the same."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topic
from online_learning import LearnerService
from online_learning.messages import encode_prediction
from online_learning.records import Prediction
from online_learning.scoring_hook import _redis_fields, prediction_key
from tests.feature_pipelines.fixtures import envelope, iso
from tests.fixtures import drop_namespace
from tests.online_learning.stack import learn_ns, wait_for

pytestmark = pytest.mark.integration

__all__ = ["learn_ns"]

H = timedelta(hours=1)
STEP = timedelta(minutes=5)


@pytest.fixture
def own_topics(learn_ns: Settings) -> Iterator[Settings]:
    """The namespace with its own outcomes topic too (its prefix is the namespace's tag)."""
    settings = learn_ns.model_copy(
        update={
            "topic_prefix": learn_ns.namespace,
            "learner_start": "earliest",
            "checkpoint_every_examples": 10,
            "checkpoint_every_s": 0.5,
        }
    )
    ensure_topic(settings, settings.topic("payment_outcomes"))
    yield settings
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = admin.list_topics(timeout=10).topics
    mine = [t for t in existing if t.startswith(f"{settings.topic_prefix}.")]
    for future in (admin.delete_topics(mine) if mine else {}).values():
        future.result(timeout=30)


def _examples(settings: Settings) -> dict[int, tuple[bool, str, datetime]]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        rows = conn.execute(
            "SELECT payment_id, label, source, labelled_at FROM training_examples "
            "WHERE namespace = %s",
            (settings.namespace,),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _run_until(settings: Settings, count: int) -> LearnerService:
    service = LearnerService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(_examples(settings)) >= count, 40, f"{count} examples stored")
        wait_for(lambda: not service._dirty, 10, "a checkpoint of everything read")
    finally:
        service.stop.set()
        thread.join(timeout=30)
    return service


def test_a_backlog_after_downtime_learns_in_event_time_and_a_replay_learns_the_same(
    own_topics: Settings,
) -> None:
    settings = own_topics
    # Downtime: the learner checkpointed its start position, then stopped.
    _run_until(settings, 0)
    # Five hours of payments, ten hours ago: on a wall clock every horizon has passed.
    base = datetime.now(UTC).replace(microsecond=0) - 10 * H
    first = random.Random(uuid.uuid4().int).randrange(10**9, 10**12)
    client = redis.Redis.from_url(settings.redis_conninfo())
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    payments = {first + i: base + i * STEP for i in range(60)}
    for pid, created_at in payments.items():
        p = Prediction(pid, 0.2, {"amount": 1.0}, "v0", created_at, created_at + H / 6)
        client.hset(prediction_key(settings.namespace, pid), mapping=_redis_fields(p, "test"))
        producer.produce(
            settings.predictions_topic_name, key=str(pid).encode(), value=encode_prediction(p)
        )
    # Fraud outcomes of the first 40: i % 10 == 0 50 minutes after (in time), i % 10 == 5 90
    # minutes after (late: the horizon negative stands). In reported_at order, like the table.
    outcomes = sorted(
        [
            (payments[first + i] + (50 if i % 10 == 0 else 90) * timedelta(minutes=1), first + i)
            for i in range(40)
            if i % 5 == 0
        ]
    )
    for lsn, (reported_at, pid) in enumerate(outcomes, start=100):
        row = {"payment_id": pid, "is_fraud": True, "reported_at": iso(reported_at)}
        producer.produce(
            settings.topic("payment_outcomes"),
            key=orjson.dumps({"payment_id": pid}),
            value=envelope("payment_outcomes", "c", None, row, lsn * 8),
        )
    producer.flush(10)
    # All drained, the watermark is the newest created_at (4h55): horizons up to 3h55 passed.
    due = {pid for pid, at in payments.items() if at + H <= base + 59 * STEP}
    assert len(due) == 48
    service = _run_until(settings, len(due))
    live = _examples(settings)
    assert set(live) == due  # the last hour's payments are not negatives: event time decides
    for pid in due:
        i = pid - first
        expected = (
            (True, "outcome", payments[pid] + 50 * timedelta(minutes=1))
            if i < 40 and i % 10 == 0
            else (False, "horizon", payments[pid] + H)
        )
        assert live[pid] == expected, (i, live[pid])
    assert service.learner is not None
    status = service.learner.status()
    assert status["join"]["late_fraud_outcomes"] == 4
    assert status["counts"]["learned"] == service.learner.model.n_learned == len(live)
    # Redis keeps a logged prediction while its payment is open, not for a wall-clock TTL
    kept = {pid for pid in payments if client.exists(prediction_key(settings.namespace, pid))}
    assert kept == set(payments) - due
    # A replay of the same topics in a fresh namespace (no predictions of its own in Redis,
    # so the learner puts them back from the topic) learns exactly the same examples.
    tag = f"t{uuid.uuid4().hex[:10]}"
    replay = settings.model_copy(update={"redis_namespace": tag})
    try:
        _run_until(replay, len(due))
        assert _examples(replay) == live
    finally:
        drop_namespace(replay, tag)


def test_a_prediction_that_reaches_the_learner_after_its_outcome_is_not_logged_again(
    own_topics: Settings,
) -> None:
    """The outcome met the scorer's log in Redis and was learned; its checkpoint removed the
    log. The prediction's own message, read after that, finds the payment learned in Postgres:
    the log stays removed (it was put back once, to live until its TTL) and nothing is learned
    twice."""
    settings = own_topics
    _run_until(settings, 0)
    pid = random.Random(uuid.uuid4().int).randrange(10**9, 10**12)
    created_at = datetime.now(UTC).replace(microsecond=0) - 10 * H
    p = Prediction(pid, 0.7, {"amount": 1.0}, "v0", created_at, created_at + H / 6)
    client = redis.Redis.from_url(settings.redis_conninfo())
    key = prediction_key(settings.namespace, pid)
    client.hset(key, mapping=_redis_fields(p, "test"))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    row = {"payment_id": pid, "is_fraud": True, "reported_at": iso(created_at + H / 2)}
    producer.produce(
        settings.topic("payment_outcomes"),
        key=orjson.dumps({"payment_id": pid}),
        value=envelope("payment_outcomes", "c", None, row, 800),
    )
    producer.flush(10)
    _run_until(settings, 1)
    assert _examples(settings) == {pid: (True, "outcome", created_at + H / 2)}
    assert not client.exists(key)  # removed by the checkpoint that stored the example
    producer.produce(
        settings.predictions_topic_name, key=str(pid).encode(), value=encode_prediction(p)
    )
    producer.flush(10)
    service = LearnerService(settings)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: service.counts.predictions >= 1, 40, "the prediction read")
        wait_for(lambda: not service._dirty, 10, "a checkpoint of everything read")
    finally:
        service.stop.set()
        thread.join(timeout=30)
    assert not client.exists(key)
    assert _examples(settings) == {pid: (True, "outcome", created_at + H / 2)}
