"""Scoring at event time: the feature pipeline's ``on_applied`` hook.

Right after the pipeline's batch that applied a payment's insert is written, the payment is
scored on its customer's and merchant's features as served at that moment (they include this
payment). One ``get_many`` round trip per entity per batch. The prediction — score, the exact
vector, model version, times — is written to Redis (``<ns>:pred:{<payment_id>}``, expiring after
label horizon + grace; read it with ``get_prediction``) and to Kafka ``<prefix>.predictions``
(JSON, key payment_id) for downstream consumers and for the learner, which trains on that very
vector when the outcome arrives.

Each message carries the scorer's namespace (``ns``): learners of other namespaces that share
the topic drop it. The default topic carries the namespace too (``predictions_topic_name``).

Degraded, not dead: when the champion poll cannot reach Postgres the scorer keeps serving the
model it has (and waits with backoff only if it has none yet); when Kafka does not acknowledge
the predictions it flushes again with backoff. Both report to ``freshloop.core.health.HEALTH`` as
component ``scorer``.

Delivery: predictions are flushed to Kafka before the next batch. A pipeline killed between its
batch write and that flush loses those predictions (the batch's inserts are duplicates on
replay, so they are not scored again): scoring is at most once; the learner is exactly once.
Payments committed more than ``score_max_age`` ago are not scored: a replay that rebuilds
features is not a decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from confluent_kafka import Producer
from sqlalchemy import Engine, create_engine

from feature_pipelines import FeatureSet
from feature_pipelines.cluster_read import layout_client_when_up, store_for
from feature_pipelines.decode import ChangeEvent
from freshloop.core.db import POSTGRES_DOWN
from freshloop.core.health import HEALTH, retry
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topic
from online_learning.checkpoints import CheckpointStore
from online_learning.exceptions import (
    MessageError,
    OnlineLearningError,
    PredictionsNotAcknowledged,
)
from online_learning.features import SCORING_FEATURES
from online_learning.messages import encode_prediction, payment_from_event
from online_learning.model_source import ModelSource, ServedModel
from online_learning.records import Payment, Prediction
from online_learning.registry import ModelRegistry
from online_learning.services import feature_service
from online_learning.vector import build_vector

__all__ = ["Scorer", "ScorerStats", "get_prediction", "prediction_key"]

log = logging.getLogger(__name__)

_COMPONENT = "scorer"


def prediction_key(ns: str, payment_id: int) -> str:
    return f"{ns}:pred:{{{payment_id}}}"


@dataclass
class ScorerStats:
    scored: int = 0
    too_old: int = 0
    errors: int = 0
    stale_model_batches: int = 0  # scored with the model already served: Postgres unreachable


class Scorer:
    """Scores new payments of each applied batch; pass it as ``FeaturePipeline(on_applied=...)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str | None = None,
        features: FeatureSet = SCORING_FEATURES,
        engine: Engine | None = None,
        served_names: Sequence[str] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.ns = namespace or settings.namespace
        self.stop = stop or threading.Event()  # ends a wait for Postgres or Kafka
        self.flush_timeout_s = 10.0
        # features are read as the read-only user; predictions are written as the writer; on
        # one Redis or a Redis Cluster (redis_layout)
        self.redis = layout_client_when_up(settings, "writer", self.stop, "scorer")
        self.store = store_for(
            settings,
            features,
            ns=self.ns,
            client=layout_client_when_up(settings, "reader", self.stop, "scorer"),
        )
        self.topic = settings.predictions_topic_name
        # the model's inputs: the settings' feature service unless given
        self.served_names = tuple(
            feature_service(settings).features if served_names is None else served_names
        )
        self.ttl_ms = int((settings.label_horizon + settings.label_grace).total_seconds() * 1000)
        self.max_age_ms = int(settings.score_max_age.total_seconds() * 1000)
        engine = engine or create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
        key = settings.model_signing_key.get_secret_value().encode()
        self.source = ModelSource(
            ModelRegistry(engine, self.ns, key),
            CheckpointStore(engine, self.ns, key),
            settings.model_spec,
            settings.champion_poll_s,
        )
        ensure_topic(settings, self.topic)
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 2})
        self.stats = ScorerStats()
        HEALTH.register(_COMPONENT)

    def __call__(self, events: list[ChangeEvent]) -> None:
        payments = self._new_payments(events)
        if payments:
            self.score(payments)

    def _new_payments(self, events: list[ChangeEvent]) -> list[Payment]:
        oldest = time.time() * 1000 - self.max_age_ms
        out: list[Payment] = []
        for event in events:
            if event.table != "payments" or event.op != "c":
                continue
            if event.commit_ms < oldest:
                self.stats.too_old += 1
                continue
            try:
                out.append(payment_from_event(event))
            except MessageError as exc:
                self.stats.errors += 1
                log.warning("payment not scored key=%s reason=%s", event.key, exc)
        return out

    def score(self, payments: list[Payment]) -> list[Prediction]:
        """Score, then record in Redis and Kafka; returns the predictions."""
        served = self._model()
        customers = {p.customer_id for p in payments}
        merchants = {p.merchant_id for p in payments}
        by_customer = dict(
            zip(customers, self.store.get_many("customer", list(customers)), strict=True)
        )
        by_merchant = dict(
            zip(merchants, self.store.get_many("merchant", list(merchants)), strict=True)
        )
        now = datetime.now(UTC)
        predictions: list[Prediction] = []
        pipe = self.redis.pipeline(transaction=False)
        for p in payments:
            values = {**by_customer[p.customer_id].values, **by_merchant[p.merchant_id].values}
            try:
                x = build_vector(p, values, self.served_names)
            except OnlineLearningError as exc:
                self.stats.errors += 1
                log.warning("payment not scored payment_id=%d reason=%s", p.payment_id, exc)
                continue
            prediction = Prediction(
                payment_id=p.payment_id,
                score=served.model.predict_proba(x),
                features=x,
                model_version=served.model.version,
                created_at=p.created_at,
                predicted_at=now,
            )
            predictions.append(prediction)
            key = prediction_key(self.ns, p.payment_id)
            pipe.hset(key, mapping=_redis_fields(prediction, served.served_from))
            pipe.pexpire(key, self.ttl_ms)
            self._produce(
                str(p.payment_id).encode(),
                encode_prediction(
                    prediction,
                    ns=self.ns,
                    customer_id=p.customer_id,
                    merchant_id=p.merchant_id,
                    served_from=served.served_from,
                ),
            )
        pipe.execute()
        retry(
            self._flush,
            component=_COMPONENT,
            dependency="kafka",
            errors=(PredictionsNotAcknowledged,),
            stop=self.stop,
        )
        self.stats.scored += len(predictions)
        return predictions

    def _model(self) -> ServedModel:
        """The champion to score with; the one already served while Postgres cannot be polled
        (the next poll comes ``champion_poll_s`` later), else wait for Postgres with backoff."""
        try:
            served = self.source.current()
        except POSTGRES_DOWN as exc:
            last = self.source.last
            if last is None:
                return retry(
                    self.source.current,
                    component=_COMPONENT,
                    dependency="postgres",
                    errors=POSTGRES_DOWN,
                    stop=self.stop,
                )
            if HEALTH.degraded(_COMPONENT, "postgres", exc):
                log.warning(
                    "champion_poll_failed error=%s: scoring with model %s until Postgres answers",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
                    last.model.version,
                )
            self.stats.stale_model_batches += 1
            return last
        if HEALTH.healthy(_COMPONENT, "postgres") is not None:
            log.warning("champion_poll_recovered model=%s", served.model.version)
        return served

    def _produce(self, key: bytes, value: bytes) -> None:
        """Queue one message; a full local queue waits for deliveries (Kafka slow or down)."""
        while True:
            try:
                self.producer.produce(self.topic, key=key, value=value)
                return
            except BufferError as exc:
                HEALTH.degraded(_COMPONENT, "kafka", exc)
                if self.stop.is_set():
                    msg = "scorer stopped while the Kafka producer queue was full"
                    raise PredictionsNotAcknowledged(msg) from exc
                self.producer.poll(0.5)

    def _flush(self) -> None:
        remaining = self.producer.flush(self.flush_timeout_s)
        if remaining:
            msg = (
                f"{remaining} predictions not acknowledged by Kafka in {self.flush_timeout_s:g}s "
                f"(topic {self.topic})"
            )
            raise PredictionsNotAcknowledged(msg)


def _redis_fields(prediction: Prediction, served_from: str) -> dict[Any, Any]:
    return {
        "score": repr(prediction.score),
        "model_version": prediction.model_version,
        "served_from": served_from,
        "created_at": prediction.created_at.isoformat(),
        "predicted_at": prediction.predicted_at.isoformat(),
        "features": orjson.dumps(dict(prediction.features)),
    }


def get_prediction(client: redis.Redis, ns: str, payment_id: int) -> Prediction | None:
    """The prediction recorded for a payment, or None (never scored, or past horizon + grace)."""
    raw = client.hgetall(prediction_key(ns, payment_id))
    if not raw:
        return None
    fields = {_s(k): v for k, v in raw.items()}
    return Prediction(
        payment_id=payment_id,
        score=float(fields["score"]),
        features=orjson.loads(fields["features"]),
        model_version=_s(fields["model_version"]),
        created_at=datetime.fromisoformat(_s(fields["created_at"])),
        predicted_at=datetime.fromisoformat(_s(fields["predicted_at"])),
    )


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
