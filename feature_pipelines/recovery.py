"""Losing Redis: detect it, and rebuild the features on their own.

Redis holds everything the pipeline knows: features, row states and the consumer's positions.
Two things can happen to it:

- **Restart** (its append-only file keeps the data). The server's ``run_id`` changes. Redis may
  have lost the last second of writes (``appendfsync everysec``), always a whole batch with its
  offsets, never half of one; so the running consumer must not go on from its in-memory
  position. Every (re)connection of the writer's client compares the ``run_id``; on a change the
  batch in flight fails, and the consumer re-reads its positions from Redis and seeks there.
- **Wipe** (FLUSHALL, a new empty server, a lost disk). Each namespace and group has a sentinel
  key ``<ns>:epoch:{<group>}``, created with the group's first positions. The sentinel missing
  while the Kafka group has committed offsets (written only after Redis held the batch), or
  while this process had already seen it, means the state is gone. On a Redis Cluster one
  primary can be wiped alone: the epoch is also marked in every partition and shard slot
  (``loss.LossWatch.mark_slots``, before the sentinel), and a mark gone while the sentinel
  stayed is a partial loss (``slots_lost``, at every look at the sentinel).

Rebuild, chosen over replaying the change topics from their beginning: a Debezium incremental
snapshot (the signal table, ``freshloop connectors snapshot``) re-sends every *current* row of
the feature set's tables as ``op=r``, and the consumer restarts from the Kafka group's committed
offsets. The planner counts a snapshot read only for a row with no stored position, and a
change on a row with no state as its after-image (nothing to retract), so snapshot reads and
live changes interleave exactly; rows deleted meanwhile are simply never re-sent. A replay would
need the change topics to keep their whole history (infinite retention: our broker keeps 7
days) and would re-read every change ever made, where the snapshot reads each live row once.
Starting from the committed offsets (never later than what any consumer of the group applied)
means no consumer skips a stretch after it applied something newer. Redis must run with
``maxmemory-policy noeviction`` (its default): evicting single keys is a loss this cannot see.

Progress is logged (``redis_rebuild_progress rows=N of=M``) from the snapshot reads applied,
against the tables' row counts when the signal was sent.

The learner keeps its state in Postgres checkpoints and reads the predictions topic, so a Redis
loss does not touch what it learned. What is lost are the predictions stored in Redis for
``get_prediction`` (they are still on the predictions topic), and payments scored while the
rebuild runs are scored on features that are still being restored.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import redis
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from feature_pipelines.exceptions import RedisStateLostError
from feature_pipelines.loss import LOSSES, LossFinding, LossWatch
from freshloop.core.health import HEALTH
from freshloop.core.redis_errors import REDIS_DOWN

if TYPE_CHECKING:
    from confluent_kafka import Message

    from feature_pipelines.consumer import FeaturePipeline
    from feature_pipelines.decode import ChangeEvent

__all__ = [
    "RedisLossGuard",
    "Verdict",
    "assess",
    "restart_offsets",
    "run_id_of",
    "watch_connections",
]

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 1.0
_PROGRESS_EVERY_S = 5.0
_LOCK_MS = 120_000
# After a partial loss the sentinel goes first; other consumers of the group stop writing at
# their next check (every _CHECK_EVERY_S, before a batch) before the group's state is dropped.
_QUIESCE_S = 2 * _CHECK_EVERY_S + 0.5


class Verdict(Enum):
    """What the sentinel says about the pipeline's Redis state."""

    FRESH = "fresh"  # never written by this group: create the sentinel
    INTACT = "intact"
    LOST = "lost"  # rebuild
    REBUILT = "rebuilt"  # another process rebuilt it: re-read positions


def assess(
    sentinel: str | None,
    known: str | None,
    committed: Mapping[str, int],
    stored: Mapping[str, int],
) -> Verdict:
    """Pure decision from the sentinel in Redis, the one this process saw, Kafka's committed
    offsets of the group and the offsets Redis holds.

    With no sentinel and no epoch seen yet, Redis offsets at or past every committed Kafka
    offset are adopted (a namespace written before sentinels existed); anything less means the
    progress Kafka recorded is not in Redis.

    >>> assess(None, None, {}, {}).value
    'fresh'
    >>> assess(None, None, {"t:0": 5}, {}).value
    'lost'
    >>> assess(None, None, {"t:0": 5}, {"t:0": 7}).value
    'fresh'
    >>> assess(None, "e1", {}, {"t:0": 7}).value
    'lost'
    >>> assess("e2", "e1", {}, {}).value
    'rebuilt'
    """
    if sentinel is None:
        if known is not None:
            return Verdict.LOST
        covered = all(stored.get(name, -1) >= offset for name, offset in committed.items())
        return Verdict.FRESH if covered else Verdict.LOST
    if known is not None and sentinel != known:
        return Verdict.REBUILT
    return Verdict.INTACT


def restart_offsets(committed: Mapping[str, int], partitions: Iterable[str]) -> dict[str, int]:
    """Where each partition restarts after a loss: Kafka's committed offset, else the beginning.

    >>> restart_offsets({"t:0": 42}, ["t:0", "t:1"])
    {'t:0': 42, 't:1': -2}
    """
    return {name: committed.get(name, OFFSET_BEGINNING) for name in partitions}


def watch_connections(client: Any, on_connect: Callable[[Any], None]) -> None:
    """Have every new connection of ``client`` call ``on_connect`` first: one Redis's pool, or
    on a Redis Cluster every node's pool, those the client knows now and those it makes later
    (a node found after a topology change)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pools = [pool]
    else:
        manager = client.nodes_manager  # RedisCluster: kwargs of the nodes it makes from now on
        manager.connection_kwargs["redis_connect_func"] = on_connect
        nodes = list(manager.nodes_cache.values())
        pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
    for each in pools:
        each.connection_kwargs["redis_connect_func"] = on_connect
        # a connection object keeps the hook it was made with: drop those made before (the
        # cluster client's, made while it learned the layout), so every one goes through it
        each.disconnect()
        each.reset()


def run_id_of(info: str) -> str | None:
    """The ``run_id`` line of ``INFO server`` text.

    >>> run_id_of("# Server\\r\\nredis_version:7.0\\r\\nrun_id:abc\\r\\n")
    'abc'
    """
    for line in info.splitlines():
        if line.startswith("run_id:"):
            return line.split(":", 1)[1].strip()
    return None


@dataclass
class _Rebuild:
    """A rebuild this process started, for progress lines."""

    started: float
    expected: int
    rows: int = 0
    last_read: float = 0.0
    next_report: float = 0.0


class RedisLossGuard:
    """Watches the writer's Redis for restarts and wipes, and rebuilds after a wipe."""

    def __init__(self, pipeline: FeaturePipeline) -> None:
        self.pipeline = pipeline
        self.client: redis.Redis = pipeline.writer.client
        ns, group = pipeline.ns, pipeline.group_id
        self.sentinel_key = f"{ns}:epoch:{{{group}}}"
        self.lock_key = f"{ns}:rebuild:{{{group}}}"
        self.epoch: str | None = None
        # the run_id of each server (host:port) as the writer's connections found it: one entry
        # on one Redis, one per primary on a Redis Cluster; a change is a restart (``_on_connect``)
        self.run_ids: dict[str, str | None] = {}
        self._new_run_ids: dict[str, str | None] = {}
        self.restarted = False
        self.rebuilds = 0
        self._rebuild: _Rebuild | None = None
        self._next_check = 0.0
        self._moved = False
        # Kafka positions found out of range at assignment (``offsets_reset``): the loss path
        # runs before the next batch is written, or at the next tick when none comes
        self._reset: LossFinding | None = None
        settings = pipeline.settings
        self.watch = LossWatch(  # partial losses: evictions, row states gone (loss.py)
            self.client,
            ns,
            group,
            samples=settings.loss_check_samples,
            allow_eviction=settings.redis_allow_eviction,
            shards=settings.redis_cluster_shards,  # a cluster's slots marked with the epoch
            partitions=settings.topic_partitions,
        )
        watch_connections(self.client, self._on_connect)
        chained = pipeline.on_applied
        pipeline.on_applied = lambda events: self._applied(events, chained)

    # ---- connections: a changed run_id means the server restarted ---------------------------
    def _on_connect(self, conn: Any) -> None:
        conn.on_connect()
        conn.send_command("INFO", "server")
        raw = conn.read_response()
        run_id = run_id_of(raw.decode() if isinstance(raw, bytes) else str(raw))
        server = f"{conn.host}:{conn.port}"
        known = self.run_ids.setdefault(server, run_id)
        if run_id != known and self._new_run_ids.get(server) != run_id:
            self._new_run_ids[server] = run_id  # accepted once the positions are re-read
            self.restarted = True
            log.warning(
                "redis_restarted server=%s run_id=%s: positions will be re-read from Redis",
                server,
                run_id,
            )
        if self.restarted:
            msg = "Redis restarted under a batch: the batch is dropped and positions re-read"
            raise redis.ConnectionError(msg)

    # ---- called by the consumer --------------------------------------------------------------
    def start(self) -> None:
        """Before subscribing: refuse a Redis that may evict our keys unless allowed, create
        the sentinel, or detect a loss and rebuild. A Redis not up yet is waited for (``stop``
        ends the wait), as anywhere else in the loop."""
        self._guarded(self.watch.check_policy)
        self._guarded(lambda: self._check(at_start=True))

    def process(self, messages: list[Message]) -> None:
        """One batch through the pipeline; a Redis failure drops it and recovers positions."""
        self._moved = False
        if time.monotonic() >= self._next_check:
            self._guarded(self._check)
        if self.restarted:
            self._guarded(self._recover)
            return
        if self._reset is not None:
            self._guarded(self._reset_offsets)
        # the definitions ``apply`` recorded, before decoding (a switch may read more columns);
        # Redis down or restarted there is handled as anywhere else (it may re-seek)
        self._guarded(self.pipeline.definitions.check)
        if self._moved:
            return  # fetched before the seek: the same messages come again from the new position
        hold = len(messages) >= self.pipeline.HOLD_MIN_BATCH
        self._write(lambda: self.pipeline.process(messages, hold=hold))

    def flush(self) -> None:
        """Write the batch the pipeline holds back (see ``FeaturePipeline.process``)."""
        self._write(self.pipeline.flush_held)

    def _write(self, step: Callable[[], None]) -> None:
        try:
            step()
        except REDIS_DOWN as exc:
            HEALTH.degraded("pipeline", "redis", exc)  # /healthz and metrics; healthy once back
            log.warning("redis_unreachable error=%s: batch dropped, positions re-read", exc)
            self.pipeline.drop_held()
            self._guarded(self._recover)

    def offsets_reset(self, lost: Mapping[str, tuple[int, int, int]]) -> None:
        """Kafka positions outside the topics' offsets (``name -> (stored, low, high)``, found
        at assignment): changes were never applied and cannot be, so this is a loss. It takes
        the loss path (``_partial_loss``: sentinel first, the quiet period, the group's state
        dropped, the rebuild), not inside the assignment callback but before the next batch
        is written (``process``), or at the next ``tick`` when none comes."""
        detail = ", ".join(f"{n} at {at} outside [{lo}, {hi}]" for n, (at, lo, hi) in lost.items())
        self._reset = LossFinding("offsets_out_of_range", detail, sorted(lost))

    def guarded(self, step: Callable[[], None]) -> None:
        """Run a Redis ``step`` of the pipeline's own between batches: tried again while Redis
        is unreachable; a restart found meanwhile re-reads the positions instead (``_recover``),
        so no error of the writer's Redis escapes the loop."""
        self._guarded(step)

    def tick(self) -> None:
        """Called every few seconds even when no message comes, so a rebuild's end is
        reported too, and partial losses are looked for."""
        if self._reset is not None:
            self._guarded(self._reset_offsets)
        self._guarded(self._watch_loss)
        self._report_progress()

    def _reset_offsets(self) -> None:
        finding = self._reset
        if finding is not None:
            self._partial_loss(finding)
            self._reset = None

    def _guarded(self, step: Callable[[], object]) -> None:
        while not self.pipeline.stop.is_set():
            try:
                step()
                HEALTH.healthy("pipeline", "redis")
                return
            except REDIS_DOWN as exc:
                HEALTH.degraded("pipeline", "redis", exc)
                log.warning("redis_unreachable error=%s: retrying in 1 s", exc)
                time.sleep(1.0)
                if self.restarted:  # found by another step: only _recover clears it
                    step = self._recover

    # ---- detection ----------------------------------------------------------------------------
    def _check(self, at_start: bool = False) -> None:
        self._next_check = time.monotonic() + _CHECK_EVERY_S
        raw = self.client.get(self.sentinel_key)
        sentinel = None if raw is None else _text(raw)
        first_look = sentinel is None and self.epoch is None
        committed = self._committed() if first_look else {}
        stored = self.pipeline.writer.offsets() if first_look else {}
        verdict = assess(sentinel, self.epoch, committed, stored)
        if verdict is Verdict.FRESH:
            epoch = _new_epoch()
            self.watch.mark_slots(epoch)  # a cluster's slots first: see slots_lost
            self.client.set(self.sentinel_key, epoch, nx=True)
            self.epoch = _text(self.client.get(self.sentinel_key))
        elif verdict is Verdict.INTACT:
            self.epoch = sentinel
            lost = self.watch.slots_lost()  # a cluster primary wiped but not the sentinel's
            if lost is not None:
                self._partial_loss(lost)
        elif verdict is Verdict.REBUILT:
            log.warning("redis_rebuilt_elsewhere epoch=%s: re-reading positions", sentinel)
            self.epoch = sentinel
            self._reseek()
        else:
            self._lost(at_start)
        self._report_progress()

    def _recover(self) -> None:
        """After a failed call or a restart: wait for Redis, check the sentinel, re-seek."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()
        else:  # a Redis Cluster client (docs/redis-cluster.md)
            self.client.disconnect_connection_pools()  # type: ignore[attr-defined]
        self.restarted = False
        self.run_ids.update(self._new_run_ids)  # the restarted servers' new run_ids, from now on
        self._new_run_ids.clear()
        self.client.ping()
        self._check()
        self._reseek()
        log.warning("redis_recovered epoch=%s: positions re-read from Redis", self.epoch)

    def _committed(self) -> dict[str, int]:
        """Kafka's committed offsets of the group for the pipeline's topics (progress made)."""
        consumer = self.pipeline.consumer
        tps = []
        for topic in self.pipeline.topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            tps += [TopicPartition(topic, p) for p in meta.partitions]
        if not tps:
            return {}
        return {
            f"{tp.topic}:{tp.partition}": tp.offset
            for tp in consumer.committed(tps, timeout=10)
            if tp.offset >= 0
        }

    def _watch_loss(self) -> None:
        finding = self.watch.check({p for _t, p in self.pipeline.assigned}, self.epoch)
        if finding is not None:
            self._partial_loss(finding)

    # ---- rebuild ------------------------------------------------------------------------------
    def _partial_loss(self, finding: LossFinding) -> None:
        """Some keys are gone and the rest are not: the snapshot would count the rows whose
        state survived again, so the group's whole state is dropped first and the rebuild
        starts from nothing, as after a wipe. The sentinel goes first: other consumers of the
        group find it gone at their next check and wait for the new epoch instead of writing."""
        LOSSES.labels(finding.kind).inc()
        HEALTH.degraded("pipeline", "redis-state", f"{finding.kind}: {finding.detail}")
        log.error(
            "redis_state_partly_lost ns=%s group=%s kind=%s detail=%s keys=%s: dropping the "
            "group's state and rebuilding",
            self.pipeline.ns,
            self.pipeline.group_id,
            finding.kind,
            finding.detail,
            ",".join(finding.keys[:5]),
        )
        if not self.client.set(self.lock_key, str(uuid.uuid4()), nx=True, px=_LOCK_MS):
            self._wait_for_other_rebuild()
            return
        self._drop_survivors()
        self._begin_rebuild(at_start=False)

    def _lost(self, at_start: bool) -> None:
        tables = sorted(self.pipeline.features.tables())
        log.error(
            "redis_state_lost ns=%s group=%s found_at=%s: rebuilding the features from the Kafka "
            "group's committed offsets and a Debezium incremental snapshot of %s",
            self.pipeline.ns,
            self.pipeline.group_id,
            "start" if at_start else "run",
            ",".join(tables),
        )
        if not self.client.set(self.lock_key, str(uuid.uuid4()), nx=True, px=_LOCK_MS):
            self._wait_for_other_rebuild()
            return
        if self.pipeline.settings.redis_layout == "cluster":
            # A cluster's primaries lose their data one at a time (each restart, each FLUSHALL),
            # and a batch is a control step and entity steps on different primaries: what was
            # written between two of those losses can hold a row's position without the entity
            # counts it stood for, and the snapshot would skip that row. So what survived is
            # dropped, as after a partial loss (one Redis loses all at once, every batch whole).
            self._drop_survivors()
        self._begin_rebuild(at_start)

    def _drop_survivors(self) -> None:
        """The group's state on every primary but the rebuild lock and the source record,
        after the quiet period in which the group's other consumers stop writing."""
        from feature_pipelines.source import drop_state, source_key

        self.pipeline.drop_held()  # its messages come again from the restart offsets
        self.client.delete(self.sentinel_key)
        self.epoch = None
        time.sleep(_QUIESCE_S)
        ns, group = self.pipeline.ns, self.pipeline.group_id
        gone = drop_state(self.client, ns, group, keep=[self.lock_key, source_key(ns, group)])
        log.warning("redis_state_dropped keys=%d: rebuilding from nothing", gone)

    def _begin_rebuild(self, at_start: bool) -> None:
        """With the rebuild lock held: restart offsets, snapshot signal, new epoch."""
        HEALTH.degraded("pipeline", "redis-state", "rebuilding the features after a loss")
        committed = self._committed()
        names = [f"{t}:{p}" for t, p in self._all_partitions()]
        offsets = restart_offsets(committed, names)
        self.pipeline.writer.set_offsets(offsets)
        expected, signal_id = self._signal_snapshot(sorted(self.pipeline.features.tables()))
        epoch = _new_epoch()
        self.watch.mark_slots(epoch)  # before the sentinel: a sentinel means marked slots
        self.client.set(self.sentinel_key, epoch)
        self.epoch = epoch
        self.rebuilds += 1
        now = time.monotonic()
        self._rebuild = _Rebuild(now, expected, next_report=now + _PROGRESS_EVERY_S)
        log.warning(
            "redis_rebuild_started signal=%s rows_expected=%d restart_offsets=%s",
            signal_id,
            expected,
            offsets,
        )
        if not at_start:
            self._reseek()

    def _wait_for_other_rebuild(self) -> None:
        log.warning("redis_rebuild_in_progress elsewhere: waiting for its new epoch")
        deadline = time.monotonic() + _LOCK_MS / 1000
        while time.monotonic() < deadline and not self.pipeline.stop.is_set():
            raw = self.client.get(self.sentinel_key)
            if raw is not None:
                self.epoch = _text(raw)
                self._reseek()
                return
            time.sleep(0.2)
        msg = "another process holds the rebuild lock but wrote no new epoch; restart to retry"
        raise RedisStateLostError(msg)

    def _all_partitions(self) -> list[tuple[str, int]]:
        consumer = self.pipeline.consumer
        out = []
        for topic in self.pipeline.topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is not None and meta.error is None:
                out += [(topic, p) for p in sorted(meta.partitions)]
        return out

    def _signal_snapshot(self, tables: list[str]) -> tuple[int, str]:
        import psycopg
        from psycopg import sql

        from connectors import snapshot_signal

        row = snapshot_signal(tables)
        settings = self.pipeline.settings
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
            expected = 0
            for table in tables:
                counted = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                ).fetchone()
                expected += int(counted[0]) if counted else 0
            conn.execute("INSERT INTO freshloop_signal (id, type, data) VALUES (%s, %s, %s)", row)
        return expected, row[0]

    def _reseek(self) -> None:
        """Seek every assigned partition to the position Redis holds (Redis is the truth)."""
        self.pipeline.drop_held()  # planned from messages before the seek: they come again
        self.pipeline.forget_written()
        if not self.pipeline.consumer.assignment():
            return
        self._moved = True
        self.pipeline.runner.seek(self.pipeline.writer.offsets())

    # ---- progress -----------------------------------------------------------------------------
    def _applied(
        self,
        events: list[ChangeEvent],
        chained: Callable[[list[ChangeEvent]], None] | None,
    ) -> None:
        if self._rebuild is not None:
            reads = sum(1 for ev in events if ev.op == "r")
            if reads:
                self._rebuild.rows += reads
                self._rebuild.last_read = time.monotonic()
        if chained is not None:
            chained(events)

    def _report_progress(self) -> None:
        rebuild = self._rebuild
        if rebuild is None:
            return
        now = time.monotonic()
        done = rebuild.rows >= rebuild.expected or (
            rebuild.last_read and now - rebuild.last_read > 30
        )
        if done:
            HEALTH.healthy("pipeline", "redis-state")
            log.warning(
                "redis_rebuild_finished rows=%d of=%d seconds=%.1f",
                rebuild.rows,
                rebuild.expected,
                now - rebuild.started,
            )
            self._rebuild = None
        elif now >= rebuild.next_report:
            pct = 100.0 * rebuild.rows / rebuild.expected if rebuild.expected else 100.0
            log.warning(
                "redis_rebuild_progress rows=%d of=%d (%.0f%%) seconds=%.0f",
                rebuild.rows,
                rebuild.expected,
                pct,
                now - rebuild.started,
            )
            rebuild.next_report = now + _PROGRESS_EVERY_S


def _new_epoch() -> str:
    return f"{uuid.uuid4().hex}:{int(time.time() * 1000)}"


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
