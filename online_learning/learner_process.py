"""The learner process: predictions + outcomes from Kafka -> join -> learn -> checkpoint.

ONE learner per namespace owns learning (a Postgres advisory lock enforces it); any number of
scorers (``learn serve``: feature pipeline + ``Scorer`` hook, scaled out by consumer group)
serve the learner's newest checkpoint of the champion. Why one learner: the model, the label
join and the metrics are one sequential state — River learns one example at a time and has no
merge of two models — and one owner makes "learned exactly once" a property of one state
lineage. A learner does little per example (~60k learns/s for a linear model on one core), so
it keeps up with many scorers, whose work (feature reads, Kafka and Redis writes) is the part
that grows with traffic.

Exactly once: the learner reads both topics with explicitly ASSIGNED partitions and positions
from its checkpoint, never from Kafka's committed offsets (those are committed for lag
monitoring only). The Kafka loop is the shared ``freshloop.core.runner.Runner``, which drives
``LearnerService`` as its logic, as it drives the feature pipeline. Every
``checkpoint_every_examples`` examples or ``checkpoint_every_s`` seconds, one Postgres
transaction stores the state, the next offsets and the examples learned since the last
checkpoint. After a crash (even kill -9) the newest checkpoint is restored and
the consumer seeks to its offsets: work after it is redone on the same state, nothing is
learned twice, nothing is lost.

The label join keeps no per-payment state in this process (``StreamJoin``): an outcome meets
its logged prediction in Redis, "already labelled" is the payment's row in
``training_examples`` (written with the checkpoint), and the horizon is ordered by a second
reader of the predictions topic behind the head (the horizon cursor, one offset per partition in
the checkpoint), which releases a prediction once the event-time watermark of the change stream
(``EventClock``) passes ``created_at + horizon``. No wall clock decides what is learned: a
backlog drained after downtime or a replay of old topics labels each payment as live did.

A champion promoted in the registry (a retrain elsewhere) is picked up within
``champion_poll_s``: the learner swaps to it, checkpoints at once (so scorers follow) and keeps
learning from it. Undecodable messages go to ``<prefix>.dead-letter`` and are counted.
Predictions another namespace logged on the same topic are skipped and counted (``foreign``).

Postgres or Redis unreachable: each call the join needs waits with backoff and is tried again
(nothing half-joined is ever checkpointed), a missed champion poll or checkpoint is tried again
after a backoff while learning goes on in memory; each failure degrades component ``learner``
in ``freshloop.core.health.HEALTH``. Stopped while waiting, the learner does not checkpoint: the
work since its last checkpoint is redone on restart.

Fencing (``freshloop.core.fencing``): taking the lock also takes the next learner epoch of the
namespace, and every write of this learner's engine (checkpoints, training examples, the
registry) is refused inside its transaction once the epoch is no longer current. The lock
session is re-checked every second: lost to a Postgres restart with nobody else waiting, it is
taken back; taken by another learner, this one raises ``FencedError`` and stops having written
nothing after the takeover (``freshloop serve`` then exits non-zero).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from sqlalchemy import Engine, create_engine

from feature_pipelines.cluster_read import layout_client_when_up
from freshloop.core.db import POSTGRES_DOWN
from freshloop.core.dead_letter import DeadLetters
from freshloop.core.exceptions import DependencyRetryStopped, FencedError
from freshloop.core.fencing import Ownership
from freshloop.core.health import HEALTH, backoff_delay, retry
from freshloop.core.redis_errors import REDIS_DOWN
from freshloop.core.runner import Partition, Runner, partition_name
from freshloop.core.settings import Settings
from freshloop.core.topics import asking_again, ensure_topic
from online_learning.checkpoints import CheckpointStore
from online_learning.exceptions import LearnerBusyError, OnlineLearningError
from online_learning.join import JoinConfig
from online_learning.learner import OnlineLearner
from online_learning.messages import (
    Outcome,
    decode_outcome,
    decode_prediction,
    foreign_namespace,
)
from online_learning.model_source import choose_source
from online_learning.records import LabelledExample, Prediction
from online_learning.registry import ChampionRef, ModelRegistry
from online_learning.scoring_hook import _redis_fields, prediction_key
from online_learning.services import feature_service

__all__ = ["LearnerService", "ServiceCounts", "learner_status", "run_learner"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Checkpoint offsets of the horizon cursor are "horizon:<topic>:<partition>".
_CURSOR = "horizon:"
# The cursor stops fetching a partition holding this many predictions not yet due (its consumer
# also prefetches little), so what it holds is bounded whatever the horizon and the rate.
_HOLD_MAX = 2000
_COMPONENT = "learner"
_REDIS_DOWN = REDIS_DOWN  # one Redis or a Redis Cluster (freshloop.core.redis_errors)


@dataclass
class ServiceCounts:
    """What the shell itself counts (the learner counts joins and examples)."""

    predictions: int = 0
    outcomes: int = 0
    outcome_deletes: int = 0
    dead_lettered: int = 0
    checkpoints: int = 0
    restored_from: int = 0
    foreign: int = 0  # predictions of another namespace on the topic: skipped


class LearnerService:
    """One learner process of one namespace."""

    def __init__(
        self,
        settings: Settings,
        *,
        namespace: str | None = None,
        engine: Engine | None = None,
        stop: threading.Event | None = None,
        max_batch: int = 2000,
    ) -> None:
        self.settings = settings
        self.ns = namespace or settings.namespace
        self.stop = stop or threading.Event()
        self.max_batch = max_batch
        self._key = settings.model_signing_key.get_secret_value().encode()
        # the lock and epoch of the namespace's learner; every write of ``engine`` is fenced
        self.ownership = Ownership(settings, self.ns, "learner", f"freshloop learner {self.ns}")
        engine = self.ownership.fence(
            engine or create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
        )
        self.registry = ModelRegistry(engine, self.ns, self._key)
        self.checkpoints = CheckpointStore(engine, self.ns, self._key)
        self.join_config = JoinConfig(
            settings.label_horizon, settings.label_grace, settings.horizon_negatives
        )
        self.predictions_topic = settings.predictions_topic_name
        self.outcomes_topic = settings.topic("payment_outcomes")
        self.counts = ServiceCounts()
        self.learner: OnlineLearner | None = None
        self.offsets: dict[str, int] = {}
        self._buffer: list[LabelledExample] = []
        self._champion: ChampionRef | None = None
        self._dirty = False
        self._durable: dict[str, int] = {}  # checkpointed positions, not yet told to Kafka
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"{self.ns}-learner",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,
                "enable.partition.eof": True,  # a partition at its end holds no watermark back
            }
        )
        # the shared Kafka loop (consume, assign, commit) that drives this logic
        self.runner = Runner(consumer, self, stop=self.stop, max_batch=max_batch, wait_s=0.2)
        # the loop's timers (``on_tick``), set by ``run``
        self._next_poll = self._next_logs_check = self._next_lock_check = 0.0
        self._last_checkpoint = 0.0
        self._failures = 0  # consecutive failed polls / checkpoints: the backoff grows with them
        self._cursor = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"{self.ns}-learner-horizon",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,
                "queued.min.messages": 500,
                "queued.max.messages.kbytes": 1024,
            }
        )
        self._held: dict[str, deque[tuple[int, Prediction | None]]] = {}
        self._paused: set[str] = set()
        # one Redis or a cluster (redis_layout); a cluster's once a node answers
        self.redis = layout_client_when_up(settings, "writer", self.stop, _COMPONENT)
        # present while Redis holds every open prediction this learner logged (check_logs):
        # one key on one Redis, one on every primary of a cluster (``logs_sentinels``)
        self._sentinel = f"{self.ns}:learner:logs"
        self._relog_ttl_ms = int(self.join_config.memory.total_seconds() * 1000)
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
        self.dead_letters = DeadLetters(producer, f"{settings.topic_prefix}.dead-letter")
        HEALTH.register(_COMPONENT)

    # ---- start: lock, restore or begin, assign ----------------------------------------------
    def start(self) -> None:
        self._take_lock()
        ensure_topic(self.settings, self.predictions_topic)
        champion = self.registry.ensure_champion(self.settings.model_spec)
        checkpoint = self.checkpoints.latest()
        if checkpoint is not None:
            self.learner = self.checkpoints.restore(checkpoint, {"join_config": self.join_config})
            self.offsets = dict(checkpoint.offsets)
            saved = checkpoint.status.get("service", {})
            for name in asdict(self.counts):
                setattr(self.counts, name, int(saved.get(name, 0)))
            self.counts.restored_from = checkpoint.ref.checkpoint_id
            self._champion = champion
            if choose_source(champion, checkpoint.ref) is None:
                self._swap(champion)
            log.info(
                "restored namespace=%s checkpoint=%d learned=%d offsets=%s",
                self.ns,
                checkpoint.ref.checkpoint_id,
                self.learner.model.n_learned,
                self.offsets,
            )
        else:
            model = self.registry.load(champion.version)
            self.learner = OnlineLearner(
                model,
                self._key,
                self.join_config,
                served_names=feature_service(self.settings).features,
            )
            self._champion = champion
            self.offsets = self._start_offsets()
            for name, offset in list(self.offsets.items()):
                if name.startswith(f"{self.predictions_topic}:"):
                    self.offsets[_CURSOR + name] = offset  # the cursor starts where the head does
            self.checkpoint()  # the start position is now durable: a crash resumes from it
        parts = self._partitions()
        self.runner.assign(parts)  # from the checkpoint's positions (``restore``)
        for t, p in parts:
            self.learner.stream.clock.expect(f"{t}:{p}")
        cursor = []
        for t, p in parts:
            if t == self.predictions_topic:
                head = self.offsets.get(f"{t}:{p}", OFFSET_BEGINNING)
                cursor.append(TopicPartition(t, p, self.offsets.get(f"{_CURSOR}{t}:{p}", head)))
                self._held[f"{t}:{p}"] = deque()
        self._cursor.assign(cursor)
        self.check_logs()

    # ---- Redis lost the logged predictions ---------------------------------------------------
    def check_logs(self) -> int:
        """Put the open predictions back in Redis if it lost them (a wipe, a new server): the
        join meets outcomes there. A sentinel key, set once the logs are complete, tells; the
        open predictions are those between the horizon cursor and the head of the topic, read
        again from it, and outcomes parked meanwhile join them. Returns how many were put back.
        """
        sentinels = logs_sentinels(self.redis, self._sentinel)
        if all(self.redis.exists(key) for key in sentinels):
            return 0
        learner = self._require()
        stream = learner.stream
        found: list[Prediction] = []
        reader = Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": f"{self.ns}-learner-relog",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            ends = {}
            for name, head in self.offsets.items():
                if name.startswith(_CURSOR) or not name.startswith(f"{self.predictions_topic}:"):
                    continue
                start = self.offsets.get(_CURSOR + name, head)
                if start < head:
                    ends[name] = (start, head)
            reader.assign(
                [
                    TopicPartition(n.rsplit(":", 1)[0], int(n.rsplit(":", 1)[1]), start)
                    for n, (start, _head) in ends.items()
                ]
            )
            done: set[str] = set()
            deadline = time.monotonic() + 300
            while len(done) < len(ends) and time.monotonic() < deadline:
                for msg in reader.consume(self.max_batch, timeout=1.0):
                    name = f"{msg.topic()}:{msg.partition()}"
                    if msg.error() is not None or name in done:
                        continue
                    if (msg.offset() or 0) + 1 >= ends[name][1]:
                        done.add(name)
                    if (msg.offset() or 0) >= ends[name][1]:
                        continue
                    if foreign_namespace(msg.value(), self.ns) is not None:
                        continue
                    try:
                        found.append(decode_prediction(msg.value()))
                    except OnlineLearningError:
                        continue  # dead-lettered when the head read it
        finally:
            reader.close()
        unlogged = self._unlogged(found)
        learned = self.checkpoints.labelled({p.payment_id for p in unlogged})
        self._relog([p for p in unlogged if p.payment_id not in learned])
        waiting = [p for p in found if p.payment_id in stream.parked]
        if waiting:
            stored = self.checkpoints.labelled({p.payment_id for p in waiting})
            for prediction in waiting:
                self._learned(stream.on_prediction(prediction, stored.get(prediction.payment_id)))
        for key in sentinels:
            self.redis.set(key, "1")
        if found:
            log.warning(
                "logged predictions lost from redis: %d open ones put back from the topic, "
                "%d parked outcomes joined",
                len(found),
                len(waiting),
            )
        return len(found)

    def _take_lock(self) -> None:
        """The namespace's learner lock and its next epoch: a waiting learner takes over the
        moment the owner's session ends (a killed predecessor's session may linger briefly)."""
        if not self.ownership.take(wait_s=15):
            msg = (
                f"another learner owns namespace {self.ns!r}: run one 'learn run' per "
                "namespace (scale out scorers with 'learn serve' instead)"
            )
            raise LearnerBusyError(msg)

    def _partitions(self) -> list[tuple[str, int]]:
        topics = (self.predictions_topic, self.outcomes_topic)

        def ask() -> Any:
            meta = self.runner.consumer.list_topics(timeout=10).topics
            for topic in topics:  # a new topic without its leaders yet: ask again
                if topic in meta and meta[topic].error is not None:
                    raise KafkaException(meta[topic].error)
            return meta

        try:
            meta = asking_again(ask, "topic metadata")
        except KafkaException as exc:
            msg = (
                f"topics {', '.join(topics)} are not ready ({exc.args[0] if exc.args else exc}): "
                "apply the connector / start a scorer"
            )
            raise OnlineLearningError(msg) from exc
        out = []
        for topic in topics:
            if topic not in meta or meta[topic].error is not None:
                msg = f"topic {topic} does not exist yet: apply the connector / start a scorer"
                raise OnlineLearningError(msg)
            out += [(topic, p) for p in sorted(meta[topic].partitions)]
        return out

    def _start_offsets(self) -> dict[str, int]:
        latest = self.settings.learner_start == "latest"
        out = {}
        for topic, partition in self._partitions():
            tp = TopicPartition(topic, partition)
            low, high = asking_again(
                lambda: self.runner.consumer.get_watermark_offsets(tp, timeout=10),  # noqa: B023 - called at once
                f"watermarks of {topic}:{partition}",
            )
            out[f"{topic}:{partition}"] = high if latest else low
        return out

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> ServiceCounts:
        """Start, then learn until ``stop`` (the shared runner's loop), checkpoint, close."""
        self.start()
        now = time.monotonic()
        self._next_poll = now
        self._next_logs_check = self._next_lock_check = now + 1.0
        self._last_checkpoint = now
        self._failures = 0
        try:
            self.runner.run()  # checkpoints at a clean stop (``on_stop``)
        except DependencyRetryStopped as exc:
            log.warning(
                "learner stopped without a checkpoint (%s): work since the last one is "
                "redone on restart",
                exc,
            )
        except FencedError as exc:
            log.error("learner_fenced namespace=%s: %s", self.ns, exc)
            raise
        finally:
            self.close()
        return self.counts

    # ---- the logic the runner drives ---------------------------------------------------------
    def restore(self, partitions: list[Partition]) -> dict[str, int]:
        """The positions of the checkpoint ``start`` restored (or began)."""
        return {
            name: self.offsets[name]
            for t, p in partitions
            if (name := partition_name(t, p)) in self.offsets
        }

    def on_batch(self, messages: list[Message]) -> None:
        self.process(messages)

    def on_idle(self) -> bool:
        return False  # nothing held back: examples are learned as they are joined

    def on_tick(self) -> None:
        """The horizon, the logged predictions, the lock, the champion and the checkpoint."""
        self.advance_horizon()
        now = time.monotonic()
        if now >= self._next_logs_check:
            self._next_logs_check = now + 1.0
            try:
                self.check_logs()
            except redis.RedisError as exc:
                log.warning("redis unreachable checking the logged predictions: %s", exc)
        try:  # Postgres restarting: keep the state in memory, try again after a backoff
            if now >= self._next_lock_check:  # a lost lock session: taken back, or we stop
                self.ownership.check()
                self._next_lock_check = now + 1.0
            if now >= self._next_poll:
                self._next_poll = now + self.settings.champion_poll_s
                if self._poll_champion():
                    self._last_checkpoint = time.monotonic()
            due = len(self._buffer) >= self.settings.checkpoint_every_examples or (
                self._dirty and now - self._last_checkpoint >= self.settings.checkpoint_every_s
            )
            if due:
                self.checkpoint()
                self._last_checkpoint = time.monotonic()
        except POSTGRES_DOWN as exc:
            HEALTH.degraded(_COMPONENT, "postgres", exc)
            delay = backoff_delay(self._failures, 0.5, 15.0)
            self._failures += 1
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            log.warning(
                "postgres_unreachable component=learner error=%s: retrying in %.1f s",
                first,
                delay,
            )
            self._next_poll = min(self._next_poll, time.monotonic() + delay)
            self.stop.wait(delay)
        else:
            if self._failures:
                self._failures = 0
                HEALTH.healthy(_COMPONENT, "postgres")
                log.warning("postgres_recovered component=learner")

    def snapshot(self) -> dict[str, int]:
        """The head's positions of the last checkpoint (the cursor's are the learner's own)."""
        durable, self._durable = self._durable, {}
        return durable

    def on_revoke(self, partitions: list[Partition]) -> None:
        """Never called: the learner's partitions are assigned, not balanced by the group."""

    def on_stop(self, clean: bool) -> None:
        if clean:  # else stopped while waiting, or failed: the last checkpoint stays the truth
            self.checkpoint()

    def process(self, messages: list[Message]) -> None:
        """Decode a batch, look up what the join needs in one round trip each, then join in
        order (the event clock advancing message by message)."""
        learner = self._require()
        stream = learner.stream
        dead_before = self.dead_letters.count
        items: list[tuple[str, Prediction | Outcome | None]] = []  # None: at the end
        for msg in messages:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    items.append((f"{topic}:{partition}", None))  # in order with the messages
                else:
                    log.warning("consume error=%s", error)
                continue
            self.offsets[f"{topic}:{partition}"] = offset + 1
            self._dirty = True
            try:
                if topic == self.predictions_topic:
                    if foreign_namespace(msg.value(), self.ns) is not None:
                        self.counts.foreign += 1
                        continue
                    items.append((f"{topic}:{partition}", decode_prediction(msg.value())))
                    continue
                outcome = decode_outcome(msg.value(), msg.key())
                if outcome is None:
                    self.counts.outcome_deletes += int(msg.value() is not None)
                    continue
                items.append((f"{topic}:{partition}", outcome))
            except OnlineLearningError as exc:
                self.dead_letters.send(
                    key=msg.key(),
                    value=msg.value(),
                    reason=str(exc),
                    source_topic=topic,
                    partition=partition,
                    offset=offset,
                )
        if self.dead_letters.count != dead_before:
            self.dead_letters.flush()  # never checkpoint past a bad event before it is safe
            self.counts.dead_lettered += self.dead_letters.count - dead_before
        predictions = [item for _, item in items if isinstance(item, Prediction)]
        outcome_ids = {item.payment_id for _, item in items if isinstance(item, Outcome)}
        unlogged = self._redis(lambda: self._unlogged(predictions))
        parked = {p.payment_id for p in predictions if p.payment_id in stream.parked}
        stored = self._postgres(
            lambda: self.checkpoints.labelled(
                outcome_ids | parked | {p.payment_id for p in unlogged}
            )
        )
        # a learned payment's log was removed at its checkpoint: not put back
        self._redis(lambda: self._relog([p for p in unlogged if p.payment_id not in stored]))
        logged = self._redis(lambda: self._logged(outcome_ids))
        for partition_key, item in items:
            if item is None:
                stream.clock.at_end(partition_key)
            elif isinstance(item, Prediction):
                stream.clock.observe(partition_key, item.created_at)
                self.counts.predictions += 1
                self._learned(stream.on_prediction(item, stored.get(item.payment_id)))
            else:
                stream.clock.observe(partition_key, item.at)
                self.counts.outcomes += 1
                pid = item.payment_id
                self._learned(
                    stream.on_outcome(pid, item.is_fraud, item.at, logged.get(pid), stored.get(pid))
                )

    def advance_horizon(self) -> int:
        """Release the predictions at the horizon cursor that the watermark has passed: each
        becomes a horizon negative unless already labelled. Returns how many were released."""
        stream = self._require().stream
        stream.expire()
        self._fill_cursor()
        due: list[tuple[str, int, Prediction | None]] = []
        for name, held in self._held.items():
            while held and len(due) < self.max_batch:
                offset, prediction = held[0]
                if prediction is not None and not stream.is_due(prediction):
                    break
                held.popleft()
                due.append((name, offset, prediction))
        if not due:
            return 0
        ids = {p.payment_id for _, _, p in due if p is not None}
        stored = self._postgres(lambda: self.checkpoints.labelled(ids))
        for name, offset, prediction in due:
            self.offsets[_CURSOR + name] = offset + 1
            if prediction is not None:
                self._learned(stream.on_due(prediction, stored.get(prediction.payment_id)))
        self._dirty = True
        return len(due)

    def _fill_cursor(self) -> None:
        """Take what the cursor has fetched; pause partitions holding enough, resume the rest."""
        for msg in self._cursor.consume(self.max_batch, timeout=0):
            if msg.error() is not None:
                continue
            name = f"{msg.topic()}:{msg.partition()}"
            prediction: Prediction | None = None  # another namespace's: released at once
            try:
                if foreign_namespace(msg.value(), self.ns) is None:
                    prediction = decode_prediction(msg.value())
            except OnlineLearningError:
                prediction = None  # dead-lettered by the head already; released at once
            self._held[name].append((msg.offset() or 0, prediction))
        for name, held in self._held.items():
            topic, partition = name.rsplit(":", 1)
            tp = [TopicPartition(topic, int(partition))]
            if len(held) >= _HOLD_MAX and name not in self._paused:
                self._cursor.pause(tp)
                self._paused.add(name)
            elif len(held) < _HOLD_MAX and name in self._paused:
                self._cursor.resume(tp)
                self._paused.discard(name)

    def _postgres(self, call: Callable[[], T]) -> T:
        """A Postgres call the join cannot go on without: tried again until it works."""
        return retry(
            call, component=_COMPONENT, dependency="postgres", errors=POSTGRES_DOWN, stop=self.stop
        )

    def _redis(self, call: Callable[[], T]) -> T:
        """A Redis call the join cannot go on without: tried again until it works."""
        return retry(
            call, component=_COMPONENT, dependency="redis", errors=_REDIS_DOWN, stop=self.stop
        )

    def _logged(self, payment_ids: Collection[int]) -> dict[int, Prediction]:
        """The predictions logged in Redis for these payments (one pipeline)."""
        if not payment_ids:
            return {}
        ids = list(payment_ids)
        pipe = self.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(prediction_key(self.ns, pid))
        out: dict[int, Prediction] = {}
        for pid, raw in zip(ids, pipe.execute(), strict=True):
            prediction = _from_redis(pid, raw) if raw else None
            if prediction is not None:
                out[pid] = prediction
        return out

    def _unlogged(self, predictions: list[Prediction]) -> list[Prediction]:
        """The predictions whose log is not in Redis: expired there (a replay of old topics), or
        removed by a checkpoint that stored the payment as learned (its outcome came first)."""
        if not predictions:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for prediction in predictions:
            pipe.exists(prediction_key(self.ns, prediction.payment_id))
        present = pipe.execute()
        return [p for p, there in zip(predictions, present, strict=True) if not there]

    def _relog(self, predictions: list[Prediction]) -> None:
        """Put these unlearned predictions back in Redis, so their outcomes meet them as they
        did live (the caller leaves out the learned ones: their log is gone for good)."""
        if not predictions:
            return
        pipe = self.redis.pipeline(transaction=False)
        for prediction in predictions:
            key = prediction_key(self.ns, prediction.payment_id)
            pipe.hset(key, mapping=_redis_fields(prediction, "learner-relog"))
            pipe.pexpire(key, self._relog_ttl_ms)
        pipe.execute()

    def _learned(self, examples: list[LabelledExample]) -> None:
        learner = self._require()
        for example in examples:
            learner.observe(example)
        if examples:
            self._buffer.extend(examples)
            self._dirty = True

    def _poll_champion(self) -> bool:
        ref = self.registry.champion_ref()
        if ref is None or ref == self._champion:
            return False
        self._swap(ref)
        self.checkpoint()  # scorers follow the new champion from this checkpoint on
        return True

    def _swap(self, ref: ChampionRef) -> None:
        learner = self._require()
        old = learner.swap_model(self.registry.load(ref.version))
        self._champion = ref
        self._dirty = True
        log.info("champion swapped namespace=%s from=%s to=%s", self.ns, old.version, ref.version)

    def checkpoint(self) -> int:
        learner = self._require()
        self.counts.checkpoints += 1
        checkpoint_id = self.checkpoints.write(
            learner,
            self.offsets,
            self._buffer,
            extra_status={"service": asdict(self.counts)},
        )
        self._forget_predictions([example.payment_id for example in self._buffer])
        self._buffer.clear()
        learner.stream.flushed()  # their training_examples rows are the "labelled" marks now
        self._dirty = False
        self._durable.update(
            {name: at for name, at in self.offsets.items() if not name.startswith(_CURSOR)}
        )
        self.runner.commit()  # lag monitoring only
        return checkpoint_id

    def _forget_predictions(self, payment_ids: list[int]) -> None:
        """The logged predictions of payments this checkpoint stored as learned: the join
        needs them no more (their ``training_examples`` rows are the "labelled" marks and hold
        the same vector), so Redis keeps a prediction for as long as its payment is open in
        event time, not for a wall-clock TTL; the TTL stays as a backstop. Best effort: a key
        left behind still expires."""
        for start in range(0, len(payment_ids), 1000):
            keys = [prediction_key(self.ns, pid) for pid in payment_ids[start : start + 1000]]
            try:
                self.redis.delete(*keys)
            except redis.RedisError as exc:
                log.warning("learned predictions not removed from redis error=%s", exc)
                return

    def _require(self) -> OnlineLearner:
        if self.learner is None:
            msg = "the learner service is not started: call start() or run()"
            raise OnlineLearningError(msg)
        return self.learner

    def close(self) -> None:
        self.runner.close()
        self._cursor.close()
        self.redis.close()
        self.dead_letters.flush()
        self.ownership.release()


def logs_sentinels(client: Any, base: str) -> list[str]:
    """The keys that say "Redis holds every logged prediction": ``base`` on one Redis; on a
    Redis Cluster one per primary (``<base>:{<n>}``, the first ``n`` whose slot that primary
    serves), since the logged predictions (``pred:{<payment_id>}``) spread over every primary
    and one of them can lose its data alone. Worked out again at every look, so a slot moved
    to another primary moves its sentinel's duty with it."""
    if not hasattr(client, "get_primaries"):
        return [base]
    manager = client.nodes_manager
    primaries = {node.name for node in client.get_primaries()}
    keys: dict[str, str] = {}
    for n in range(64 * max(len(primaries), 1)):
        key = f"{base}:{{{n}}}"
        node = manager.get_node_from_slot(client.keyslot(key))
        keys.setdefault(node.name, key)
        if len(keys) == len(primaries):
            break
    return list(keys.values())


def _from_redis(payment_id: int, raw: dict[Any, Any]) -> Prediction | None:
    """A prediction hash as the scorer writes it; None if it is not one (then not joined)."""
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    try:
        features = orjson.loads(fields["features"])
        return Prediction(
            payment_id=payment_id,
            score=float(fields["score"]),
            features={str(k): float(v) for k, v in features.items()},
            model_version=_text(fields["model_version"]),
            created_at=datetime.fromisoformat(_text(fields["created_at"])),
            predicted_at=datetime.fromisoformat(_text(fields["predicted_at"])),
        )
    except (KeyError, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        log.warning("prediction in redis unreadable payment_id=%d: not joined", payment_id)
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def run_learner(settings: Settings) -> ServiceCounts:
    """``freshloop learn run``: learn until SIGINT or SIGTERM, then checkpoint and stop."""
    service = LearnerService(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop.set())
    return service.run()


def learner_status(settings: Settings) -> dict[str, Any] | None:
    """``freshloop learn status``: what the newest checkpoint of the namespace says."""
    engine = create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
    key = settings.model_signing_key.get_secret_value().encode()
    store = CheckpointStore(engine, settings.namespace, key)
    checkpoint = store.latest()
    if checkpoint is None:
        return None
    champion = ModelRegistry(engine, settings.namespace, key).champion_ref()
    return {
        "checkpoint_id": checkpoint.ref.checkpoint_id,
        "checkpoint_at": checkpoint.ref.created_at.isoformat(),
        "champion": None if champion is None else champion.version,
        "training_examples": store.example_count(),
        **checkpoint.status,
    }
