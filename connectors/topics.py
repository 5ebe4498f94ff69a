"""Create the change topics up front, all with the same partition count.

Debezium would let Connect create each topic on its first event, but then consumers that
subscribe before that event do not see it until their next metadata refresh, and a topic made by
hand elsewhere could get another partition count. Payments and their outcomes share the key
``payment_id``: with equal partition counts the same id lands in the same partition number of
both topics, so one consumer owns both sides of their join (co-partitioning).
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.exceptions import ConnectError

__all__ = ["ensure_topics"]


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
        raise ConnectError(msg) from exc
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
        raise ConnectError(msg)
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
                raise ConnectError(msg) from exc
    return created
