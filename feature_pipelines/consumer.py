"""The Kafka loop of the feature pipeline: consume a batch, decode, plan, write, repeat.

A thin shell: decoding, planning and the window arithmetic are pure (``envelope``, ``planner``);
the atomic Redis write is ``store.RedisFeatureStore.apply``. Positions are owned by Redis: each
batch's next offsets are written in the same transaction as the features they produced, and on
every assignment the consumer seeks to what Redis says. Kafka's own committed offsets are kept
as well, for lag monitoring only.

Scale-out: run several processes with the same group id. The range assignor gives one consumer
the same partition number of every change topic, and payments and their outcomes share the key
``payment_id`` (and equal partition counts), so both sides of the outcome -> merchant join land in
one process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from feature_pipelines.dead_letter import DeadLetters
from feature_pipelines.metrics import APPLY_LAG, BATCH_SECONDS, EVENTS, LAST_APPLIED_COMMIT
from freshloop.settings import Settings

__all__ = ["PipelineStats", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass
class PipelineStats:
    """Counters of one pipeline process (also exported as Prometheus metrics)."""

    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    tombstones: int = 0
    lags_ms: list[float] = field(default_factory=list)


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": 5,
        "fetch.min.bytes": 1,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 60_000,
        "queued.min.messages": 20_000,
    }
