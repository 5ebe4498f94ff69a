"""One shell for the stateful Kafka consumers: consume, assign, seek, commit, stop.

The feature pipeline (features and positions in Redis) and the learner (model and positions in
one Postgres checkpoint) keep their positions *with their state*: the logic writes a state and
the offsets it consumed in one atomic step, and every assignment starts from the positions that
state holds, so a crash redoes work on the same state and nothing is applied twice. Kafka's
committed offsets are for lag monitoring (and a rebuild's restart point) only. The rest is the
same for both and lives here: take what is fetched at once (or wait briefly for the first
message), hand it to the logic, let it write what it holds back when nothing waits, run its
timers, tell Kafka the positions it reports durable once a second, seek when its recovery
re-reads positions, and stop in order.

The logic objects are pure of the consumer, in the shape of Bytewax's ``StatefulLogic``
(``StatefulLogic`` below): ``restore`` on assignment returns positions, ``on_batch`` /
``on_idle`` / ``on_tick`` change the state, ``snapshot`` reports the positions whose state is
durable, ``on_revoke`` and ``on_stop`` let it write what it holds. Recovery stays with the
logic (Redis losses for the features, Postgres outages and fencing for the learner); it asks
the runner to ``seek`` back to the positions its state holds.

This module is in the core so that both stages use it without importing each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

__all__ = ["Partition", "Runner", "StatefulLogic", "partition_name"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)


def partition_name(topic: str, partition: int) -> str:
    """How positions name a partition.

    >>> partition_name("t", 3)
    't:3'
    """
    return f"{topic}:{partition}"


class StatefulLogic(Protocol):
    """What the runner drives. Positions map ``"topic:partition"`` to the next offset."""

    def restore(self, partitions: list[Partition]) -> Mapping[str, int]:
        """``partitions`` are now this consumer's: load their state and return their positions
        (a partition not named starts at its beginning)."""
        ...

    def on_batch(self, messages: list[Message]) -> None:
        """Apply one batch (errors and partition-end events included, in order)."""
        ...

    def on_idle(self) -> bool:
        """Nothing is waiting: write what is held back; True if something was (the runner looks
        for messages again before it waits)."""
        ...

    def on_tick(self) -> None:
        """After every batch or wait: the logic's own timers (checks, checkpoints, stats)."""
        ...

    def snapshot(self) -> Mapping[str, int]:
        """Positions whose state became durable since the last call (told to Kafka)."""
        ...

    def on_revoke(self, partitions: list[Partition]) -> None:
        """``partitions`` go to another consumer: write what is held for them."""
        ...

    def on_stop(self, clean: bool) -> None:
        """The loop ended (``clean``: asked to stop, not by an error): write what is held."""
        ...


class Runner:
    """Drives one ``StatefulLogic`` with one consumer until ``stop`` is set."""

    def __init__(
        self,
        consumer: Consumer,
        logic: StatefulLogic,
        *,
        stop: threading.Event,
        max_batch: int,
        wait_s: float = 0.1,
        commit_every_s: float = 1.0,
    ) -> None:
        self.consumer = consumer
        self.logic = logic
        self.stop = stop
        self.max_batch = max_batch
        self.wait_s = wait_s  # how long an idle consumer waits for the first message
        self.commit_every_s = commit_every_s  # Kafka's (monitoring) offsets: one commit per
        self._uncommitted: dict[str, int] = {}  # durable positions not yet told to Kafka
        self._next_commit = 0.0
        self._closed = False

    # ---- assignment ---------------------------------------------------------------------------
    def subscribe(self, topics: list[str]) -> None:
        """Partitions come from the consumer group; each assignment starts where the logic's
        state says (``restore``)."""
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def assign(self, partitions: list[Partition]) -> None:
        """These partitions, explicitly (no group rebalance), from the logic's positions."""
        positions = self.logic.restore(partitions)
        self.consumer.assign(_at(partitions, positions))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        named = [(tp.topic, tp.partition) for tp in partitions]
        positions = self.logic.restore(named)
        for tp in partitions:
            tp.offset = positions.get(partition_name(tp.topic, tp.partition), OFFSET_BEGINNING)
        log.info(
            "assigned partitions=%s", [(tp.topic, tp.partition, tp.offset) for tp in partitions]
        )
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked partitions=%s", [(tp.topic, tp.partition) for tp in partitions])
        self.logic.on_revoke([(tp.topic, tp.partition) for tp in partitions])
        self.commit()

    def seek(self, positions: Mapping[str, int]) -> bool:
        """Move every assigned partition to ``positions`` (the beginning when not named): the
        logic's recovery re-read them from its state. False when nothing is assigned."""
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        targets = [
            TopicPartition(
                tp.topic,
                tp.partition,
                positions.get(partition_name(tp.topic, tp.partition), OFFSET_BEGINNING),
            )
            for tp in assigned
        ]
        try:
            for tp in targets:
                self.consumer.seek(tp)
        except KafkaException:
            self.consumer.assign(targets)  # a partition not yet fetching cannot seek: reassign
        log.info("reseeked partitions=%s", [(t.topic, t.partition, t.offset) for t in targets])
        return True

    # ---- Kafka's offsets (monitoring) ---------------------------------------------------------
    def commit(self) -> None:
        """Tell Kafka the positions the logic reports durable (asynchronously; best effort: a
        failed commit is tried again next time)."""
        self._next_commit = time.monotonic() + self.commit_every_s
        self._uncommitted.update(self.logic.snapshot())
        if not self._uncommitted:
            return
        offsets, self._uncommitted = self._uncommitted, {}
        try:
            self.consumer.commit(
                offsets=[TopicPartition(*_split(name), at) for name, at in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:
            log.warning("kafka offset commit failed error=%s: tried again next time", exc)
            self._uncommitted = {**offsets, **self._uncommitted}

    def forget(self) -> None:
        """Drop positions not yet told to Kafka: the state they were durable in is gone (a lost
        Redis must not have that progress recorded in Kafka after it)."""
        self._uncommitted = {}

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until ``stop``; then let the logic write what it holds, commit, close."""
        clean = False
        try:
            while not self.stop.is_set():
                messages = self._next_batch()
                if messages:
                    self.logic.on_batch(messages)
                self.logic.on_tick()
                if time.monotonic() >= self._next_commit:
                    self.commit()  # after a batch, or idle: the last batches' too
            clean = True
        finally:
            try:
                self.logic.on_stop(clean)
                self.commit()
            finally:
                self.close()

    def _next_batch(self) -> list[Message]:
        """Whatever is already fetched, at once; else wait briefly for the first message.

        ``consume(n, timeout)`` would wait for n messages or the timeout, adding up to the whole
        timeout to every event's latency at low rates.
        """
        messages = self.consumer.consume(self.max_batch, timeout=0)
        if messages:
            return messages
        if self.logic.on_idle():  # wrote what it held: more may have come meanwhile
            messages = self.consumer.consume(self.max_batch, timeout=0)
            if messages:
                return messages
        first = self.consumer.poll(self.wait_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.max_batch - 1, timeout=0)]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()


def _at(partitions: list[Partition], positions: Mapping[str, int]) -> list[TopicPartition]:
    return [
        TopicPartition(t, p, positions.get(partition_name(t, p), OFFSET_BEGINNING))
        for t, p in partitions
    ]


def _split(name: str) -> Partition:
    topic, partition = name.rsplit(":", 1)
    return topic, int(partition)
