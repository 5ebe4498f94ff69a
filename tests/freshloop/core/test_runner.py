"""The shared Kafka loop (``freshloop.core.runner``) driving a logic object of the test's own,
through the real broker on a topic and a group of the test's own: an assignment starts where
the logic's state says, a seek asked by the logic's recovery moves the consumer, the positions
the logic reports durable become the group's committed offsets, and a stop lets the logic
write what it holds before the consumer closes."""

from __future__ import annotations

import doctest
import threading
import time
import uuid
from collections.abc import Iterator, Mapping

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from freshloop.core import runner as runner_module
from freshloop.core.runner import Partition, Runner, partition_name
from freshloop.core.settings import Settings


def test_the_doctests_hold() -> None:
    assert doctest.testmod(runner_module).failed == 0


@pytest.fixture
def topic(stack_settings: Settings) -> Iterator[str]:
    name = f"runner-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": stack_settings.kafka_bootstrap})
    for n in range(20):
        producer.produce(name, key=str(n).encode(), value=str(n).encode())
    assert producer.flush(10) == 0
    yield name
    for future in admin.delete_topics([name]).values():
        future.result(timeout=30)


class _Logic:
    """Counts what it is given; its "state" is the offsets it saw, durable at once."""

    def __init__(self, start: int, seek_to: int) -> None:
        self.start = start
        self.seek_to = seek_to  # asked once, after the first batch (a recovery re-reading)
        self.runner: Runner | None = None
        self.offsets: list[int] = []
        self.restored: list[Partition] = []
        self.durable: dict[str, int] = {}
        self.stopped: bool | None = None
        self.sought = False

    def restore(self, partitions: list[Partition]) -> Mapping[str, int]:
        self.restored += partitions
        return {partition_name(t, p): self.start for t, p in partitions}

    def on_batch(self, messages: list[Message]) -> None:
        for msg in messages:
            if msg.error() is None:
                self.offsets.append(msg.offset() or 0)
                self.durable[partition_name(msg.topic() or "", msg.partition() or 0)] = (
                    msg.offset() or 0
                ) + 1
        if not self.sought and self.runner is not None:
            self.sought = self.runner.seek(
                {partition_name(t, p): self.seek_to for t, p in self.restored}
            )

    def on_idle(self) -> bool:
        return False

    def on_tick(self) -> None:
        pass

    def snapshot(self) -> Mapping[str, int]:
        durable, self.durable = self.durable, {}
        return durable

    def on_revoke(self, partitions: list[Partition]) -> None:
        pass

    def on_stop(self, clean: bool) -> None:
        self.stopped = clean


@pytest.mark.integration
def test_the_runner_starts_seeks_commits_and_stops_as_the_logic_says(
    stack_settings: Settings, topic: str
) -> None:
    group = f"runner-{uuid.uuid4().hex[:10]}"
    consumer = Consumer(
        {
            "bootstrap.servers": stack_settings.kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    logic = _Logic(start=5, seek_to=15)
    stop = threading.Event()
    runner = Runner(consumer, logic, stop=stop, max_batch=3)
    logic.runner = runner
    runner.subscribe([topic])
    worker = threading.Thread(target=runner.run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not logic.offsets or logic.offsets[-1] < 19):
        time.sleep(0.05)
    stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive()

    assert logic.restored == [(topic, 0)]
    assert logic.offsets[0] == 5  # where the logic's state said, not the group's (none) offset
    assert logic.sought
    assert logic.offsets[-5:] == [15, 16, 17, 18, 19]  # moved by the seek...
    assert not set(range(8, 15)) & set(logic.offsets)  # ...after the first batch (at most 3)
    assert logic.stopped is True  # asked to stop, not by an error
    checker = Consumer({"bootstrap.servers": stack_settings.kafka_bootstrap, "group.id": group})
    try:
        [committed] = checker.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        checker.close()
    assert committed.offset == 20  # the positions the logic reported durable
