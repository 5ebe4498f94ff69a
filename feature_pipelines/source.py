"""Positions that cannot go back silently: the change source's identity, kept with the positions.

The pipeline drops a change whose source position (a Postgres LSN) is not above the one stored
with its row: that is how redelivered events are told from new ones. It is only right while the
positions come from one database that never goes back. So each namespace records, in
``<ns>:source:{<group>}`` (written when the namespace is first built, read at every start):

- the Postgres **system identifier** (``pg_control_system()``): a re-initialised cluster or a
  database restored from a dump into another cluster has another one;
- the **timeline** (``pg_control_checkpoint()``): a restore to a point in time or a promoted
  standby moves to a new one; going to a lower one means an older copy came back;
- the replication **slot** the connector reads, for the record;
- ``lsn``: the highest WAL position the source was seen at (read at start, and whenever an event
  passed the last one read), recorded once a second with the Kafka offsets: at or above every
  position applied, never above what the source had written, so a source that did not go back
  is never taken for one.

At start (and whenever the record is found missing, e.g. after a rebuild) the live source is
compared with the record: another system identifier, a lower timeline or a current WAL position
(``pg_current_wal_lsn()``) below ``lsn`` stops the pipeline with ``SourceChangedError``, whose
sentence says what happened and how to rebuild. None of this is on the per-event path.

Per event there is one integer comparison: an event whose position lies beyond the source's
current WAL position (a forged event, or another cluster's) is dead-lettered with its reason
instead of applied, since its huge position would freeze its row for ever. The known WAL
position is read again from Postgres at most once per batch, and only when an event exceeds it.

TRUNCATE is refused loudly, not applied: Debezium is told to emit it (``skipped.operations``
is ``none`` in the connector template; its default skips it), and the pipeline, which cannot
retract a whole table's rows from the entities in one atomic step (they are spread over
partitions other consumers own), dead-letters the event, counts it, records it with the
positions (so every consumer and every restart reports it) and degrades ``/healthz`` with a
sentence naming the rebuild. Changes after the truncate still apply.

The rebuild (``freshloop features rebuild``) drops the namespace's features and positions and
points the group at the change topics' end; the next ``features run`` finds its state gone and
runs the existing rebuild (``recovery.py``: an incremental snapshot re-sends every current row).
``--reset-connector`` first makes Debezium forget the old source's offsets (else it would skip
every change of the new source below them) and snapshot the live database again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import Counter
from redis.cluster import RedisCluster

from feature_pipelines.exceptions import (
    DefinitionError,
    FeaturePipelineError,
    SourceChangedError,
)
from feature_pipelines.lua import script
from freshloop.core.health import HEALTH, retry

if TYPE_CHECKING:
    import psycopg
    from confluent_kafka import Consumer, TopicPartition

    from feature_pipelines.catalog import FeatureSet
    from freshloop.core.settings import Settings

__all__ = [
    "REFUSALS",
    "LiveSource",
    "Recorded",
    "SourceGuard",
    "SourceIdentity",
    "drop_state",
    "format_lsn",
    "judge",
    "out_of_range",
    "rebuild_namespace",
    "source_key",
]

log = logging.getLogger(__name__)

REFUSALS = Counter(
    "freshloop_feature_source_refusals_total",
    "Change events or starts refused because the source cannot be trusted, by reason.",
    ["reason"],  # implausible_position | truncate | source_changed | offsets_out_of_range
)

_RECORD = script("source_record")

_REBUILD_HINT = (
    "stop every 'freshloop features run' of namespace {ns}, run 'freshloop features rebuild{flag}' "
    "(it drops the namespace's features and positions{what}), then start them again: they "
    "re-read every current row from the live database"
)


def source_key(ns: str, group: str) -> str:
    return f"{ns}:source:{{{group}}}"


def format_lsn(lsn: int) -> str:
    """An LSN as Postgres writes it.

    >>> format_lsn(0x16B374D848)
    '16/B374D848'
    """
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class SourceIdentity:
    """Which database the positions come from."""

    system_id: str
    timeline: int
    slot: str


@dataclass(frozen=True)
class LiveSource:
    """The source as it is now: its identity and current WAL position."""

    identity: SourceIdentity
    wal_lsn: int


@dataclass(frozen=True)
class Recorded:
    """What the namespace recorded: identity, highest position seen, a refused truncate."""

    identity: SourceIdentity
    lsn: int | None
    truncated: str | None

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> Recorded | None:
        """From the record's hash (bytes or text); None when the record has no identity."""
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "system_id" not in fields:
            return None
        identity = SourceIdentity(
            fields["system_id"], int(fields.get("timeline", "0")), fields.get("slot", "")
        )
        lsn = fields.get("lsn")
        return cls(identity, None if lsn is None else int(lsn), fields.get("truncated"))


def judge(recorded: SourceIdentity, applied_lsn: int | None, live: LiveSource) -> str | None:
    """What makes ``live`` another source than the one the positions came from (a clause);
    None when it is the same one, not gone back.

    >>> same = SourceIdentity("71", 1, "s")
    >>> judge(same, 100, LiveSource(same, 200)) is None
    True
    >>> judge(same, 300, LiveSource(same, 200))
    'its current WAL position 0/C8 is below 0/12C, the highest position already applied (an older copy of the database was restored)'
    """  # noqa: E501
    now = live.identity
    if now.system_id != recorded.system_id:
        return (
            f"it is another Postgres cluster: the positions were recorded from system identifier "
            f"{recorded.system_id}, the live database has {now.system_id} (a re-initialised "
            f"cluster, a dump restored elsewhere, or another cluster behind the same settings)"
        )
    if now.timeline < recorded.timeline:
        return (
            f"its timeline went back from {recorded.timeline} to {now.timeline} (an older copy "
            f"of the database was restored)"
        )
    if applied_lsn is not None and live.wal_lsn < applied_lsn:
        return (
            f"its current WAL position {format_lsn(live.wal_lsn)} is below "
            f"{format_lsn(applied_lsn)}, the highest position already applied (an older copy of "
            f"the database was restored)"
        )
    return None


def out_of_range(
    stored: Mapping[str, int], ends: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int, int]]:
    """Partitions whose stored next offset lies outside Kafka's (low, high) watermarks:
    ``name -> (stored, low, high)``. Past the end: the topic was recreated (or the broker lost
    data); before the start: retention deleted changes that were never applied.

    >>> ends = {"t:0": (0, 10), "t:1": (5, 9), "t:2": (0, 7)}
    >>> out_of_range({"t:0": 50, "t:1": 3, "t:2": 7}, ends)
    {'t:0': (50, 0, 10), 't:1': (3, 5, 9)}
    """
    out = {}
    for name, (low, high) in ends.items():
        at = stored.get(name)
        if at is not None and at >= 0 and (at > high or at < low):
            out[name] = (at, low, high)
    return out


def read_live(conn: psycopg.Connection[Any], slot: str) -> LiveSource:
    """The live source's identity and current WAL position (three cheap catalog calls)."""
    row = conn.execute(
        "SELECT s.system_identifier::text, c.timeline_id, "
        "(pg_current_wal_lsn() - '0/0'::pg_lsn)::numeric::text "
        "FROM pg_control_system() s, pg_control_checkpoint() c"
    ).fetchone()
    assert row is not None  # noqa: S101 - one row by construction
    return LiveSource(SourceIdentity(str(row[0]), int(row[1]), slot), int(row[2]))


def _current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::numeric::text").fetchone()
    assert row is not None  # noqa: S101
    return int(row[0])


class SourceGuard:
    """The pipeline's side: checks the live source at start, the plausibility of positions per
    batch, records the highest position seen, and reports a refused truncate."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        ns: str,
        group: str,
        *,
        stop: threading.Event,
        component: str = "pipeline",
    ) -> None:
        self.settings = settings
        self.client = client
        self.ns = ns
        self.group = group
        self.key = source_key(ns, group)
        self.stop = stop
        self.component = component
        self.known_lsn = -1  # the source's current WAL position, as last read
        self.truncated: str | None = None
        self._refreshed = False  # the known position was read again in this batch
        self._conn: psycopg.Connection[Any] | None = None
        self._record = client.register_script(_RECORD)

    # ---- Postgres ------------------------------------------------------------------------------
    def _postgres(self, call: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        import psycopg

        def once() -> Any:
            try:
                return call(self._connection())
            except psycopg.OperationalError:
                self.close()
                raise

        return retry(
            once,
            component=self.component,
            dependency="postgres",
            errors=(psycopg.OperationalError,),
            stop=self.stop,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---- joins ---------------------------------------------------------------------------------
    def check_joins(self, features: FeatureSet) -> None:
        """On a Redis Cluster, refuse at start a lookup whose two tables are not keyed by the
        join column (``unpartitioned_lookups``): it would count on the wrong rows, silently."""
        tables = {t for f in features if f.lookup for t in (f.table, f.lookup.table)}
        if not tables:
            return
        keys = self._postgres(lambda c: primary_keys(c, sorted(tables)))
        problems = unpartitioned_lookups(features, keys)
        if problems:
            msg = (
                "; ".join(problems)
                + ". Run this feature set on one Redis (FRESHLOOP_REDIS_LAYOUT=single), or "
                "leave the lookup feature out of the set (FRESHLOOP_FEATURE_DEFINITIONS)."
            )
            raise DefinitionError(msg)

    # ---- identity ------------------------------------------------------------------------------
    def check(self, when: str = "start") -> None:
        """Compare the live source with the record, or write the record when there is none."""
        live: LiveSource = self._postgres(lambda c: read_live(c, self.settings.slot_name))
        self.known_lsn = max(self.known_lsn, live.wal_lsn)
        recorded = Recorded.parse(self.client.hgetall(self.key))
        if recorded is None:
            ident = live.identity
            self.client.hset(
                self.key,
                mapping={
                    "system_id": ident.system_id,
                    "timeline": str(ident.timeline),
                    "slot": ident.slot,
                    "recorded_ms": str(int(time.time() * 1000)),
                },
            )
            log.info(
                "source_recorded ns=%s system_id=%s timeline=%d slot=%s wal=%s",
                self.ns,
                ident.system_id,
                ident.timeline,
                ident.slot,
                format_lsn(live.wal_lsn),
            )
            return
        problem = judge(recorded.identity, recorded.lsn, live)
        if problem is not None:
            REFUSALS.labels("source_changed").inc()
            msg = (
                f"The change source of namespace {self.ns} is not the one its positions came "
                f"from ({when}): {problem}. Applied on, every change of an existing row would be "
                f"dropped as a duplicate. To rebuild, "
                + _REBUILD_HINT.format(
                    ns=self.ns,
                    flag=" --reset-connector",
                    what=" and makes the connector forget the old source's offsets",
                )
                + "."
            )
            HEALTH.degraded(self.component, "source", msg)
            log.error("source_changed ns=%s: %s", self.ns, msg)
            raise SourceChangedError(msg)
        if live.identity.timeline > recorded.identity.timeline:  # a promotion, not a way back
            self.client.hset(self.key, "timeline", str(live.identity.timeline))
            log.warning(
                "source_timeline ns=%s from=%d to=%d: recorded",
                self.ns,
                recorded.identity.timeline,
                live.identity.timeline,
            )
        if recorded.truncated:
            self._report_truncated(recorded.truncated)

    def flush(self) -> None:
        """Record the highest WAL position seen (once a second, with the Kafka offsets); re-check
        the source when the record is gone (a Redis wipe and its rebuild); report a truncate
        another consumer recorded. Best effort: Redis errors wait for the next call."""
        try:
            seen = str(self.known_lsn) if self.known_lsn >= 0 else ""
            found, truncated = self._record(keys=[self.key], args=[seen])
            if not int(found):
                if not self.stop.is_set():
                    self.check("rebuild")
            elif truncated is not None and self.truncated is None:
                self._report_truncated(_text(truncated))
        except redis.RedisError as exc:
            log.info("source record not written error=%s: tried again next time", exc)

    def tick(self) -> None:
        """Every few seconds from the run loop: the same comparison as at start, so a database
        replaced under a running pipeline stops it too. One attempt: while Postgres is down the
        pipeline goes on with what Kafka holds (degraded), and the next tick tries again."""
        import psycopg

        try:
            live: LiveSource = read_live(self._connection(), self.settings.slot_name)
        except psycopg.Error as exc:
            self.close()
            HEALTH.degraded(self.component, "postgres", exc)
            log.warning("source_check_skipped error=%s: tried again at the next tick", exc)
            return
        HEALTH.healthy(self.component, "postgres")
        recorded = Recorded.parse(self.client.hgetall(self.key))
        if recorded is None or judge(recorded.identity, recorded.lsn, live) is not None:
            self.check("run")  # records a missing record; raises with the sentence

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.settings.postgres_conninfo(), autocommit=True, connect_timeout=5
            )
        return self._conn

    # ---- per batch -----------------------------------------------------------------------------
    def new_batch(self) -> None:
        self._refreshed = False

    def implausible(self, position: tuple[int, int]) -> str | None:
        """Why an event at ``position`` (above the known WAL position) cannot be applied; None
        when the source has in fact written that far (the known position is read again, at most
        once per batch)."""
        highest = max(position)
        if highest > self.known_lsn and not self._refreshed:
            self._refreshed = True
            self.known_lsn = max(self.known_lsn, self._postgres(_current_lsn))
        if highest <= self.known_lsn:
            return None
        REFUSALS.labels("implausible_position").inc()
        return (
            f"implausible source position {format_lsn(highest)}: beyond the source's current WAL "
            f"position {format_lsn(self.known_lsn)}, so no database behind these settings wrote "
            f"it (a forged event, or another cluster's); not applied, since it would freeze its "
            f"row. Replay it from the dead-letter topic if the source is right"
        )

    # ---- truncate ------------------------------------------------------------------------------
    def refused_truncate(self, table: str, position: tuple[int, int]) -> str:
        """A TRUNCATE of a captured table arrived: record it, degrade, count; the reason."""
        REFUSALS.labels("truncate").inc()
        text = f"{table} at {format_lsn(max(position))}"
        try:
            self.client.hset(self.key, "truncated", text)
        except redis.RedisError as exc:
            log.warning("truncate not recorded in Redis error=%s", exc)
        self._report_truncated(text)
        return (
            f"TRUNCATE of {table} refused: the features still count its rows. To rebuild, "
            + _REBUILD_HINT.format(ns=self.ns, flag="", what="")
        )

    def _report_truncated(self, text: str) -> None:
        self.truncated = text
        msg = (
            f"table {text} was truncated and the truncate was not applied: features of namespace "
            f"{self.ns} still count its rows. To rebuild, "
            + _REBUILD_HINT.format(ns=self.ns, flag="", what="")
            + "."
        )
        HEALTH.degraded(self.component, "source", msg)
        log.error("source_truncated ns=%s: %s", self.ns, msg)

    # ---- Kafka offsets at assignment -----------------------------------------------------------
    def offsets_out_of_range(
        self, consumer: Consumer, partitions: Iterable[TopicPartition], stored: Mapping[str, int]
    ) -> dict[str, tuple[int, int, int]]:
        """Assigned partitions whose position in Redis is outside the topic's offsets now."""
        ends = {}
        for tp in partitions:
            name = f"{tp.topic}:{tp.partition}"
            if name in stored:
                ends[name] = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        lost = out_of_range(stored, ends)
        if lost:
            REFUSALS.labels("offsets_out_of_range").inc(len(lost))
        return lost


# ---- the rebuild ---------------------------------------------------------------------------------
def drop_state(client: redis.Redis, ns: str, group: str, *, keep: Iterable[str] = ()) -> int:
    """Delete the pipeline's state of a namespace: features, row states, and every key of the
    group (positions, watermarks, expiry indexes, sentinel, source record) but ``keep``. The
    learner's keys are left alone. Returns how many keys went."""
    kept = set(keep)
    gone = 0
    patterns = [f"{ns}:e:*", f"{ns}:r:*", f"{ns}:*{{{group}}}*"]
    if isinstance(client, RedisCluster):  # the cluster layout's keys (cluster_keys), per node
        patterns += [f"{ns}:*}}:{group}", f"{ns}:*}}:{group}:*", f"{ns}:applied:*"]
    for pattern in patterns:
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            if _text(key) in kept:
                continue
            batch.append(key)
            if len(batch) >= 1000:
                gone += int(client.unlink(*batch))
                batch = []
        if batch:
            gone += int(client.unlink(*batch))
    return gone


def rebuild_namespace(
    settings: Settings,
    features: FeatureSet,
    *,
    reset_connector: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """``freshloop features rebuild``: with the namespace's pipelines stopped, start it again
    from the live source. Returns the group's new start offsets (the topics' end)."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import KafkaException
    from confluent_kafka import TopicPartition as Partition

    from connectors import ConnectClient, captured_tables
    from feature_pipelines.cluster_read import layout_client

    ns, group = settings.namespace, f"{settings.namespace}-features"
    client = layout_client(settings, "writer")  # one Redis, or every primary of a cluster
    connect = ConnectClient(settings.connect_url) if reset_connector else None
    try:
        if connect is not None:  # stopped first: no change is written while the ends are read
            connect.stop(settings.connector_name)
            connect.wait_state(settings.connector_name, "STOPPED", wait_s=60)
            echo(f"[rebuild] connector {settings.connector_name} stopped")
        consumer = KafkaConsumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
        try:
            ends = []
            # every captured table: the learning loop's set may read more than ``features``
            for table in captured_tables(features.tables()):
                topic = settings.topic(table)
                meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if meta is None or meta.error is not None:
                    continue
                for p in sorted(meta.partitions):
                    high = consumer.get_watermark_offsets(Partition(topic, p), timeout=10)[1]
                    ends.append(Partition(topic, p, high))
            if ends:  # fails while a consumer of the group runs: they must be stopped
                try:
                    consumer.commit(offsets=ends, asynchronous=False)
                except KafkaException as exc:
                    msg = (
                        f"could not move consumer group {group} to the topics' end ({exc}): "
                        f"stop every 'freshloop features run' of namespace {ns} and run the "
                        f"rebuild again"
                    )
                    raise FeaturePipelineError(msg) from exc
        finally:
            consumer.close()
        gone = drop_state(client, ns, group)
        echo(f"[rebuild] namespace {ns}: {gone} keys dropped; group {group} starts at the end")
        if connect is not None:
            connect.reset_offsets(settings.connector_name)
            connect.resume(settings.connector_name)
            connect.wait_running(settings.connector_name, wait_s=120)
            echo(
                f"[rebuild] connector {settings.connector_name}: offsets reset, running "
                f"(it snapshots the live database again)"
            )
        echo("[rebuild] start 'freshloop features run': it re-reads every current row")
        return {f"{tp.topic}:{tp.partition}": tp.offset for tp in ends}
    finally:
        client.close()
        if connect is not None:
            connect.close()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---- joins on a Redis Cluster ------------------------------------------------------------------
_PRIMARY_KEY = """
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary
ORDER BY array_position(i.indkey, a.attnum)
"""


def primary_keys(
    conn: psycopg.Connection[Any], tables: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """Each table's primary-key columns, in key order (Debezium's message key by default);
    a table without one (or not found) maps to ``()``."""
    return {
        table: tuple(row[0] for row in conn.execute(_PRIMARY_KEY, (table,)).fetchall())
        for table in tables
    }


def unpartitioned_lookups(features: FeatureSet, keys: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The lookups whose two sides are not co-partitioned, one sentence each.

    A lookup meets at the provider's row state (``planner._consume``): the consumer row is
    parked there and the provider's value read from there. On a Redis Cluster row states live
    in the slot of the partition their event came from, so both tables' change events must be
    keyed alike: the consumer table's key is exactly the lookup column, and the provider's key
    is exactly the lookup key, of the same name (Debezium's key is ``{"<column>": value}``, and
    Kafka partitions by those bytes). On one Redis row states are shared by every partition, so
    this holds without it.

    >>> from feature_pipelines.catalog import SAMPLE_FEATURES
    >>> keys = {"payment_outcomes": ("payment_id",), "payments": ("payment_id",)}
    >>> unpartitioned_lookups(SAMPLE_FEATURES, keys)
    []
    >>> len(unpartitioned_lookups(SAMPLE_FEATURES, {**keys, "payment_outcomes": ("outcome_id",)}))
    1
    """
    problems = []
    seen: set[tuple[str, str, str, str]] = set()
    for feature in features:
        lookup = feature.lookup
        if lookup is None:
            continue
        pair = (feature.table, lookup.column, lookup.table, lookup.key)
        if pair in seen:
            continue
        seen.add(pair)
        consumer, provider = keys.get(feature.table, ()), keys.get(lookup.table, ())
        same_key = lookup.column == lookup.key
        if same_key and consumer == (lookup.column,) and provider == (lookup.key,):
            continue
        problems.append(
            f"feature {feature.name} joins {feature.table}.{lookup.column} to "
            f"{lookup.table}.{lookup.key}, but {feature.table}'s change events are keyed by "
            f"({', '.join(consumer) or 'no primary key'}) and {lookup.table}'s by "
            f"({', '.join(provider) or 'no primary key'}): on a Redis Cluster both sides of a "
            f"lookup must be keyed by the join column, under the same name, so that they reach "
            f"the same partition"
        )
    return problems
