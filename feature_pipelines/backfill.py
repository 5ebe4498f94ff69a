"""``freshloop features plan`` / ``apply``: add, change or remove features of a running
namespace, filled from the database, exact (docs/features.md).

``apply`` runs one *generation*:

1. **prepare**: the interim set (``plan.interim_set``: the applied set as it is, the added
   features, each changed one under its shadow name) is written to Redis (``registry``); every
   pipeline of the namespace's consumer group writes the batch it holds, acknowledges, and
   waits.
2. While they wait, the fields the backfill fills (added features, changed ones' shadows) are
   deleted from the entity hashes (left by an apply that did not finish).
3. **go**: a REPEATABLE READ transaction takes snapshot S; the pipelines switch to the interim
   set, and skip the backfilled features for the changes of every transaction S sees. Reads
   still serve the applied set, whose fields the pipelines keep.
4. **backfill**: in that transaction, each table's rows (as S sees them) are read with a
   server-side cursor and turned into increments by the pipeline's own contribution functions
   (``windows.compile_group``: the same fields, buckets and filters as the stream), buckets no
   read at or after the event-time watermark counts left out as the stream leaves them; each
   chunk is added in one atomic step with its progress (``lua/backfill_add.lua``).
5. **swap**: the pipelines pause again; in every entity hash the shadow fields of each changed
   feature replace its old ones and removed features' fields go (``lua/swap_fields.lua``).
6. **switch**: the Redis mirror (one MULTI: reads and pipelines turn to the target set
   together), then the Postgres registry (one transaction) record the target set; the job row
   is done.

Every row version is counted once: by the backfill if S sees it, by the stream if not
(``registry``). A job whose process died cannot go on (its snapshot died with it): the next
``apply`` marks it superseded and runs a new generation, which cleans and fills the same
features again.

On a Redis Cluster (``redis_layout=cluster``, docs/redis-cluster.md) every step that names
entity hashes runs per shard slot: the clean and the swap take the hashes of one slot at a
time (each hash still changes in one atomic step), and each backfill chunk is added shard by
shard, each with its progress mark in that shard's slot (a retried shard adds nothing twice).
The registry's keys share one hash tag, so the switch stays one MULTI.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql
from redis.cluster import RedisCluster

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import KeyLayout, split_entity_key
from feature_pipelines.cluster_read import layout_client
from feature_pipelines.cluster_write import ClusterBatchWriter
from feature_pipelines.exceptions import FeatureApplyError
from feature_pipelines.lua import script
from feature_pipelines.plan import (
    SHADOW,
    FeaturePlan,
    definition,
    feature_from,
    fingerprint,
    interim_set,
    plan_changes,
    shadow_name,
)
from feature_pipelines.registry import (
    Hidden,
    Snapshot,
    acks_key,
    applied_from_redis,
    defs_json,
    generation_key,
    hidden_from_json,
    hidden_to_json,
    write_applied,
)
from feature_pipelines.spec import Feature
from feature_pipelines.store_write import RedisBatchWriter
from feature_pipelines.windows import compile_group
from freshloop.core.settings import Settings

__all__ = ["ApplyReport", "applied_set", "apply_features", "plan_features"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # rows done, rows in all


@dataclass(frozen=True)
class ApplyReport:
    """What one ``apply`` did."""

    generation: int
    plan: FeaturePlan
    rows: int = 0  # rows read by the backfill
    entities: int = 0  # entity hashes it added to
    fields_cleaned: int = 0
    snapshot: str = ""
    pause_ms: float = 0.0  # how long the pipelines waited
    seconds: float = 0.0
    note: str = ""


def applied_set(
    conn: psycopg.Connection, client: redis.Redis, ns: str
) -> tuple[FeatureSet | None, str]:
    """The namespace's applied definitions and where they come from: the Postgres registry,
    else what its pipelines recorded in Redis (``pipeline``), else nothing (``none``)."""
    rows = conn.execute(
        "SELECT definition FROM freshloop_feature_registry WHERE namespace = %s ORDER BY name",
        (ns,),
    ).fetchall()
    if rows:
        return FeatureSet.of(feature_from(r[0]) for r in rows), "registry"
    found, source = applied_from_redis(client, ns)
    return found, (source or "none")


def plan_features(settings: Settings, declared: FeatureSet) -> tuple[FeaturePlan, str]:
    """The plan from the namespace's applied set to ``declared``, and the applied set's
    origin (``registry``, ``pipeline``, ``apply`` or ``none``)."""
    client = layout_client(settings, "reader")  # one Redis or a cluster (redis_layout)
    try:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
            applied, origin = applied_set(conn, client, settings.namespace)
    finally:
        client.close()
    return plan_changes(applied or (), declared), origin


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _members(admin: Any, group: str) -> set[str]:
    """Member ids of the consumer group now (none when it has no member)."""
    from confluent_kafka import KafkaException

    try:
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException as exc:
        msg = f"cannot describe consumer group {group} ({exc}): is Kafka up?"
        raise FeatureApplyError(msg) from exc
    return {m.member_id for m in found.members}


def _value(value: Any) -> Any:
    """A column value as Debezium's JSON sends it (decimal.handling.mode=string, adaptive
    time): what the pipeline's contribution functions read."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days
    return str(value)


class _Job:
    """The job row of one generation (progress, snapshot, how it ended)."""

    def __init__(
        self, conn: psycopg.Connection, ns: str, generation: int, plan: FeaturePlan
    ) -> None:
        self.conn = conn
        row = conn.execute(
            "INSERT INTO freshloop_feature_jobs (namespace, generation, state, plan) "
            "VALUES (%s, %s, 'running', %s) RETURNING id",
            (ns, generation, orjson.dumps(plan.to_dict()).decode()),
        ).fetchone()
        assert row is not None  # noqa: S101 - RETURNING gives one row
        self.id = int(row[0])
        self._next_note = 0.0

    def update(self, **values: Any) -> None:
        sets = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
        )
        self.conn.execute(
            sql.SQL(
                "UPDATE freshloop_feature_jobs SET {}, updated_at = now() WHERE id = {}"
            ).format(sets, sql.Literal(self.id)),
            values,
        )

    def progress(self, done: int, total: int) -> None:
        if time.monotonic() >= self._next_note or done >= total:
            self._next_note = time.monotonic() + 1.0
            self.update(rows_done=done, rows_total=total)

    def end(self, state: str, detail: str = "") -> None:
        self.conn.execute(
            "UPDATE freshloop_feature_jobs SET state = %s, detail = %s, updated_at = now(), "
            "finished_at = now() WHERE id = %s",
            (state, detail, self.id),
        )


def _record(
    conn: psycopg.Connection,
    client: redis.Redis,
    ns: str,
    features: FeatureSet,
    generation: int,
    hidden: Hidden | None = None,
) -> None:
    """The switch: ``features`` become the applied set in Redis (one MULTI: what reads and
    pipelines follow, with the generation done), then in the Postgres registry (one
    transaction). Redis first: a process ending between the two leaves the registry on the
    old set, so the next ``apply`` plans the same changes again and fills them anew."""
    pipe = client.pipeline(transaction=True)
    write_applied(pipe, ns, features, "apply", generation)
    pipe.hset(generation_key(ns), mapping={"state": "done", "target": defs_json(features)})
    if hidden is not None:
        pipe.hset(generation_key(ns), "hidden", hidden_to_json(hidden))
    pipe.hsetnx(generation_key(ns), "gen", generation)
    pipe.execute()
    with conn.transaction():
        conn.execute("DELETE FROM freshloop_feature_registry WHERE namespace = %s", (ns,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO freshloop_feature_registry "
                "(namespace, name, fingerprint, definition, generation) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    (ns, f.name, fingerprint(f), orjson.dumps(definition(f)).decode(), generation)
                    for f in features
                ],
            )


def _entity_keys(client: Any, ns: str) -> Iterable[list[str]]:
    """The namespace's entity hashes in batches of up to 500 that one script may name: any
    on one Redis; of one slot on a Redis Cluster (a SCAN of every primary)."""
    if isinstance(client, RedisCluster):
        by_slot: dict[int, list[str]] = defaultdict(list)
        for key in client.scan_iter(match=f"{ns}:e:*", count=1000):
            name = _text(key)
            batch = by_slot[client.keyslot(name)]
            batch.append(name)
            if len(batch) >= 500:
                yield batch.copy()
                batch.clear()
        yield from (batch for batch in by_slot.values() if batch)
        return
    batch = []
    for key in client.scan_iter(match=f"{ns}:e:*", count=1000):
        batch.append(_text(key))
        if len(batch) >= 500:
            yield batch
            batch = []
    if batch:
        yield batch


class _Apply:
    """One generation of ``apply_features`` (see the module's steps)."""

    def __init__(
        self,
        settings: Settings,
        declared: FeatureSet,
        group: str,
        echo: Callable[[str], None],
        on_progress: Progress | None,
        chunk_rows: int,
    ) -> None:
        self.settings = settings
        self.declared = declared
        self.ns = settings.namespace
        self.group = group
        self.echo = echo
        self.on_progress = on_progress
        self.chunk_rows = chunk_rows
        self.client = layout_client(settings, "writer")  # one Redis or a cluster
        self.keys = KeyLayout(self.ns, group, settings.redis_layout, settings.redis_cluster_shards)
        self.partitions = settings.topic_partitions
        self.gen_key = generation_key(self.ns)
        # what the pipelines compute until the switch (``plan.interim_set``)
        self.interim = declared

    def _refresh(self) -> None:
        """Keep the waiting pipelines waiting (they go on by themselves past the deadline)."""
        self.client.hset(self.gen_key, "deadline_ms", _now_ms() + 15_000)

    def _wait_acks(self, generation: int, phase: str, ack_timeout_s: float) -> int:
        """Wait until every member of the group acknowledged ``phase``; their number."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})
        deadline = time.monotonic() + ack_timeout_s
        while True:
            members = _members(admin, self.group)
            acked = {_text(k) for k in self.client.hkeys(acks_key(self.ns, generation, phase))}
            if members <= acked:
                return len(members)
            if time.monotonic() >= deadline:
                self.client.hset(self.gen_key, "state", "aborted")
                msg = (
                    f"{len(members - acked)} pipeline(s) of consumer group {self.group} did not "
                    f"acknowledge the {phase} of generation {generation} within "
                    f"{ack_timeout_s:.0f} s: are they running this version (they must know "
                    "'apply')? Reads still see the applied set; restart them and run apply again"
                )
                raise FeatureApplyError(msg)
            self._refresh()
            time.sleep(0.02)

    # ---- 1. prepare -----------------------------------------------------------------------
    def prepare(self, generation: int, ack_timeout_s: float) -> float:
        """Publish the interim set and wait until every member of the group acknowledged;
        returns when the wait started (perf counter)."""
        old = self.client.hget(self.gen_key, "hidden")
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.gen_key)
        pipe.hset(
            self.gen_key,
            mapping={
                "gen": generation,
                "state": "prepare",
                "target": defs_json(self.interim),
                "hidden": old or b"[]",
                "prepared_ms": _now_ms(),
                "deadline_ms": _now_ms() + 15_000,
            },
        )
        pipe.execute()
        started = time.perf_counter()
        members = self._wait_acks(generation, "prepare", ack_timeout_s)
        self.echo(f"[apply] generation {generation}: {members} pipeline(s) waiting")
        return started

    # ---- 2. clean -------------------------------------------------------------------------
    def clean(self, names: Iterable[str]) -> int:
        """Delete the fields of ``names`` from every entity hash of the namespace."""
        wanted = sorted(set(names))
        if not wanted:
            return 0
        run = self.client.register_script(script("clean_fields"))
        gone = 0
        for keys in _entity_keys(self.client, self.ns):
            gone += int(run(keys=keys, args=wanted))
            self._refresh()
        return gone

    # ---- 3. go and 4. backfill ------------------------------------------------------------
    def backfill(
        self, generation: int, backfilled: tuple[str, ...], job: _Job, report: dict[str, Any]
    ) -> None:
        rr = psycopg.connect(self.settings.postgres_conninfo())
        rr.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        rr.read_only = True
        try:
            with rr.transaction():
                row = rr.execute("SELECT pg_current_snapshot()::text").fetchone()
                assert row is not None  # noqa: S101 - one row
                snapshot = Snapshot.parse(row[0])
                rr.execute("SET LOCAL TIME ZONE 'UTC'")
                old = hidden_from_json(self.client.hget(self.gen_key, "hidden"))
                names = frozenset(backfilled)
                hidden = tuple((s, n - names) for s, n in old if n - names)
                if names:
                    hidden += ((snapshot, names),)
                self.client.hset(
                    self.gen_key,
                    mapping={
                        "state": "go",
                        "snapshot": snapshot.text(),
                        "hidden": hidden_to_json(hidden),
                    },
                )
                report["pause_ms"] = (time.perf_counter() - report["pause_started"]) * 1000
                report["snapshot"] = snapshot.text()
                job.update(snapshot=snapshot.text())
                self.echo(
                    f"[apply] snapshot {snapshot.text()}: pipelines switched after "
                    f"{report['pause_ms']:.0f} ms; backfilling {', '.join(backfilled) or '-'}"
                )
                if names:
                    self._fill(
                        rr, generation, [self.interim.by_name(n) for n in backfilled], job, report
                    )
        finally:
            rr.close()

    def _fill(
        self,
        rr: psycopg.Connection,
        generation: int,
        features: list[Feature],
        job: _Job,
        report: dict[str, Any],
    ) -> None:
        marks, ttl_of = self._marks_and_ttls()
        watermark = max((newest for newest, _first in marks.values()), default=0)
        by_table: dict[str, list[Feature]] = defaultdict(list)
        for f in features:
            by_table[f.table].append(f)
        plans = []
        total = 0
        for table, feats in sorted(by_table.items()):
            query, params = _rows_query(table, feats, watermark)
            count = sql.SQL("SELECT count(*) FROM ({}) AS q").format(query)
            row = rr.execute(count, params).fetchone()
            n = int(row[0]) if row else 0
            plans.append((table, feats, query, params, n))
            total += n
        job.update(rows_total=total)
        progress_key = f"{self.ns}:features:backfill:{generation}"
        add = self.client.register_script(script("backfill_add"))
        progress_keys = set() if self.keys.cluster else {progress_key}  # a cluster: per shard
        done = 0
        touched: set[str] = set()
        for table, feats, query, params, _n in plans:
            groups = _groups(feats)
            bounds = _bounds(feats, watermark)
            columns = sorted(_columns(feats))
            with rr.cursor(name=f"backfill_{table}") as cur:
                cur.itersize = self.chunk_rows
                cur.execute(query, params)
                chunk = 0
                while True:
                    rows = cur.fetchmany(self.chunk_rows)
                    if not rows:
                        break
                    increments = _increments(self.ns, columns, rows, groups, bounds)
                    done += len(rows)
                    if self.keys.cluster:  # shard by shard, each with its own progress
                        progress_keys |= self._add_per_shard(
                            add, progress_key, table, chunk, done, increments, ttl_of
                        )
                    else:
                        keys, args = _add_args(progress_key, table, chunk, done, increments, ttl_of)
                        add(keys=keys, args=args)
                    touched.update(increments)
                    chunk += 1
                    job.progress(done, total)
                    if self.on_progress is not None:
                        self.on_progress(done, total)
        for key in progress_keys:
            self.client.pexpire(key, 7 * 86_400_000)
        job.progress(total, total)
        report["rows"] = done
        report["entities"] = len(touched)

    def _marks_and_ttls(self) -> tuple[dict[int, tuple[int, int]], Mapping[str, int]]:
        """The pipelines' stored watermarks (partition -> newest, first) and their entity
        expiry per kind, as the writer of the layout keeps them."""
        if self.keys.cluster:
            cluster = ClusterBatchWriter(self.client, self.interim, self.keys)
            marks: dict[int, tuple[int, int]] = {}
            for p in range(self.partitions):
                marks.update(cluster.watermarks(p))
            return marks, cluster._ttl_ms  # noqa: SLF001 - the pipeline's own expiry per kind
        writer = RedisBatchWriter(self.client, self.interim, self.ns, self.group)
        return writer.watermarks(), writer._ttl_ms  # noqa: SLF001

    def _add_per_shard(
        self,
        add: Any,
        progress_key: str,
        table: str,
        chunk: int,
        done: int,
        increments: Mapping[str, Mapping[str, int]],
        ttl_of: Mapping[str, int],
    ) -> set[str]:
        """One chunk on a Redis Cluster: one ``backfill_add`` per shard slot it touches, each
        with the chunk's progress in a hash of that slot; the progress keys written."""
        by_shard: dict[int, dict[str, Mapping[str, int]]] = defaultdict(dict)
        for name, fields in increments.items():
            by_shard[self.keys.shard_of(*split_entity_key(name))][name] = fields
        written = set()
        for shard, part in sorted(by_shard.items()):
            progress = f"{progress_key}:{self.keys.shard_tag(shard)}"
            keys, args = _add_args(progress, table, chunk, done, part, ttl_of)
            keys[1:] = [self.keys.entity(*split_entity_key(k)) for k in keys[1:]]
            add(keys=keys, args=args)
            written.add(progress)
        return written

    # ---- 5. swap ----------------------------------------------------------------------------
    def swap(
        self, generation: int, changed: list[str], removed: list[str], ack_timeout_s: float
    ) -> tuple[int, Hidden]:
        """Pause the pipelines again, then in every entity hash put each changed feature's
        shadow fields in place of its old ones and delete the removed features' fields; the
        fields deleted, and the generation's hidden features under their own names."""
        hidden = hidden_from_json(self.client.hget(self.gen_key, "hidden"))
        renamed = {shadow_name(n): n for n in changed}
        hidden = tuple(
            (snap, frozenset(renamed.get(n, n) for n in names)) for snap, names in hidden
        )
        if not changed and not removed:
            return 0, hidden
        self.client.hset(self.gen_key, mapping={"state": "swap", "deadline_ms": _now_ms() + 15_000})
        started = time.perf_counter()
        self._wait_acks(generation, "swap", ack_timeout_s)
        run = self.client.register_script(script("swap_fields"))
        args: list[str | int] = [SHADOW, len(changed), *changed, *removed]
        gone = 0
        for keys in _entity_keys(self.client, self.ns):
            gone += int(run(keys=keys, args=args))
            self._refresh()
        self.echo(
            f"[apply] switched {', '.join(changed + removed)} in every entity; pipelines "
            f"paused {(time.perf_counter() - started) * 1000:.0f} ms"
        )
        return gone, hidden


def _rows_query(
    table: str, features: list[Feature], watermark_us: int
) -> tuple[sql.Composed, dict[str, Any]]:
    """The rows of ``table`` the features read, as the transaction's snapshot sees them; when
    every one is windowed over one event-time column, only rows of buckets a read at or after
    the watermark may count (a bucket of margin; the exact rule is ``_bounds``)."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in sorted(_columns(features)))
    query = sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(table))
    params: dict[str, Any] = {}
    times = {f.event_time for f in features}
    if watermark_us and len(times) == 1 and all(f.window is not None for f in features):
        lo = min(
            ((watermark_us - f.window_seconds * 1_000_000) // (f.bucket_seconds * 1_000_000))
            * f.bucket_seconds
            for f in features
        )
        params["lo"] = lo
        query = sql.SQL("{} WHERE {} >= to_timestamp({})").format(
            query, sql.Identifier(times.pop()), sql.Placeholder("lo")
        )
    return query, params


def _columns(features: Iterable[Feature]) -> set[str]:
    out: set[str] = set()
    for f in features:
        out |= f.columns()
    return out


def _groups(features: list[Feature]) -> list[tuple[str, str, Any]]:
    """(entity, key column, contribution function) per entity of ``features`` (the planner's
    grouping)."""
    by_entity: dict[tuple[str, str], list[Feature]] = defaultdict(list)
    for f in features:
        by_entity[(f.entity.name, f.entity.key)].append(f)
    return [(e, k, compile_group(tuple(fs))) for (e, k), fs in by_entity.items()]


def _bounds(features: list[Feature], watermark_us: int) -> dict[str, int]:
    """Per windowed feature, the highest bucket no read at or after the watermark counts."""
    if not watermark_us:
        return {}
    return {
        f.name: (watermark_us - f.window_seconds * 1_000_000) // (f.bucket_seconds * 1_000_000)
        for f in features
        if f.window is not None
    }


def _increments(
    ns: str,
    columns: list[str],
    rows: list[tuple[Any, ...]],
    groups: list[tuple[str, str, Any]],
    bounds: Mapping[str, int],
) -> dict[str, dict[str, int]]:
    """Entity key -> field -> amount that ``rows`` add (live buckets only)."""
    out: dict[str, dict[str, int]] = {}
    for raw in rows:
        row = {c: _value(v) for c, v in zip(columns, raw, strict=True)}
        memo: dict[Any, int] = {}
        for entity, column, contribute in groups:
            key = row[column]
            if key is None:
                continue
            pairs = contribute(row, memo)
            if not pairs:
                continue
            incr = out.setdefault(f"{ns}:e:{{{entity}:{key}}}", {})
            for name, amount in pairs:
                head, sep, rest = name.partition("@")
                if sep and bounds:
                    bound = bounds.get(head.partition(":")[0])
                    if bound is not None and int(rest.partition("#")[0]) <= bound:
                        continue
                incr[name] = incr.get(name, 0) + amount
    return out


def _add_args(
    progress_key: str,
    table: str,
    chunk: int,
    done: int,
    increments: Mapping[str, Mapping[str, int]],
    ttl_of: Mapping[str, int],
) -> tuple[list[str], list[Any]]:
    keys: list[str] = [progress_key]
    args: list[Any] = [table, chunk, done]
    for ekey, fields in increments.items():
        nonzero = [(k, v) for k, v in fields.items() if v]
        if not nonzero:
            continue
        entity = ekey.split("{", 1)[1].split(":", 1)[0]
        keys.append(ekey)
        args += [ttl_of.get(entity, 0), len(nonzero)]
        for name, amount in nonzero:
            args += [name, amount]
    return keys, args


def _check_missed(client: redis.Redis, gen_key: str, generation: int) -> None:
    missed = client.hget(gen_key, "missed")
    if missed:
        msg = (
            f"pipeline {_text(missed)} went past a boundary of generation {generation} without "
            "acknowledging it: run apply again"
        )
        raise FeatureApplyError(msg)


def apply_features(
    settings: Settings,
    declared: FeatureSet,
    *,
    group: str | None = None,
    echo: Callable[[str], None] = print,
    on_progress: Progress | None = None,
    ack_timeout_s: float = 60.0,
    chunk_rows: int = 5000,
) -> ApplyReport:
    """Make ``declared`` the applied set of the namespace, backfilling what it adds or changes
    while the pipelines (consumer ``group``, default ``<ns>-features``) keep running."""
    started = time.perf_counter()
    ns = settings.namespace
    group = group or f"{ns}-features"
    run = _Apply(settings, declared, group, echo, on_progress, chunk_rows)
    client = run.client
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        locked = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext('freshloop features apply ' || %s))", (ns,)
        ).fetchone()
        if not locked or not locked[0]:
            msg = f"another 'freshloop features apply' of namespace {ns} is running: wait for it"
            raise FeatureApplyError(msg)
        applied, origin = applied_set(conn, client, ns)
        plan = plan_changes(applied or (), declared)
        if plan.blocked:
            reasons = "; ".join(f"{c.name}: {c.blocked}" for c in plan.blocked)
            msg = f"apply cannot do this plan ({reasons}); nothing was changed"
            raise FeatureApplyError(msg)
        stale = conn.execute(
            "UPDATE freshloop_feature_jobs SET state = 'superseded', finished_at = now(), "
            "detail = 'its process ended before it finished' "
            "WHERE namespace = %s AND state = 'running' RETURNING generation",
            (ns,),
        ).fetchall()
        row = conn.execute(
            "SELECT coalesce(max(generation), 0) FROM freshloop_feature_jobs WHERE namespace = %s",
            (ns,),
        ).fetchone()
        in_redis = client.hget(run.gen_key, "gen")
        generation = max(int(row[0]) if row else 0, int(in_redis or 0)) + 1
        state = _text(client.hget(run.gen_key, "state") or b"")
        unfinished = state in ("prepare", "go", "swap", "aborted")
        if applied is None:
            # nothing ever ran here: the pipelines build every feature from their start
            _record(conn, client, ns, declared, generation)
            return ApplyReport(generation, plan, note="no applied set yet: recorded as applied")
        if plan.empty and not stale and not unfinished:
            if origin != "registry":
                _record(conn, client, ns, declared, generation - 1 if in_redis else generation)
            return ApplyReport(generation - 1, plan, note="nothing to apply")
        run.interim = interim_set(applied, plan)
        # features a generation that did not finish may have made the pipelines compute, which
        # this one does not: their fields are cleaned
        running: set[str] = set()
        if unfinished:
            target = orjson.loads(client.hget(run.gen_key, "target") or b"[]")
            running = {str(d["name"]) for d in target} - {f.name for f in run.interim}
        # backfilled under the names the interim set computes them (a changed one: its shadow)
        changed = [c.name for c in plan.of("change")]
        stored = tuple(shadow_name(n) if n in changed else n for n in plan.backfilled)
        if stale:
            echo(f"[apply] generation(s) {', '.join(str(r[0]) for r in stale)} superseded")
        job = _Job(conn, ns, generation, plan)
        report: dict[str, Any] = {}
        try:
            report["pause_started"] = run.prepare(generation, ack_timeout_s)
            cleaned = run.clean([*stored, *running])
            run.backfill(generation, stored, job, report)
            _check_missed(client, run.gen_key, generation)
            removed = [c.name for c in plan.of("remove")]
            swapped, hidden = run.swap(generation, changed, removed, ack_timeout_s)
            cleaned += swapped
            _check_missed(client, run.gen_key, generation)
            _record(conn, client, ns, declared, generation, hidden)
        except BaseException as exc:
            job.end("failed", str(exc)[:500])
            if _text(client.hget(run.gen_key, "state") or b"") in ("prepare", "swap"):
                client.hset(run.gen_key, "state", "aborted")
            raise
        job.end("done")
        seconds = time.perf_counter() - started
        log.info(
            "features_applied ns=%s generation=%d rows=%d seconds=%.1f",
            ns,
            generation,
            report.get("rows", 0),
            seconds,
        )
        return ApplyReport(
            generation,
            plan,
            rows=report.get("rows", 0),
            entities=report.get("entities", 0),
            fields_cleaned=cleaned,
            snapshot=report.get("snapshot", ""),
            pause_ms=report.get("pause_ms", 0.0),
            seconds=seconds,
        )
