"""Through the real stack: payments are scored at event time, outcomes are learned exactly once,
the generator's fraud pattern is learned, and a promoted champion is followed without restart."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
import redis
from confluent_kafka import Consumer, Producer

from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from online_learning import LearnerService, OnlineModel, get_prediction
from online_learning.exceptions import OnlineLearningError
from online_learning.messages import decode_prediction
from tests.online_learning.stack import ScoringPipeline, learn_ns, wait_for

pytestmark = pytest.mark.integration

__all__ = ["learn_ns"]  # the fixture, re-exported for pytest

# Learnable and quick: bursts of high amounts at risky merchants through one channel, little
# unlearnable noise, outcomes half a second to 1.5 s after the payment.
WORKLOAD = WorkloadConfig(
    rate=60,
    customers=200,
    merchants=30,
    burst_share=0.03,
    base_fraud_rate=0.002,
    label_delay_s=1.0,
    seed=11,
)


def _examples(settings: Settings) -> list[tuple[int, dict, bool]]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return conn.execute(
            "SELECT payment_id, features, label FROM training_examples WHERE namespace = %s",
            (settings.namespace,),
        ).fetchall()


def _outcome_ids(settings: Settings, payment_ids: set[int]) -> set[int]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        rows = conn.execute(
            "SELECT payment_id FROM payment_outcomes WHERE payment_id = ANY(%s)",
            (list(payment_ids),),
        ).fetchall()
    return {r[0] for r in rows}


def _all_scored(settings: Settings, payment_ids: set[int]) -> bool:
    """Each payment's prediction is logged in Redis, or already learned (a checkpoint that
    stores a payment as learned removes its logged prediction from Redis)."""
    client = redis.Redis.from_url(settings.redis_conninfo())
    open_ = {p for p in payment_ids if get_prediction(client, settings.namespace, p) is None}
    return not open_ or open_ <= {r[0] for r in _examples(settings)}


def _logged(settings: Settings, payment_ids: set[int]) -> dict[int, dict]:
    """The feature vectors logged on the predictions topic for these payments."""
    reader = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"t-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    topic = settings.predictions_topic_name
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.subscribe([topic])
    out: dict[int, dict] = {}
    at_end: set[int] = set()
    try:
        while len(at_end) < len(partitions):
            msg = reader.poll(5)
            if msg is None:
                break
            if msg.error() is not None:
                at_end.add(msg.partition() or 0)
                continue
            try:
                prediction = decode_prediction(msg.value())
            except OnlineLearningError:
                continue
            if prediction.payment_id in payment_ids:
                out.setdefault(prediction.payment_id, dict(prediction.features))
    finally:
        reader.close()
    return out


def _learned(service: LearnerService) -> int:
    return 0 if service.learner is None else int(service.learner.status()["counts"]["learned"])


def _start(service: LearnerService) -> threading.Thread:
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    wait_for(lambda: service.counts.checkpoints >= 1, 30, "the learner's first checkpoint")
    return thread


def test_every_outcome_is_learned_once_and_the_pattern_is_learned(learn_ns: Settings) -> None:
    service = LearnerService(learn_ns)
    thread = _start(service)
    producer = Producer({"bootstrap.servers": learn_ns.kafka_bootstrap})
    producer.produce(learn_ns.predictions_topic_name, key=b"-1", value=b"not a prediction")
    producer.flush(10)
    try:
        with ScoringPipeline(learn_ns):
            report = run_simulation(learn_ns, WORKLOAD, duration_s=15)
            payments = report.count("payments", "c")
            wait_for(lambda: _all_scored(learn_ns, report.payment_ids), 30, "payments scored")
        expected = _outcome_ids(learn_ns, report.payment_ids)
        assert len(expected) == report.count("payment_outcomes", "c") > 0
        # Other writers may share the change topics: their payments are scored and learned too.
        wait_for(
            lambda: expected <= {r[0] for r in _examples(learn_ns)}, 30, "every outcome learned"
        )
    finally:
        service.stop.set()
        thread.join(timeout=30)
    assert service.learner is not None
    status = service.learner.status()
    rows = _examples(learn_ns)
    mine = [r for r in rows if r[0] in report.payment_ids]
    assert {r[0] for r in mine} == expected and len(mine) == len(expected)  # none lost
    assert status["counts"]["learned"] == service.learner.model.n_learned == len(rows)
    assert status["join"]["duplicate_predictions"] == 0
    assert service.counts.dead_lettered == 1  # the bad message, counted, did not stop learning
    metrics = status["metrics"]
    print(
        f"payments={payments} examples={len(rows)} fraud={metrics['n_fraud']:.0f} "
        f"roc_auc={metrics['roc_auc']:.3f} rolling_roc_auc={metrics['rolling_roc_auc']:.3f} "
        f"log_loss={metrics['log_loss']:.3f}"
    )
    assert metrics["n_fraud"] >= 30
    assert metrics["rolling_roc_auc"] > 0.8
    # The logged vector is exactly what was trained on; the learned ones left Redis.
    client = redis.Redis.from_url(learn_ns.redis_conninfo())
    logged = _logged(learn_ns, {r[0] for r in mine[:50]})
    for payment_id, features, _label in mine[:50]:
        assert logged[payment_id] == features
        assert get_prediction(client, learn_ns.namespace, payment_id) is None


def test_a_promoted_champion_is_followed_without_restart(learn_ns: Settings) -> None:
    service = LearnerService(learn_ns)
    thread = _start(service)
    registry = service.registry
    first = registry.champion_ref()
    assert first is not None
    new_version = f"challenger-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    try:
        with ScoringPipeline(learn_ns) as scoring:
            writer = threading.Thread(
                target=lambda: (run_simulation(learn_ns, WORKLOAD, duration_s=10), done.set()),
                daemon=True,
            )
            writer.start()
            wait_for(lambda: scoring.scorer.stats.scored > 50, 30, "some payments scored")
            assert scoring.scorer.source.current().model.version == first.version
            registry.register(OnlineModel(learn_ns.model_spec, new_version), "challenger")
            registry.promote(new_version)
            wait_for(
                lambda: (
                    service.learner is not None and service.learner.model.version == new_version
                ),
                10,
                "the learner to swap",
            )
            wait_for(
                lambda: scoring.scorer.source.current().model.version == new_version,
                10,
                "the scorer to swap",
            )
            wait_for(done.is_set, 60, "the workload")
            wait_for(
                lambda: service.learner is not None and service.learner.model.n_learned > 0,
                20,
                "the new champion to learn",
            )
    finally:
        service.stop.set()
        thread.join(timeout=30)
    assert service.learner is not None
    assert service.learner.model.version == new_version
    assert service.learner.model.n_learned > 0  # kept learning, now the new champion
    assert service.learner.status()["counts"]["swaps"] == 1
    assert [m["status"] for m in registry.models() if m["version"] == first.version] == ["retired"]
    # Payments were scored by the old champion, then by the new one.
    with psycopg.connect(learn_ns.postgres_conninfo()) as conn:
        versions = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT model_version FROM training_examples WHERE namespace = %s",
                (learn_ns.namespace,),
            )
        }
    assert versions == {first.version, new_version}
