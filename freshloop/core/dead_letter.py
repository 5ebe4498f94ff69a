"""Dead-lettering: an event that cannot be decoded is data, not a crash (every stage's).

The original key and value bytes go to ``<prefix>.dead-letter`` unchanged, with headers saying
why and where they came from, so nothing is lost and the event can be replayed once fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Producer

from freshloop.core.exceptions import DeadLetterError

__all__ = ["DeadLetters"]

log = logging.getLogger(__name__)


class DeadLetters:
    """Produces bad events to the dead-letter topic and counts them (``count``, and
    ``on_sent``: the stage's own metric)."""

    def __init__(
        self, producer: Producer, topic: str, on_sent: Callable[[], None] | None = None
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.on_sent = on_sent
        self.count = 0

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        source_topic: str,
        partition: int,
        offset: int,
    ) -> None:
        headers: list[tuple[str, str | bytes | None]] = [
            ("freshloop.reason", reason.encode()[:4096]),
            ("freshloop.source.topic", source_topic.encode()),
            ("freshloop.source.partition", str(partition).encode()),
            ("freshloop.source.offset", str(offset).encode()),
        ]
        self.producer.produce(self.topic, key=key, value=value, headers=headers)
        self.count += 1
        if self.on_sent is not None:
            self.on_sent()
        log.warning(
            "dead-lettered topic=%s partition=%d offset=%d reason=%s",
            source_topic,
            partition,
            offset,
            reason,
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every dead letter is acknowledged (before committing past them)."""
        remaining = self.producer.flush(timeout)
        if remaining:
            msg = f"{remaining} dead letters not acknowledged by Kafka in {timeout:.0f}s"
            raise DeadLetterError(msg)
