"""``make month``: a simulated month of event time on this machine, proving state is bounded.

An isolated loop (a Postgres database, connector, slot, topics and Redis namespace of its own,
removed afterwards) runs the feature pipeline with scoring (``learn serve``), the learner
(``learn run``) and the drift scheduler (``drift run``) as separate processes, while the writer
stamps ``created_at`` / ``reported_at`` ``--scale`` times faster than the wall clock (2,160x: a
day in 40 s, 30 days in 20 min), the span ending about now. Once per simulated day it samples
Redis (used_memory, the namespace's keys and bytes per class, the largest customer and merchant
hash, bucket fields past their window), each process's RSS, the learner's newest checkpoint, the
database's table sizes and the slot's retained WAL. At the end: ``features verify`` over every
entity, every outcome learned exactly once, a ``flat`` verdict per curve (``month_curves``), and
``bench/results/month.json`` plus ``docs/state.md`` (``month_report``).

    python -m bench.month --days 30            # make month
    python -m bench.month --days 3             # the CI shape (tests/system/test_month.py)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql

from bench.common import drop_layout_keys, machine, redis_servers, save
from bench.month_curves import (
    DAY_S,
    curves_of,
    expired_fields,
    key_class,
    settle_days,
    verdict,
)
from freshloop.core.settings import Settings
from freshloop.simulate import EventClock, SimulationReport, WorkloadConfig, run_simulation

__all__ = ["MonthConfig", "main", "run_month"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MonthConfig:
    days: float = 30.0
    scale: float = 2160.0  # event seconds per wall second: 30 days in 20 minutes
    # payments per wall second: 4,000 a simulated day, so nearly every customer has paid (and
    # holds its lifetime features) well before the judged span: the key count settles too
    rate: float = 100.0
    customers: int = 20_000
    merchants: int = 500
    outcome_share: float = 0.02
    seed: int = 17
    last_days: float = 10.0  # the verdict's span
    tolerance: float = 0.05
    keep: bool = False  # keep the database, topics and keys afterwards (to look at them)


@dataclass
class Month:
    """One run's isolated loop: settings, child processes and what was sampled."""

    settings: Settings
    logdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)


# ---- the isolated loop ------------------------------------------------------------------------
def _isolated(base: Settings, tag: str) -> Settings:
    dsn = base.postgres_dsn.rsplit("/", 1)[0] + f"/freshloop_month_{tag}"
    return base.model_copy(
        update={
            "postgres_dsn": dsn,
            "topic_prefix": f"m{tag}",
            "connector_name": f"month-{tag}",
            "redis_namespace": f"m{tag}",
            "predictions_topic": None,
            "metrics_port": 0,
            "learner_start": "earliest",
            # retention as a deployment would set it, scaled so a month shows it: examples
            # kept a week of event time; the count-kept tables' limits below what 20 minutes
            # of scheduled checks write, pruned every 10 wall seconds (decisions in event time)
            "retention_examples_days": 7,
            "retention_interval_s": 10.0,
            "retention_drift_reports_keep": 10,
            "retention_retrains_keep": 5,
            "retention_models_keep": 3,
            "drift_interval_s": 20.0,
            # a learner checkpoints every 30 wall seconds or 1,000 examples; at 2,160x that is
            # 1,000 examples (6 hours of event time), where a real month checkpoints every few
            # examples: 100 keeps what waits on a checkpoint (logged predictions already
            # learned) near what a real month holds
            "checkpoint_every_examples": 100,
        }
    )


@contextmanager
def isolated_loop(base: Settings, keep: bool = False) -> Iterator[Settings]:
    """A database, connector (and slot), topics and Redis namespace of its own; removed after."""
    from connectors import ConnectClient, apply_connector, captured_tables
    from freshloop.core.db import init_database
    from online_learning import SCORING_FEATURES

    tag = uuid.uuid4().hex[:8]
    settings = _isolated(base, tag)
    dbname = settings.postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(base.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        tables = captured_tables(SCORING_FEATURES.tables())  # what 'learn serve' reads
        init_database(settings, capture=tables)
        apply_connector(settings, tables=tables)
        yield settings
    finally:
        if not keep:
            with ConnectClient(settings.connect_url) as client:
                client.delete(settings.connector_name)
            _drop_slot(base, settings.slot_name)
            admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
            mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"m{tag}.")]
            if mine:
                for future in admin.delete_topics(mine).values():
                    future.result(timeout=30)
            drop_layout_keys(settings, f"{settings.namespace}:*")
            with psycopg.connect(base.postgres_conninfo(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(dbname)
                    )
                )


def _drop_slot(base: Settings, slot: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(base.postgres_conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is None:
                return
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return
            time.sleep(0.5)


def _spawn(month: Month, name: str, *args: str) -> None:
    log = (month.logdir / f"{name}.log").open("ab")
    month.procs[name] = subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "--log-level", "WARNING", *args],
        env=month.settings.environment(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait(check: Any, timeout: float, what: str, month: Month | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if month is not None:
            dead = [n for n, p in month.procs.items() if p.poll() is not None]
            if dead:
                msg = f"{', '.join(dead)} exited while waiting for {what}: {_tail(month, dead)}"
                raise RuntimeError(msg)
        time.sleep(0.5)
    msg = f"timed out after {timeout:.0f}s waiting for {what}"
    raise RuntimeError(msg)


def _tail(month: Month, names: list[str]) -> str:
    return " | ".join(
        (month.logdir / f"{n}.log").read_text(errors="replace")[-1500:] for n in names
    )


def start_processes(month: Month) -> None:
    s = month.settings
    _spawn(month, "learner", "learn", "run")
    _wait(lambda: _checkpoint(s) is not None, 120, "the learner's first checkpoint", month)
    _spawn(month, "pipeline", "learn", "serve")
    servers = redis_servers(s)
    _wait(
        lambda: any(server.keys(f"{s.namespace}:epoch:*") for server in servers),
        120,
        "the scorer",
        month,
    )
    _spawn(month, "drift", "drift", "run")


def stop_processes(month: Month) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for proc in month.procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in month.procs.items():
        try:
            codes[name] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait(timeout=10)
    return codes


# ---- sampling ----------------------------------------------------------------------------------
def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _checkpoint(s: Settings) -> tuple[int, int] | None:
    """(bytes, examples learned) of the learner's newest checkpoint row."""
    with psycopg.connect(s.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT octet_length(model_blob) + octet_length(snapshot) "
            "+ pg_column_size(offsets) + pg_column_size(status), n_learned "
            "FROM learner_checkpoints WHERE namespace = %s ORDER BY checkpoint_id DESC LIMIT 1",
            (s.namespace,),
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


_TABLE_SIZES = """
SELECT c.relname,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)
               FROM pg_partition_tree(c.oid) AS t)
       ELSE pg_total_relation_size(c.oid) END::bigint
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""


def _postgres(s: Settings) -> dict[str, float]:
    out: dict[str, float] = {}
    with psycopg.connect(s.postgres_conninfo()) as conn:
        for name, size in conn.execute(_TABLE_SIZES):
            out[f"pg.{name}"] = int(size)
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (s.slot_name,),
        ).fetchone()
    out["wal.retained_bytes"] = None if row is None else int(row[0])  # type: ignore[assignment]
    return out


def _windows(entity: str) -> dict[str, tuple[int, int]]:
    from online_learning import SCORING_FEATURES

    return {
        f.name: (f.window_seconds, f.bucket_seconds)
        for f in SCORING_FEATURES.for_entity(entity)
        if f.window is not None
    }


def _redis(s: Settings, event_s: float) -> dict[str, float]:
    """used_memory, keys and bytes per class, the largest hashes, bucket fields past window;
    on a Redis Cluster, summed over its primaries (each key read on the primary that holds it)."""
    ns = s.namespace
    servers = redis_servers(s)
    out: dict[str, float] = {
        "redis.used_memory": sum(int(c.info("memory")["used_memory"]) for c in servers)
    }
    counts: Counter[str] = Counter()
    used: Counter[str] = Counter()
    largest: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    stale: Counter[str] = Counter()
    windows = {e: _windows(e) for e in ("customer", "merchant")}
    for client in servers:
        keys = [k.decode() for k in client.scan_iter(match=f"{ns}:*", count=2000)]
        _census(client, ns, keys, windows, event_s, (counts, used, largest, stale))
    out["redis.namespace_bytes"] = sum(used.values())
    for cls in counts:
        out[f"redis.keys.{cls}"] = counts[cls]
        out[f"redis.bytes.{cls}"] = used[cls]
    for entity in ("customer", "merchant"):
        b, n = largest[entity]
        out[f"hash.{entity}.max_bytes"] = b
        out[f"hash.{entity}.max_fields"] = n
        out[f"hash.{entity}.expired_fields"] = stale[entity]
    return out


def _census(
    client: Any,
    ns: str,
    keys: list[str],
    windows: dict[str, dict[str, tuple[int, int]]],
    event_s: float,
    into: tuple[Counter[str], Counter[str], dict[str, tuple[int, int]], Counter[str]],
) -> None:
    """Add the sizes and fields of ``keys`` (all on ``client``'s server) to ``into``."""
    counts, used, largest, stale = into
    for i in range(0, len(keys), 1000):
        chunk = keys[i : i + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
        entity_keys = [k for k in chunk if key_class(ns, k).startswith("e:{")]
        pipe = client.pipeline(transaction=False)
        for key in entity_keys:
            pipe.hkeys(key)
        fields = dict(zip(entity_keys, pipe.execute(), strict=True))
        for key, size in zip(chunk, sizes, strict=True):
            cls = key_class(ns, key)
            counts[cls] += 1
            used[cls] += int(size or 0)
            if key in fields:
                entity = cls[3:]
                names = [f.decode() for f in fields[key]]
                b, n = largest[entity]
                largest[entity] = (max(b, int(size or 0)), max(n, len(names)))
                # a day of slack: the sweeper works in batches, a sample is a snapshot
                stale[entity] += expired_fields(names, windows.get(entity, {}), event_s, DAY_S)


def sample(month: Month, day: float, clock: EventClock | None, wall_s: float) -> dict[str, Any]:
    s = month.settings
    event_s = clock.event_seconds(wall_s) if clock is not None else 0.0
    watermark_s = (clock.at(event_s).timestamp()) if clock is not None else time.time()
    values: dict[str, Any] = {}
    values.update(_redis(s, watermark_s))
    for name, proc in month.procs.items():
        values[f"rss.{name}"] = _rss_bytes(proc.pid) if proc.poll() is None else None
    checkpoint = _checkpoint(s)
    values["checkpoint.bytes"] = None if checkpoint is None else checkpoint[0]
    values.update(_postgres(s))
    point = {"day": round(day, 3), "wall_s": round(wall_s, 1), "values": values}
    if checkpoint is not None:
        point["n_learned"] = checkpoint[1]
    month.samples.append(point)
    print(
        f"[month] day {day:5.2f}  redis ns {values['redis.namespace_bytes'] / 1e6:7.2f} MB  "
        f"keys {sum(v for k, v in values.items() if k.startswith('redis.keys.')):>7}  "
        f"pipeline {(values.get('rss.pipeline') or 0) / 1e6:6.1f} MB  "
        f"learner {(values.get('rss.learner') or 0) / 1e6:6.1f} MB  "
        f"wal {(values.get('wal.retained_bytes') or 0) / 1e6:6.1f} MB",
        flush=True,
    )
    return point


class DailySampler:
    """Samples at each simulated day boundary of the writer's event clock, in a thread."""

    def __init__(self, month: Month, days: float) -> None:
        self.month = month
        self.days = days
        self.clock: EventClock | None = None
        self.started: float | None = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def on_start(self, clock: EventClock | None, started: float) -> None:
        self.clock, self.started = clock, started
        self.ready.set()

    def _run(self) -> None:
        try:
            self.ready.wait()
            assert self.clock is not None and self.started is not None  # noqa: S101
            day = 0
            while day <= self.days and not self.done.is_set():
                due = self.started + self.clock.wall_seconds(day * DAY_S)
                if self.done.wait(max(0.0, due - time.monotonic())):
                    return
                # labelled with the simulated day it is taken at: on a busy machine a sample
                # can take longer than a simulated day, and the next one is then the next
                # whole day still ahead, not a backlog of late ones
                wall_s = time.monotonic() - self.started
                at_day = round(self.clock.event_seconds(wall_s) / DAY_S, 2)
                sample(self.month, at_day, self.clock, wall_s)
                day = max(day + 1, math.floor(at_day) + 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the harness
            self.errors.append(exc)


# ---- the end checks ---------------------------------------------------------------------------
def lag(s: Settings) -> int:
    """Change events on the topics not yet applied by the pipeline (its offsets in Redis)."""
    from feature_pipelines.cluster_keys import KeyLayout
    from feature_pipelines.cluster_read import layout_client

    client = layout_client(s, "writer")
    keys = KeyLayout(s.namespace, f"{s.namespace}-features", s.redis_layout)
    stored = {
        k.decode(): int(v)
        # one hash on one Redis, one per partition's slot on a cluster
        for name in dict.fromkeys(keys.offsets(p) for p in range(s.topic_partitions))
        for k, v in client.hgetall(name).items()
    }
    probe = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "month-probe"})
    total = 0
    try:
        for table in ("payments", "payment_outcomes"):
            topic = s.topic(table)
            for p in probe.list_topics(topic, timeout=10).topics[topic].partitions:
                high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                total += max(0, high - stored.get(f"{topic}:{p}", 0))
    finally:
        probe.close()
    return total


def verify_features(s: Settings, clock: EventClock | None) -> dict[str, Any]:
    """``features verify`` over every entity of the run's database, at event time if it can."""
    from feature_pipelines import verify_until_clean
    from feature_pipelines.cluster_read import store_for
    from online_learning import SCORING_FEATURES

    store = store_for(s, SCORING_FEATURES)
    # at the event-time watermark (the newest event time written), retried while the pipeline
    # catches up with the last writes
    at = _watermark(s) if clock is not None else None
    result: dict[str, Any] = {"event_time_read": at is not None}
    report = verify_until_clean(s.postgres_conninfo(), store, wait_s=60, at=at)
    result.update(
        {
            "at": report.at.isoformat(),
            "entities_checked": report.entities_checked,
            "values_checked": report.values_checked,
            "mismatches": len(report.mismatches),
            "first_mismatches": [
                {
                    "entity": m.entity,
                    "key": m.key,
                    "feature": m.feature,
                    "online": str(m.online),
                    "oracle": str(m.oracle),
                }
                for m in report.mismatches[:10]
            ],
        }
    )
    return result


def _watermark(s: Settings) -> Any:
    with psycopg.connect(s.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT greatest((SELECT max(created_at) FROM payments), "
            "(SELECT max(reported_at) FROM payment_outcomes))"
        ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns a row
    return row[0]


def scored_payments(s: Settings) -> Counter[int]:
    """How often each payment id was logged on the predictions topic."""
    from online_learning.messages import decode_prediction

    topic = s.predictions_topic_name
    reader = Consumer(
        {"bootstrap.servers": s.kafka_bootstrap, "group.id": f"month-{uuid.uuid4().hex}"}
    )
    counts: Counter[int] = Counter()
    try:
        meta = reader.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None:
            return counts
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        reader.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 120
        while len(done) < len(ends) and time.monotonic() < deadline:
            for msg in reader.consume(5000, timeout=0.5):
                if msg.error() is not None:
                    continue
                counts[decode_prediction(msg.value()).payment_id] += 1
                if msg.offset() + 1 >= ends[msg.partition()]:
                    done.add(msg.partition())
    finally:
        reader.close()
    return counts


def learned_once(s: Settings, wait_s: float = 180) -> dict[str, Any]:
    """Every outcome of a scored payment is a training example from that outcome, once."""
    scored = scored_payments(s)

    def state() -> tuple[set[int], dict[int, str]]:
        # Retention drops whole days of examples: judge the outcomes reported since the oldest
        # day still kept (an outcome's example is labelled at its reported_at)
        with psycopg.connect(s.postgres_conninfo()) as conn:
            kept_from = conn.execute(
                "SELECT min(labelled_at) FROM training_examples WHERE namespace = %s",
                (s.namespace,),
            ).fetchone()
            since = kept_from[0] if kept_from and kept_from[0] is not None else None
            outcomes = {
                r[0]
                for r in conn.execute(
                    "SELECT payment_id FROM payment_outcomes WHERE %s::timestamptz IS NULL "
                    "OR reported_at >= %s",
                    (since, since),
                )
            }
            rows = conn.execute(
                "SELECT payment_id, source FROM training_examples WHERE namespace = %s",
                (s.namespace,),
            ).fetchall()
        twice.clear()
        twice.update(Counter(r[0] for r in rows) - Counter({r[0]: 1 for r in rows}))
        return outcomes, {r[0]: r[1] for r in rows}

    twice: Counter[int] = Counter()

    def complete() -> bool:
        outcomes, examples = state()
        return all(examples.get(p) == "outcome" for p in outcomes if p in scored)

    try:
        _wait(complete, wait_s, "every outcome learned")
    except RuntimeError:
        pass  # reported below, not raised: the verdict says what is missing
    outcomes, examples = state()
    expected = {p for p in outcomes if p in scored}
    from_outcome = {p for p, src in examples.items() if src == "outcome"}
    with psycopg.connect(s.postgres_conninfo()) as conn:
        payments = conn.execute("SELECT count(*) FROM payments").fetchone()
    return {
        "payments": None if payments is None else int(payments[0]),
        "scored": len(scored),
        "scored_twice": sum(1 for n in scored.values() if n > 1),
        "outcomes": len(outcomes),
        "outcomes_of_scored": len(expected),
        "learned_from_outcome": len(from_outcome),
        "learned_from_horizon": sum(1 for src in examples.values() if src == "horizon"),
        "outcomes_not_learned": len(expected - from_outcome),
        "outcomes_learned_as_horizon": sum(1 for p in expected if examples.get(p) == "horizon"),
        "learned_without_outcome_row": len(from_outcome - outcomes),
        "learned_twice": len(twice),
        "exactly_once": bool(expected) and expected == from_outcome and not twice,
    }


# ---- the run -----------------------------------------------------------------------------------
def curve_settling(name: str, s: Settings) -> float:
    """Seconds after which the curve ``name`` can be flat (its longest window, the horizon)."""
    from online_learning import SCORING_FEATURES

    horizon = (s.label_horizon + s.label_grace).total_seconds()
    customer = SCORING_FEATURES.max_window_seconds("customer")
    merchant = SCORING_FEATURES.max_window_seconds("merchant")
    longest = max(customer, merchant)
    if "customer" in name:
        return customer
    if "merchant" in name:
        return merchant
    if name.startswith(("redis.keys.pred", "redis.bytes.pred", "rss.learner", "checkpoint")):
        return horizon
    if name.startswith("pg.training_examples"):  # whole days go: one more than the retention
        return (s.retention_examples_days + 1) * DAY_S + horizon
    return longest + horizon


# The workload's own tables: they hold what the simulated business writes, and grow with it as
# any operational database does; Freshloop's state is judged, the user's data is shown.
WORKLOAD_TABLES = ("pg.customers", "pg.merchants", "pg.payments", "pg.payment_outcomes")


# Postgres tables grow and shrink in 8 KB pages (a table of a few hundred KB moves by several
# percent as autovacuum reuses space), retained WAL in 16 MB segments as Debezium confirms:
# a rise below these is not growth with history.
SLACK = {"pg.": 1 << 20, "wal.": 64 << 20}


def _checkpoint_slack(name: str, samples: list[dict[str, Any]], s: Settings) -> float:
    """A prediction learned waits for the checkpoint that removes it: a sample taken just before
    a checkpoint holds up to one checkpoint's examples more logged predictions than one after
    it, in keys and in bytes (at the largest bytes per key sampled). 0 for other curves."""
    if name == "redis.keys.pred":
        return float(s.checkpoint_every_examples)
    if name == "redis.bytes.pred":
        per_key = [
            x["values"]["redis.bytes.pred"] / x["values"]["redis.keys.pred"]
            for x in samples
            if x["values"].get("redis.keys.pred") and x["values"].get("redis.bytes.pred")
        ]
        return s.checkpoint_every_examples * max(per_key, default=0.0)
    return 0.0


def judge(samples: list[dict[str, Any]], s: Settings, cfg: MonthConfig) -> dict[str, Any]:
    out = {}
    # judged on the samples taken while the writer ran (the last one, after it stopped, shows
    # state draining, which would flatter every curve)
    running = [x for x in samples if x["day"] <= cfg.days + 1e-9]
    for name, points in curves_of(running).items():
        if name in WORKLOAD_TABLES:
            out[name] = {
                "flat": None,
                "growth": None,
                "from_day": None,
                "to_day": None,
                "settles_after_days": None,
                "reason": "not judged: the workload's own data, which grows with what it writes",
            }
            continue
        settle = settle_days(curve_settling(name, s))
        slack = next((v for prefix, v in SLACK.items() if name.startswith(prefix)), 0)
        slack = max(slack, _checkpoint_slack(name, running, s))
        out[name] = verdict(
            points,
            settle,
            last_days=cfg.last_days,
            tolerance=cfg.tolerance,
            slack=slack,
            peak=name.startswith("hash.") and ".max_" in name,
        ).as_dict()
    return out


def run_month(
    cfg: MonthConfig,
    base: Settings | None = None,
    results_dir: Path | None = None,
    docs_dir: Path | None = None,
) -> dict[str, Any]:
    """The whole run; returns (and writes) the result: samples, verdicts, end checks."""
    from bench.month_report import write_state_doc

    base = base or Settings()
    started = time.monotonic()
    with isolated_loop(base, keep=cfg.keep) as settings:
        logdir = Path(os.environ.get("MONTH_LOGS") or ROOT / ".freshloop" / "logs" / "month")
        logdir = logdir / settings.namespace
        logdir.mkdir(parents=True, exist_ok=True)
        month = Month(settings, logdir)
        print(f"[month] namespace {settings.namespace}, logs in {logdir}", flush=True)
        try:
            start_processes(month)
            workload = WorkloadConfig(
                rate=cfg.rate,
                customers=cfg.customers,
                merchants=cfg.merchants,
                time_scale=cfg.scale,
                outcome_share=cfg.outcome_share,
                label_delay_s=settings.label_horizon.total_seconds(),
                label_delay_spread="uniform",
                seed=cfg.seed,
                status_delay_s=60.0,  # a minute of event time to approve or decline
            )
            sampler = DailySampler(month, cfg.days)
            sampler.thread.start()
            wall = cfg.days * DAY_S / cfg.scale
            report: SimulationReport = run_simulation(
                settings, workload, wall, connections=2, on_start=sampler.on_start
            )
            sampler.done.set()
            sampler.thread.join(timeout=120)
            if sampler.errors:
                raise sampler.errors[0]
            clock = report.clock
            _wait(lambda: lag(settings) == 0, 300, "the pipeline to apply every change", month)
            time.sleep(5)  # the learner's next checkpoint and the sweeper's next pass
            assert clock is not None  # noqa: S101 - the run has a time scale
            end_wall = clock.wall_seconds((_watermark(settings) - clock.start).total_seconds())
            sample(month, end_wall * cfg.scale / DAY_S, clock, end_wall)
            verified = verify_features(settings, clock)
            learned = learned_once(settings)
        finally:
            codes = stop_processes(month)
        verdicts = judge(month.samples, settings, cfg)
        result = {
            "config": cfg.__dict__,
            "namespace": settings.namespace,
            "event_time": {
                "start": clock.start.isoformat(),
                "end": clock.at(clock.event_seconds(end_wall)).isoformat(),
                "scale": clock.scale,
            },
            "settings": {
                "label_horizon_s": settings.label_horizon.total_seconds(),
                "label_grace_s": settings.label_grace.total_seconds(),
                "score_max_age_s": settings.score_max_age.total_seconds(),
            },
            "writes": {f"{t}.{op}": n for (t, op), n in sorted(report.writes.items())},
            "wall_seconds": round(time.monotonic() - started, 1),
            "exit_codes": codes,
            "verify": verified,
            "learned": learned,
            "flat": {name: v["flat"] for name, v in verdicts.items()},
            "verdicts": verdicts,
            "samples": month.samples,
            "machine": machine(),
        }
    name = "month" if cfg.days >= 30 else f"month-{cfg.days:g}d"
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    else:
        save(name, result)
    write_state_doc(result, docs_dir or ROOT / "docs")
    return result


def failures(result: dict[str, Any]) -> list[str]:
    """What the run's assertions found wrong, one line each (empty: all held)."""
    out = [f"{n}: {v['reason']}" for n, v in result["verdicts"].items() if v["flat"] is False]
    if result["verify"]["mismatches"]:
        out.append(f"features verify: {result['verify']['mismatches']} mismatches")
    if not result["learned"]["exactly_once"]:
        out.append(f"outcomes not learned exactly once: {result['learned']}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    parser.add_argument("--days", type=float, default=float(env("MONTH_DAYS", "30")))
    parser.add_argument("--scale", type=float, default=float(env("MONTH_SCALE", "2160")))
    parser.add_argument("--rate", type=float, default=float(env("MONTH_RATE", "100")))
    parser.add_argument("--customers", type=int, default=int(env("MONTH_CUSTOMERS", "20000")))
    parser.add_argument("--merchants", type=int, default=int(env("MONTH_MERCHANTS", "500")))
    parser.add_argument("--outcome-share", type=float, default=0.02)
    parser.add_argument("--keep", action="store_true", help="keep the database, topics, keys")
    args = parser.parse_args()
    cfg = MonthConfig(
        days=args.days,
        scale=args.scale,
        rate=args.rate,
        customers=args.customers,
        merchants=args.merchants,
        outcome_share=args.outcome_share,
        keep=args.keep,
    )
    result = run_month(cfg)
    print(json.dumps({k: result[k] for k in ("verify", "learned", "flat")}, indent=1))
    wrong = failures(result)
    for line in wrong:
        print(f"[month] NOT HELD {line}")
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
