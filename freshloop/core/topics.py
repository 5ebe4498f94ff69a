"""Kafka topics: created up front, all with the same partition count; metadata asked again
while a broker is electing leaders or restarting. Every stage creates its topics here.

Debezium would let Connect create each topic on its first event, but then consumers that
subscribe before that event do not see it until their next metadata refresh, and a topic made by
hand elsewhere could get another partition count. Payments and their outcomes share the key
``payment_id``: with equal partition counts the same id lands in the same partition number of
both topics, so one consumer owns both sides of their join (co-partitioning).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from freshloop.core.exceptions import TopicError
from freshloop.core.settings import Settings

__all__ = ["asking_again", "ensure_topic", "ensure_topics"]

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str, topics: Iterable[str], partitions: int, replication: int = 1
) -> list[str]:
    """Create missing topics; returns those created. A topic with another count is an error."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wanted = list(topics)
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        msg = f"Kafka is unreachable at {bootstrap}: {exc}"
        raise TopicError(msg) from exc
    mismatched = [
        f"{t} has {len(existing[t].partitions)}"
        for t in wanted
        if t in existing and len(existing[t].partitions) != partitions
    ]
    if mismatched:
        msg = (
            f"change topics must all have {partitions} partitions: {', '.join(mismatched)}; "
            "recreate them or set the partition count to match"
        )
        raise TopicError(msg)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in missing]
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                msg = f"could not create topic {topic}: {exc}"
                raise TopicError(msg) from exc
    return created


def ensure_topic(settings: Settings, topic: str) -> None:
    """A stage's own topic (logged predictions, say), with the change topics' partition count;
    several processes may race to create it: that is fine."""
    if ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions):
        log.info("topic created topic=%s partitions=%d", topic, settings.topic_partitions)


_T = TypeVar("_T")
# Errors a broker gives while a new topic's partition leaders are being elected, or while a
# broker restarts: worth asking again.
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def asking_again(ask: Callable[[], _T], what: str, timeout_s: float = 30.0) -> _T:
    """``ask()``, asked again for up to ``timeout_s`` while Kafka answers with a transient
    error; any other error, or one still there at the end, is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ask()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (
                error.code() in _TRANSIENT or error.retriable()
            )
            if not transient or time.monotonic() >= deadline:
                raise
            log.info("kafka_transient_error what=%s error=%s: asking again", what, error)
            time.sleep(0.5)
