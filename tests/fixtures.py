"""Shared helpers for integration tests: isolated connectors and reading change topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors import ConnectClient, apply_connector
from feature_pipelines.definitions import tables_to_capture
from freshloop.core.settings import Settings


@pytest.fixture(scope="session")
def pipeline(stack_settings: Settings) -> Settings:
    """The stack with the default connector applied and running."""
    apply_connector(stack_settings, tables=tables_to_capture(stack_settings))
    return stack_settings


@pytest.fixture
def pg(stack_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack_settings.postgres_conninfo(), autocommit=True) as conn:
        yield conn


class TopicReader:
    """Reads change events of some topics from a point in time, in a group of its own."""

    def __init__(self, settings: Settings, topics: list[str], since_ms: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"test-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        admin_meta = self.consumer.list_topics(timeout=10).topics
        parts = [TopicPartition(t, p, since_ms) for t in topics for p in admin_meta[t].partitions]
        self.consumer.assign(self.consumer.offsets_for_times(parts, timeout=10))

    def read_until(
        self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 90.0
    ) -> list[dict[str, Any]]:
        """Collect records (key, value decoded; value None for tombstones) until ``done``."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(records):
            for msg in self.consumer.consume(1000, timeout=0.2):
                if msg.error() is not None:
                    continue
                value = msg.value()
                records.append(
                    {
                        "topic": msg.topic(),
                        "key": orjson.loads(msg.key()) if msg.key() else None,
                        "value": orjson.loads(value) if value is not None else None,
                    }
                )
        return records

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def topic_reader(stack_settings: Settings) -> Iterator[Callable[..., TopicReader]]:
    readers: list[TopicReader] = []

    def make(topics: list[str], since_ms: int | None = None) -> TopicReader:
        reader = TopicReader(stack_settings, topics, since_ms or int(time.time() * 1000) - 1000)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()


@pytest.fixture
def isolated_connector(stack_settings: Settings, pg: psycopg.Connection) -> Iterator[Settings]:
    """Settings for a connector of its own (own name, topic prefix, slot), removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(
        update={"topic_prefix": f"t{tag}", "connector_name": f"test-{tag}"}
    )
    yield settings
    with ConnectClient(settings.connect_url) as client:
        client.delete(settings.connector_name)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    mine = [
        t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{settings.topic_prefix}.")
    ]
    if mine:
        for future in admin.delete_topics(mine).values():
            future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = pg.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (settings.slot_name,)
        ).fetchone()
        if row is None:
            break
        if not row[0]:
            pg.execute("SELECT pg_drop_replication_slot(%s)", (settings.slot_name,))
            break
        time.sleep(0.2)


LEARNING_TABLES = (
    "retrains",
    "drift_reports",
    "training_examples",
    "learner_checkpoints",
    "model_registry",
    "freshloop_epochs",
)


def drop_namespace(settings: Settings, tag: str) -> None:
    """Remove what a test namespace left: its Redis keys, its predictions topic, its rows in every
    learning table and its scheduler's job table."""
    from drift.scheduler import job_table
    from tests.redis_layout import client_for, drop_keys

    client = client_for(settings)
    try:
        drop_keys(client, f"{tag}:*")  # one Redis, or every primary of a cluster
    finally:
        client.close()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topic = f"{tag}.predictions"
    if topic in admin.list_topics(timeout=10).topics:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for table in LEARNING_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (tag,))  # noqa: S608
        conn.execute(f"DROP TABLE IF EXISTS {job_table(tag)}")
