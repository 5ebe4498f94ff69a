"""The feature pipeline's consumer: decode a batch, plan it, write it, repeat.

The Kafka loop itself is the shared ``freshloop.core.runner.Runner``; ``FeaturePipeline`` is
the logic it drives (``restore``, ``on_batch``, ``on_idle``, ``on_tick``, ``snapshot``,
``on_revoke``, ``on_stop``). Decoding, planning and the window arithmetic are pure
(``envelope``, ``planner``); the atomic Redis write is ``store_write.RedisBatchWriter.apply``.
Positions are owned by Redis: each batch's next offsets are written in the same transaction as
the features they produced, and on every assignment the consumer seeks to what Redis says.
Kafka's own committed offsets are kept as well, for lag monitoring only.

Scale-out: run several processes with the same group id. The range assignor gives one consumer
the same partition number of every change topic, and payments and their outcomes share the key
``payment_id`` (and equal partition counts), so both sides of the outcome -> merchant join land in
one process.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from feature_pipelines.catalog import SAMPLE_FEATURES, FeatureSet
from feature_pipelines.cluster_pipeline import (
    ClusterPipelineWriter,
    batch_writer,
    redis_client,
    split_by_partition,
)
from feature_pipelines.decode import ChangeEvent, decode
from feature_pipelines.exceptions import (
    BatchRejectedError,
    DecodeError,
    FeaturePipelineError,
    SourceTruncatedError,
)
from feature_pipelines.live_stats import StatsPublisher
from feature_pipelines.metrics import APPLY_LAG, BATCH_SECONDS, EVENTS, LAST_APPLIED_COMMIT
from feature_pipelines.planner import Planner, Watermarks, WritePlan, row_after
from feature_pipelines.recovery import RedisLossGuard
from feature_pipelines.registry import DefinitionWatch, Hidden
from feature_pipelines.rejects import Rejection, Trace, culprits, oversized
from feature_pipelines.row_cache import RowCache
from feature_pipelines.source import SourceGuard
from feature_pipelines.store_write import PendingApply
from freshloop.core.dead_letter import DeadLetters
from freshloop.core.runner import Partition, Runner
from freshloop.core.settings import Settings

__all__ = ["FeaturePipeline", "PipelineStats", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    """A decoded and planned batch, before or while it is written."""

    events: list[ChangeEvent]
    offsets: dict[str, int]
    states: Mapping[str, Mapping[str, str]]  # row states the plan was made from
    plan: WritePlan
    started: float  # perf_counter when its messages were taken
    messages: list[Message]  # what it was decoded from (dead letters carry the original bytes)
    marks: Watermarks  # the planner's watermarks before it was planned (re-planned from there)


@dataclass
class PipelineStats:
    """Counters of one pipeline process (also exported as Prometheus metrics)."""

    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    tombstones: int = 0
    skipped: int = 0  # events of tables no feature reads
    overlapped: int = 0  # batches written while the next one was planned (``process``)
    refused: int = 0  # writes refused (a row state was not as planned) and planned again
    # row states a batch needed: remembered from this process's own writes, inserts taken as
    # new rows, and read from Redis (``row_cache``)
    rows_remembered: int = 0
    rows_taken_as_new: int = 0
    rows_read: int = 0
    # commit -> visible lags of changes committed after this process started (a replay of
    # older history is catch-up, not freshness); the Prometheus histogram keeps them all
    lags_ms: list[float] = field(default_factory=list)
    started_ms: float = field(default_factory=lambda: time.time() * 1000)

    def percentile(self, q: float) -> float | None:
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "skipped": self.skipped,
            "overlapped": self.overlapped,
            "refused": self.refused,
            "rows": {
                "remembered": self.rows_remembered,
                "taken_as_new": self.rows_taken_as_new,
                "read": self.rows_read,
            },
            "live_events": len(self.lags_ms),
            "lag_ms": {f"p{int(q * 100)}": self.percentile(q) for q in (0.5, 0.95, 0.99)},
        }


def consumer_config(settings: Settings, group_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        # The broker answers a fetch as soon as one byte is there (fetch.min.bytes=1), so the
        # wait only bounds how often an idle consumer asks again: a short one adds no freshness
        # and costs the broker (at 5 ms an idle pipeline kept ~17 % of a core busy; at 100, 3 %)
        "fetch.wait.max.ms": 100,
        "fetch.min.bytes": 1,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "max.poll.interval.ms": 60_000,
        # throughput: keep up to 100k messages (or 64 MB) prefetched per partition queue, so
        # a batch is always there to take at once
        "queued.min.messages": 100_000,
        "queued.max.messages.kbytes": 65_536,
    }


class FeaturePipeline:
    """One consumer process of the feature pipeline."""

    HOLD_MIN_BATCH = 500  # batches this large are held back to overlap with the next (process)
    # Kafka's committed offsets (lag monitoring, and where a rebuild after a Redis loss starts)
    # trail Redis's positions by at most this long: one commit per interval, not per batch
    KAFKA_COMMIT_EVERY_S = 1.0
    BUSY_TICK_S = 0.5  # ``on_tick``'s Redis calls with a batch write in flight, at most

    def __init__(
        self,
        settings: Settings,
        features: FeatureSet = SAMPLE_FEATURES,
        *,
        namespace: str | None = None,
        group_id: str | None = None,
        max_batch: int = 5000,
        stop: threading.Event | None = None,
        on_applied: Callable[[list[ChangeEvent]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.features = features
        self.ns = namespace or settings.namespace
        self.group_id = group_id or f"{self.ns}-features"
        self.topics = [settings.topic(t) for t in sorted(features.tables())]
        self.max_batch = max_batch
        self.stop = stop or threading.Event()
        # Called after each successful batch write with the events it applied (duplicates
        # excluded), e.g. to score new payments on the features that now include them.
        self.on_applied = on_applied
        self.stats = PipelineStats()
        self.planner = Planner(
            features,
            self.ns,
            row_grace_us=int(settings.row_state_grace.total_seconds() * 1_000_000),
            max_ahead_us=int(settings.event_time_max_ahead.total_seconds() * 1_000_000),
        )
        # redis_layout=cluster: batches are planned and written per partition (cluster_pipeline)
        self.writer = batch_writer(
            settings, redis_client(settings, self.stop), features, self.ns, self.group_id
        )
        self.consumer = Consumer(consumer_config(settings, self.group_id))
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
        self.dead_letters = DeadLetters(
            producer,
            f"{settings.topic_prefix}.dead-letter",
            on_sent=EVENTS.labels("dead_lettered").inc,
        )
        self._next_tick = time.monotonic() + 5  # the rebuild's progress lines
        self._busy_tick = 0.0  # ``on_tick``, with a write in flight: when to look again
        # live stats for dashboards and freshness checks: <ns>:stats:pipeline:<consumer id>
        self.assigned: set[tuple[str, int]] = set()
        self.live = StatsPublisher(
            self.writer.client,
            self.ns,
            interval_s=settings.stats_interval_s,
            ttl_s=settings.stats_ttl_s,
        )
        # Redis restarts and wipes: detected, positions re-read, features rebuilt (recovery.py)
        self.recovery = RedisLossGuard(self)
        # the source's identity and current WAL position: a rewound or other source stops the
        # pipeline, an implausible position or a TRUNCATE is refused (source.py)
        self.source = SourceGuard(
            settings, self.writer.client, self.ns, self.group_id, stop=self.stop
        )
        self._held: _Held | None = None  # a planned batch waiting to be written (``process``)
        # a batch whose write is sent and whose answer is not read yet (``process``)
        self._flying: tuple[_Held, PendingApply] | None = None
        self._uncommitted: dict[str, int] = {}  # next offsets written to Redis, not yet to Kafka
        self.rows = RowCache(settings.row_cache_rows)  # row states this process wrote last
        self._on_batch: Callable[[PipelineStats], None] | None = None  # ``run``'s callback
        # the shared Kafka loop (consume, assign, seek, commit) that drives this logic
        self.runner = Runner(
            self.consumer,
            self,
            stop=self.stop,
            max_batch=max_batch,
            commit_every_s=self.KAFKA_COMMIT_EVERY_S,
        )
        # the definitions ``freshloop features apply`` recorded, followed between batches
        self.definitions = DefinitionWatch(self)

    # ---- the logic the runner drives: positions come from Redis ---------------------------
    def restore(self, partitions: list[Partition]) -> dict[str, int]:
        """Assigned: the positions Redis holds (a position outside the topic's offsets now
        starts the loss path's rebuild, ``RedisLossGuard.offsets_reset``)."""
        stored = self.writer.offsets()
        tps = [TopicPartition(t, p) for t, p in partitions]
        lost = self.source.offsets_out_of_range(self.consumer, tps, stored)
        if lost:  # a recreated topic or retention: changes never applied, state not repairable
            log.error(
                "kafka_offsets_out_of_range ns=%s partitions=%s (stored, low, high): the topic "
                "was recreated or retention deleted changes never applied; dropping the "
                "group's features and rebuilding them (incremental snapshot) after the quiet "
                "period of a detected loss",
                self.ns,
                lost,
            )
            self.recovery.offsets_reset(lost)  # before the next batch is written
        self.assigned = set(partitions)
        self.rows.clear()  # rows of these partitions may have been written by another consumer
        if isinstance(self.writer, ClusterPipelineWriter):  # journals a crash left: first
            self.writer.replay(sorted({p for _t, p in partitions}))
        self.load_watermarks()
        return stored

    def on_revoke(self, partitions: list[Partition]) -> None:
        try:
            self.flush_held()  # while the partitions are still ours
        except redis.RedisError as exc:
            # not written: its messages come again to whoever owns them next (Redis positions)
            log.warning("held batch dropped at revoke error=%s", exc)
            self.drop_held()
        if not self._uncommitted:  # else with them (``snapshot``), when the runner commits
            self.source.flush()  # the highest WAL position seen
        self.rows.clear()
        self.assigned -= set(partitions)

    def on_batch(self, messages: list[Message]) -> None:
        with _collection_paused():
            self.recovery.process(messages)  # follows the definitions first (``registry.py``)
        if self._on_batch is not None:
            self._on_batch(self.stats)

    def on_idle(self) -> bool:
        if self._held is None and self._flying is None:
            return False
        self.recovery.flush()  # nothing else waiting: write the held batch now
        return True

    def on_tick(self) -> None:
        # A Redis call here waits for the batch write in flight, if any (a pipeline catching
        # up holds one, ``process``), and that wait would undo the overlap of the write with
        # the next batch: with a write in flight, the definitions and live stats are looked at
        # once every ``BUSY_TICK_S`` only.
        now = time.monotonic()
        if self._flying is not None and now < self._busy_tick:
            return
        self._busy_tick = now + self.BUSY_TICK_S
        # the definitions ``apply`` recorded; Redis down or restarted there: recovery handles it
        self.recovery.guarded(self.definitions.check)
        if time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + 5
            self.recovery.tick()
            self.source.tick()  # a source replaced under the running pipeline stops it
        if self.live.due():
            self.publish_stats()

    def snapshot(self) -> dict[str, int]:
        """The offsets already written to Redis, for Kafka's (monitoring) offsets; with them,
        the highest WAL position seen is recorded (``source.py``)."""
        if not self._uncommitted:
            return {}
        self.source.flush()
        offsets, self._uncommitted = self._uncommitted, {}
        return offsets

    def on_stop(self, clean: bool) -> None:
        try:
            self.flush_held()
        except redis.RedisError as exc:
            log.warning("held batch not written at stop error=%s: it is read again", exc)
        if not self._uncommitted:  # else with them (``snapshot``), when the runner commits
            self.source.flush()  # the highest WAL position seen

    # ---- the loop --------------------------------------------------------------------------
    def run(self, on_batch: Callable[[PipelineStats], None] | None = None) -> PipelineStats:
        """Consume until ``stop`` (the shared runner's loop); ``on_batch`` after each batch."""
        if self.settings.redis_layout == "cluster":
            self.source.check_joins(self.features)  # lookups need co-partitioned tables there
        self.recovery.start()
        self.source.check("start")
        self.definitions.start()
        self._on_batch = on_batch
        self.runner.subscribe(self.topics)
        try:
            self.runner.run()  # closes the consumer
        finally:
            self.live.remove()
            self.dead_letters.flush()
            self.source.close()
        return self.stats

    def process(self, messages: list[Message], *, hold: bool = False) -> None:
        """Decode, plan and write one batch; dead-letter what cannot be decoded.

        ``hold=True`` keeps the planned batch back instead of writing it at once: the next call
        sends it in the same round trip as the read of its own batch's row states, and plans
        while Redis writes; the answer of that write is read only after the call after it has
        decoded its messages. So a write overlaps the planning of one batch and the consuming
        and decoding of the next, and the Python and Redis halves of the work run side by side.
        ``flush_held`` writes a held batch and waits for every write sent. The run loop holds
        only batches of at least ``HOLD_MIN_BATCH`` messages (a consumer catching up, where
        throughput is what shortens the lag) and flushes as soon as no message is waiting; a
        consumer keeping up writes every batch at once, so holding never adds a processing cycle
        to live latency. In the Redis Cluster layout (``cluster_pipeline``) each partition's
        messages are processed on their own, and never held.
        """
        if isinstance(self.writer, ClusterPipelineWriter):  # a partition at a time, not held
            parts = split_by_partition(messages)
            for partition, part in parts:
                self.writer.partition = partition
                if len(parts) == 1:
                    break
                self.process(part)
            else:
                return
            hold = False
        started = time.perf_counter()
        events, offsets = self._decode(messages)  # overlaps the write in flight, if any
        events = self._screen(events, messages)
        self._land()
        keys, inserted = self.planner.rows_needed(events)
        held, self._held = self._held, None
        if held is None:
            states, unknown = self.rows.split(keys, inserted, self.planner.marks)
            if unknown:
                states.update(self.writer.read_rows(unknown))
        else:
            # rows the held batch writes come from its plan, the rest are remembered or read
            # before it runs (the cache holds only rows of batches already written)
            written = held.plan.rows
            others, overlaid = [], {}
            for key in keys:
                if key in written:
                    overlaid[key] = row_after(held.states.get(key), written[key])
                else:
                    others.append(key)
            states, unknown = self.rows.split(others, inserted, self.planner.marks)
            read, pending = self.writer.read_then_apply(unknown, held.plan, held.offsets)
            states.update(read)
            states.update(overlaid)
            self._flying = (held, pending)
        marks = self.planner.marks.copy()
        plan = self.planner.plan(events, states)  # overlaps the held batch's write
        self._held = _Held(events, offsets, states, plan, started, messages, marks)
        if not hold:
            self.flush_held()  # re-planned first if the write in flight is refused

    def _land(self) -> None:
        """Read the answer of the write in flight, if any, and finish its batch.

        A refused write (a row state changed under it, or the scripts were gone) is written
        again from fresh state, a rejected one without the events behind what the script could
        not apply (``_reject``); the held batch, planned over it, is then planned again from
        what Redis holds.
        """
        flying, self._flying = self._flying, None
        if flying is None:
            return
        batch, pending = flying
        try:
            written = pending.wait()
        except BatchRejectedError as exc:
            self._reject(batch, exc)
        else:
            if not written:
                self._write_again(
                    batch,
                    "write script reloaded"
                    if pending.unloaded
                    else "row state changed under the batch",
                )
        if pending.failed:  # written again: what the held batch was planned over changed
            held = self._held
            if held is not None:
                held.marks = self.planner.marks.copy()
                held.states = self.writer.read_rows(self.planner.keys_needed(held.events))
                held.plan = self.planner.plan(held.events, held.states)
        self.stats.overlapped += 1
        self._finish(batch)

    def flush_held(self) -> None:
        """Wait for the write in flight, then write the batch ``process(hold=True)`` kept back."""
        self._land()
        held, self._held = self._held, None
        if held is not None:
            self._flush(held)

    def drop_held(self) -> None:
        """Forget the held batch and the write in flight (their messages come again after a seek
        to Redis's positions, whether that write was applied or not)."""
        self._held = None
        flying, self._flying = self._flying, None
        if flying is not None:
            flying[1].abandon()

    def forget_written(self) -> None:
        """Positions are re-read from Redis: forget what this process knows of Redis's state
        (remembered rows), and do not claim in Kafka progress not committed there yet (a Redis
        that lost its state must not have that progress recorded in Kafka after it)."""
        self._uncommitted = {}
        self.runner.forget()
        self.rows.clear()
        if isinstance(self.writer, ClusterPipelineWriter):
            self.writer.forget()
        self.load_watermarks()

    def switch_features(self, features: FeatureSet, hidden: Hidden) -> None:
        """Run ``features`` from the next batch on (``registry.DefinitionWatch``), skipping
        ``hidden`` ones for the changes their backfill counted. Only at a batch boundary: the
        held batch is written first; the watermarks and remembered rows stay (row states do
        not depend on the definitions ``apply`` may change)."""
        self.flush_held()
        marks = self.planner.marks
        self.features = features
        self.planner = Planner(
            features,
            self.ns,
            row_grace_us=self.planner.row_grace_us,
            max_ahead_us=self.planner.max_ahead_us,
        )
        self.planner.marks = marks
        self.planner.hidden = hidden
        self.writer = batch_writer(
            self.settings, self.writer.client, features, self.ns, self.group_id
        )

    def load_watermarks(self) -> None:
        """The partitions' event-time watermarks as Redis holds them (with the positions)."""
        self.planner.marks = Watermarks(self.writer.watermarks())

    def _flush(self, batch: _Held) -> None:
        try:
            written = self.writer.apply(batch.plan, batch.offsets)
        except BatchRejectedError as exc:
            self._reject(batch, exc)
        else:
            if not written:
                self._write_again(batch, "row state changed under the batch")
        self._finish(batch)

    def _write_again(self, batch: _Held, reason: str) -> None:
        """``batch``'s write was refused: forget the remembered rows, and write it again from
        what Redis holds."""
        log.info("%s, re-planning", reason)
        self.rows.refused()
        self.stats.refused += 1
        self._write(batch)

    def _reject(self, batch: _Held, exc: BatchRejectedError) -> None:
        """The script refused ``batch`` (from the states it was planned on) and wrote nothing:
        dead-letter the events behind it, and write the rest from what Redis holds."""
        self._drop_culprits(batch, batch.states, exc)
        self._write(batch)

    def _drop_culprits(
        self, batch: _Held, states: Mapping[str, Mapping[str, str]], exc: BatchRejectedError
    ) -> None:
        """Plan ``batch`` again on ``states`` (what its refused plan was made from), tracing
        which event wrote what; dead-letter the events behind the refusal (``rejects``) and
        take them out of the batch. Its offsets stay: they move past the dead letters."""
        rejection = exc.rejection
        assert isinstance(rejection, Rejection)  # noqa: S101 - what the store raises with
        trace: Trace = {}
        self.planner.marks = batch.marks.copy()
        self.planner.plan(batch.events, states, trace=trace)
        found = culprits(trace, rejection)
        if not found:  # a key no event of the batch writes (offsets, an index): say so, stop
            raise exc
        log.warning(
            "batch_rejected %s: dead-lettering %d event(s)", rejection.describe(), len(found)
        )
        self._dead_letter(batch.messages, [(batch.events[i], why) for i, why in found.items()])
        batch.events = [ev for i, ev in enumerate(batch.events) if i not in found]

    def _screen(self, events: list[ChangeEvent], messages: list[Message]) -> list[ChangeEvent]:
        """``events`` without those whose own contribution no feature field can hold (past
        int64 units), which are dead-lettered before anything of the batch is written."""
        bad = [(ev, why) for ev in events if (why := oversized(self.features, ev)) is not None]
        if not bad:
            return events
        self._dead_letter(messages, bad)
        refused = {id(ev) for ev, _why in bad}
        return [ev for ev in events if id(ev) not in refused]

    def _dead_letter(self, messages: list[Message], events: list[tuple[ChangeEvent, str]]) -> None:
        """Send each event's original message to the dead-letter topic with its reason, and wait
        for Kafka's acknowledgement (the batch's offsets, written next, move past them). The
        messages are found by decoding the batch again: a rare path, kept off the hot one."""
        left = list(events)
        for msg in messages:
            if not left or msg.error() is not None or msg.value() is None:
                continue
            partition = msg.partition() or 0
            try:
                decoded = decode(msg.value(), msg.key(), self.features, partition)
            except (DecodeError, SourceTruncatedError):
                continue
            for n, (ev, why) in enumerate(left):
                if ev == decoded:
                    self.dead_letters.send(
                        key=msg.key(),
                        value=msg.value(),
                        reason=why,
                        source_topic=msg.topic() or "",
                        partition=partition,
                        offset=msg.offset() or 0,
                    )
                    del left[n]
                    break
        if left:  # not expected: the events come from these messages
            text = f"{len(left)} event(s) to dead-letter not found among the batch's messages"
            raise FeaturePipelineError(text)
        self.dead_letters.flush()
        self.stats.dead_lettered = self.dead_letters.count

    def _decode(self, messages: list[Message]) -> tuple[list[ChangeEvent], dict[str, int]]:
        events: list[ChangeEvent] = []
        offsets: dict[str, int] = {}
        dead_before = self.dead_letters.count
        source = self.source
        source.new_batch()
        known = source.known_lsn
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error=%s", error)
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            offsets[f"{topic}:{partition}"] = offset + 1
            try:
                event = decode(msg.value(), msg.key(), self.features, partition)
            except SourceTruncatedError as exc:
                self.dead_letters.send(
                    key=msg.key(),
                    value=msg.value(),
                    reason=source.refused_truncate(exc.table, exc.position),
                    source_topic=topic,
                    partition=partition,
                    offset=offset,
                )
                continue
            except DecodeError as exc:
                self.dead_letters.send(
                    key=msg.key(),
                    value=msg.value(),
                    reason=str(exc),
                    source_topic=topic,
                    partition=partition,
                    offset=offset,
                )
                continue
            if event is None:
                if msg.value() is None:
                    self.stats.tombstones += 1
                    EVENTS.labels("tombstone").inc()
                else:  # a table no feature reads: counted, not applied
                    self.stats.skipped += 1
                    EVENTS.labels("skipped").inc()
                continue
            position = event.position
            if position[1] > known or position[0] > known:
                reason = source.implausible(position)  # reads the WAL position at most once
                known = source.known_lsn
                if reason is not None:
                    self.dead_letters.send(
                        key=msg.key(),
                        value=msg.value(),
                        reason=reason,
                        source_topic=topic,
                        partition=partition,
                        offset=offset,
                    )
                    continue
            events.append(event)
        if self.dead_letters.count != dead_before:
            self.dead_letters.flush()  # never move past a bad event before it is safe
            self.stats.dead_lettered = self.dead_letters.count
        return events, offsets

    def _finish(self, batch: _Held) -> None:
        """After a batch's write: hooks, lags, counters, and Kafka's (monitoring) offsets."""
        plan, offsets = batch.plan, batch.offsets
        self.rows.remember(batch.states, plan, self.planner.marks)
        if self.on_applied is not None and plan.applied_events:
            self.on_applied(plan.applied_events)
        now_ms = time.time() * 1000
        lags_ms = [now_ms - commit_ms for commit_ms in plan.applied_commit_ms]
        APPLY_LAG.observe_many(lag / 1000 for lag in lags_ms)
        started_ms = self.stats.started_ms
        self.stats.lags_ms.extend(
            lag
            for lag, commit_ms in zip(lags_ms, plan.applied_commit_ms, strict=True)
            if commit_ms >= started_ms
        )
        self.live.record(plan.applied, lags_ms)
        if len(self.stats.lags_ms) > 100_000:
            del self.stats.lags_ms[:50_000]
        if plan.applied_commit_ms:
            LAST_APPLIED_COMMIT.set(max(plan.applied_commit_ms) / 1000)
        self.stats.applied += plan.applied
        self.stats.duplicates += plan.duplicates
        self.stats.batches += 1
        stats, rows = self.stats, self.rows
        stats.rows_remembered, stats.rows_taken_as_new, stats.rows_read = (
            rows.hits,
            rows.guessed,
            rows.reads,
        )
        EVENTS.labels("applied").inc(plan.applied)
        EVENTS.labels("duplicate").inc(plan.duplicates)
        BATCH_SECONDS.observe(time.perf_counter() - batch.started)
        self._uncommitted.update(offsets)  # committed by the runner once a second

    def publish_stats(self) -> None:
        """Write this consumer's live stats hash (``live_stats``); best effort."""
        self.live.publish(
            applied_total=self.stats.applied,
            dead_lettered_total=self.dead_letters.count,
            assigned_partitions=len(self.assigned),
        )

    def _write(self, batch: _Held) -> None:
        """Read every row, plan (from the watermarks before the batch) and write, until the
        write is not refused; a rejected write drops the events behind it (``_drop_culprits``)
        and goes on. Leaves ``batch.plan`` and ``batch.states`` as written."""
        attempt = 0
        while True:
            self.planner.marks = batch.marks.copy()
            states = self.writer.read_rows(self.planner.keys_needed(batch.events))
            plan = self.planner.plan(batch.events, states)
            try:
                if self.writer.apply(plan, batch.offsets):
                    batch.plan, batch.states = plan, states
                    return
            except BatchRejectedError as exc:  # each time one event less at least
                self._drop_culprits(batch, states, exc)
                continue
            attempt += 1
            if attempt >= 50:
                msg = "a batch could not be written after 50 attempts: another consumer races"
                raise FeaturePipelineError(msg)
            log.info("row state changed under the batch, re-planning attempt=%d", attempt)


@contextmanager
def _collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while one batch is processed.

    A batch makes tens of thousands of containers (decoded envelopes and rows, the plan, the
    write's arguments) that all live until the batch ends. With the collector on, every few
    hundred of them start a young collection that walks them and promotes them, and the full
    collections that follow walk the whole heap: a fifth of the pipeline's CPU in a replay.
    Reference counting frees them at the batch's end, before any collection sees them; the
    path makes no reference cycles, and those another thread makes wait for the next collection.
    A collector already turned off by the embedding program stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_pipeline(settings: Settings, features: FeatureSet = SAMPLE_FEATURES) -> PipelineStats:
    """``freshloop features run``: consume until SIGINT or SIGTERM."""
    pipeline = FeaturePipeline(settings, features)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.stack_bind)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: pipeline.stop.set())
    return pipeline.run()
