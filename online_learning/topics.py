"""The learning stage's own topic: logged predictions, with the change topics' partition count."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from freshloop.settings import Settings

__all__ = ["ensure_topic"]

log = logging.getLogger(__name__)


def ensure_topic(settings: Settings, topic: str) -> None:
    """Create ``topic`` if it does not exist (several processes may race: that is fine)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    if topic in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=settings.topic_partitions, replication_factor=1)]
    )
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    log.info("topic created topic=%s partitions=%d", topic, settings.topic_partitions)
