"""Replay with 1, 2, 4 ... ``freshloop features run`` processes in one consumer group.

Each process count gets topics and a namespace of its own, filled with the same change events
(``bench.replay.fill``, same seed, partitions a multiple of every count) inside one Kafka
transaction that stays open while its N processes start and the group settles: the processes
read committed records only, so nothing is consumed until every process owns its partitions.
The window starts at the commit and ends when the group's positions in Redis reach the topics'
ends. Reported per count: the aggregate events/s, each process's CPU seconds per change event,
and Redis's (``INFO cpu``) per change event over the same window, so what bounds the scaling
(one Redis thread, two cores) shows in numbers. The values of every count are compared with
those of the first, entity by entity.

Redis layouts (``--redis-layout``, default the settings' ``redis_layout``): ``single`` (one
Redis at ``redis_url``) and ``cluster`` (a Redis Cluster, ``redis_url`` names one primary; Redis's
CPU is then the sum over the primaries, and its busy share the busiest primary's). The cluster is
measured only when the Redis at ``redis_url`` is a cluster node and the feature pipeline writes
to a cluster (``pipeline_layouts``); otherwise a request for it
measures the single layout and says why, on the console and in the result (``layout_note``).
Results: ``bench/results/replay_scaling_<layout measured>.json``.
Usage: python -m bench.replay --processes 1,2,4 [--events N] [--redis-layout single|cluster]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from bench.common import drop_keys
from bench.cpu import machine_busy_s, process_cpu_s, redis_cpu_s
from feature_pipelines import SAMPLE_FEATURES, FeatureStore, pipeline_stats
from feature_pipelines.cluster_keys import KeyLayout
from freshloop.core.settings import Settings

LAYOUTS = ("single", "cluster")
TABLES = ("payments", "payment_outcomes")


class LayoutUnavailable(RuntimeError):
    """The Redis layout asked for cannot be measured here."""


def cluster_enabled(settings: Settings) -> bool:
    """Whether the Redis at ``redis_url`` is a Redis Cluster node (``INFO cluster``)."""
    client = redis.Redis.from_url(settings.redis_conninfo())
    try:
        return bool(int(client.info("cluster").get("cluster_enabled", 0)))
    finally:
        client.close()


def pipeline_layouts() -> tuple[str, ...]:
    """The Redis layouts ``freshloop features run`` writes to: ``REDIS_LAYOUTS`` of the
    consumer module when it declares them, else both when it picks its writer by layout
    (``cluster_pipeline.batch_writer``), else the single one."""
    from feature_pipelines import consumer

    declared = getattr(consumer, "REDIS_LAYOUTS", None)
    if declared is not None:
        return tuple(declared)
    return ("single", "cluster") if hasattr(consumer, "batch_writer") else ("single",)


def cluster_unavailable(settings: Settings) -> str | None:
    """Why the cluster layout cannot be measured here, or None when it can."""
    if not cluster_enabled(settings):
        return (
            "the Redis at redis_url is one Redis, not a cluster node (start the stack with "
            "FRESHLOOP_REDIS_LAYOUT=cluster to measure the cluster)"
        )
    if "cluster" not in pipeline_layouts():
        return (
            "the feature pipeline does not write to a Redis Cluster yet (issue 22 item 1, "
            "docs/redis-cluster.md, 'Not wired yet')"
        )
    return None


def check_layout(settings: Settings, requested: str) -> tuple[str, str | None]:
    """(the layout to measure, a note saying why it is not the one requested, or None).

    A cluster that cannot be measured falls back to the single layout when the Redis at
    ``redis_url`` is one Redis; anything else that cannot run stops with a sentence.
    """
    if requested not in LAYOUTS:
        msg = f"--redis-layout {requested!r}: choose one of {', '.join(LAYOUTS)}"
        raise LayoutUnavailable(msg)
    if requested == "single":
        if cluster_enabled(settings):
            msg = (
                "--redis-layout single: the Redis at redis_url is a cluster node; measure "
                "--redis-layout cluster, or point FRESHLOOP_REDIS_URL at one Redis"
            )
            raise LayoutUnavailable(msg)
        return "single", None
    reason = cluster_unavailable(settings)
    if reason is None:
        return "cluster", None
    if cluster_enabled(settings):
        msg = f"--redis-layout cluster cannot be measured: {reason}"
        raise LayoutUnavailable(msg)
    return "single", f"Redis Cluster not measured: {reason}; the single layout was measured"


class RedisSide:
    """The Redis of one layout as the bench sees it: a client, CPU seconds per primary, and
    the group's stored positions."""

    def __init__(self, settings: Settings, layout: str) -> None:
        self.layout = layout
        self.shards = settings.redis_cluster_shards
        if layout == "cluster":
            from feature_pipelines.cluster_read import layout_client

            cluster = settings.model_copy(update={"redis_layout": "cluster"})
            self.client: Any = layout_client(cluster, "writer")
        else:
            self.client = redis.Redis.from_url(settings.redis_conninfo())

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of each primary (``INFO cpu``)."""
        if self.layout != "cluster":
            return {"redis": redis_cpu_s(self.client)}
        from redis.cluster import RedisCluster

        infos = self.client.info("cpu", target_nodes=RedisCluster.PRIMARIES)
        return {
            str(node): float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            for node, info in sorted(infos.items())
        }

    def progress(self, ns: str, ends: dict[str, int]) -> int:
        """Change events the group has written its position past (Redis's positions: applied,
        duplicates and dead letters alike), up to the topics' ends."""
        keys = KeyLayout(ns, f"{ns}-features", "cluster" if self.layout == "cluster" else "single")
        names = sorted({keys.offsets(int(name.rsplit(":", 1)[1])) for name in ends})
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        stored: dict[str, int] = {}
        for raw in pipe.execute():
            for k, v in raw.items():
                stored[k.decode() if isinstance(k, bytes) else k] = int(v)
        return sum(min(stored.get(name, 0), end) for name, end in ends.items())

    def close(self) -> None:
        self.client.close()


def _spawn(settings: Settings, ns: str, interval_s: float) -> subprocess.Popen[bytes]:
    env = settings.model_copy(
        update={
            "redis_namespace": ns,
            "metrics_port": 0,
            "stats_interval_s": interval_s,
            # the sample set, as the in-process replay: per-event figures comparable across runs
            "feature_definitions": "feature_pipelines.catalog:SAMPLE_FEATURES",
        }
    ).environment(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "features", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=60))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait(timeout=10))
    return codes


def topic_ends(
    settings: Settings, *, markers: bool = False, at_least: int = 0, timeout_s: float = 60.0
) -> dict[str, int]:
    """``topic:partition`` -> end of the replay's change topics: the high watermark, less the
    commit marker of the one transaction that filled it (``markers``). Asked again until every
    partition answers with an offset and they add up to ``at_least`` events: right after the
    commit a busy broker may still answer with an invalid offset (a window of 0 events)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-ends"})
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ends = {}
            for table in TABLES:
                topic = settings.topic(table)
                for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                    tp = TopicPartition(topic, partition)
                    high = consumer.get_watermark_offsets(tp, timeout=10)[1]
                    ends[f"{topic}:{partition}"] = high - 1 if markers and high > 0 else high
            valid = all(end >= 0 for end in ends.values())
            if (valid and sum(ends.values()) >= at_least) or time.monotonic() > deadline:
                if not valid:
                    msg = f"the topics' ends stayed unknown for {timeout_s:.0f}s: {ends}"
                    raise RuntimeError(msg)
                return ends
            time.sleep(0.2)
    finally:
        consumer.close()


def _delete_topics(settings: Settings) -> None:
    """Delete the run's change topics (those that exist: a fill may have stopped early)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_topics([settings.topic(t) for t in TABLES]).values():
        try:
            future.result(timeout=30)
        except KafkaException:
            continue  # not created


def _open_fill(settings: Settings, events: int) -> tuple[Any, int]:
    """Fill the topics inside a transaction left open; returns the producer to commit it and
    how many change events it produced."""
    from confluent_kafka import Producer

    from bench.replay import fill

    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500000,
            "transactional.id": f"bench-scaling-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": 600_000,
        }
    )
    producer.init_transactions(120)  # the first use creates the log
    producer.begin_transaction()
    filled = fill(settings, events, producer=producer)
    return producer, filled


@dataclass
class _Sample:
    at: float
    done: int
    procs: list[float]
    redis: dict[str, float]


def _sample(side: RedisSide, ns: str, ends: dict[str, int], procs: list[Any]) -> _Sample:
    return _Sample(
        time.perf_counter(),
        side.progress(ns, ends) if ends else 0,
        [process_cpu_s(p.pid) for p in procs],
        side.cpu_s(),
    )


def run_processes(
    settings: Settings,
    events: int,
    processes: int,
    *,
    layout: str = "single",
    timeout_s: float = 600,
    baseline_s: float = 2.0,
) -> dict[str, Any]:
    """Fill topics of this run's own (transaction open), start ``processes`` processes in one
    group, wait until every process owns partitions and they add up to all of them for a second,
    commit, and time the replay to the topics' ends; events/s and CPU per change event.

    Redis is shared (other clients use it too): its CPU over ``baseline_s`` before the
    processes start is reported as ``redis_background_cpu_per_s`` and taken off its CPU in the
    window for ``redis_cpu_us_per_event_net``.
    """
    tag = uuid.uuid4().hex[:8]
    ns = f"scale{tag}"
    run = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}{tag}"})
    side = RedisSide(run, layout)
    procs: list[subprocess.Popen[bytes]] = []
    codes: list[int] = []
    try:
        producer, filled = _open_fill(run, events)
        before = side.cpu_s()
        time.sleep(baseline_s)
        after = side.cpu_s()
        background = sum(after.values()) - sum(before.values())
        background = background / baseline_s if baseline_s > 0 else 0.0
        procs = [_spawn(run, ns, 0.2) for _ in range(processes)]
        topic_partitions = len(TABLES) * run.topic_partitions
        deadline = time.monotonic() + 180
        settled: float | None = None
        while True:
            owning = [r for r in pipeline_stats(side.client, ns) if r["assigned_partitions"] > 0]
            whole = sum(row["assigned_partitions"] for row in owning) == topic_partitions
            if len(owning) == processes and whole:
                settled = settled or time.monotonic()
                if time.monotonic() - settled >= 1.0:
                    break
            else:
                settled = None
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                err = b"".join(p.stderr.read() or b"" for p in procs if p.poll() and p.stderr)
                msg = f"{processes} processes not all assigned (exits {dead}): {err[-2000:]!r}"
                raise RuntimeError(msg)
            time.sleep(0.05)
        shares = sorted(row["assigned_partitions"] for row in owning)
        # before the commit nothing is readable (the consumers read committed records only)
        pre = _sample(side, ns, {}, procs)
        producer.commit_transaction(120)
        ends = topic_ends(run, markers=True, at_least=filled)
        total = sum(ends.values())
        # right after the commit (however long it took): what is done by now is not counted,
        # unless it is everything (a short run drained while the commit returned): then the
        # window starts before the commit
        start = _sample(side, ns, ends, procs)
        window_from_commit = start.done >= total
        if window_from_commit:
            start = pre
        busy0, load = machine_busy_s()[0], os.getloadavg()[0]
        deadline = time.monotonic() + timeout_s
        end = start
        while end.done < total and time.monotonic() < deadline:
            time.sleep(0.02)
            end = _sample(side, ns, ends, procs)
        busy = machine_busy_s()[0] - busy0
        applied = sum(row["applied_total"] for row in pipeline_stats(side.client, ns))
    finally:
        codes = _stop_all(procs)
        side.close()
        _delete_topics(run)
    elapsed = end.at - start.at
    proc_cpu = [b - a for a, b in zip(start.procs, end.procs, strict=True)]
    node_cpu = {k: end.redis[k] - start.redis.get(k, 0.0) for k in end.redis}
    redis_cpu = sum(node_cpu.values())
    done = end.done - start.done
    per_event = lambda s: None if not done else round(s / done * 1e6, 1)  # noqa: E731
    return {
        "namespace": ns,
        "processes": processes,
        "assigned_partitions": shares,
        "exit_codes": codes,
        "events": total,
        "complete": end.done >= total,
        "events_before_window": start.done,
        "window_includes_commit": window_from_commit,
        "applied_total_at_end": applied,
        "window_s": round(elapsed, 3),
        "events_per_s": done / elapsed if elapsed > 0 else None,
        "process_cpu_s": [round(c, 3) for c in proc_cpu],
        "process_cpu_us_per_event": [per_event(c) for c in proc_cpu],
        "processes_cpu_us_per_event": per_event(sum(proc_cpu)),
        "redis_cpu_s": round(redis_cpu, 3),
        "redis_node_cpu_s": {k: round(v, 3) for k, v in node_cpu.items()},
        "redis_cpu_us_per_event": per_event(redis_cpu),
        "redis_background_cpu_per_s": round(background, 4),
        "redis_cpu_us_per_event_net": per_event(max(0.0, redis_cpu - background * elapsed)),
        # the whole machine: its busy share of all cores, and the 1-min load average at start
        "machine_busy_share": (
            min(1.0, round(busy / (elapsed * (os.cpu_count() or 1)), 3)) if elapsed > 0 else None
        ),
        "load_1m": round(load, 2),
        # the busiest primary's share of one core: one Redis thread per primary is the bound
        "redis_busy_share": (
            round(max(node_cpu.values()) / elapsed, 3) if elapsed > 0 and node_cpu else None
        ),
    }


def _drop(settings: Settings, layout: str, ns: str) -> None:
    """Delete namespace ``ns``'s keys (on a cluster: scanned on every primary, deleted one
    key per command, so that no command spans slots)."""
    if layout != "cluster":
        drop_keys(settings.redis_conninfo(), f"{ns}:*")
        return
    side = RedisSide(settings, layout)
    try:
        pipe = side.client.pipeline(transaction=False)
        for n, key in enumerate(side.client.scan_iter(match=f"{ns}:*", count=5000), 1):
            pipe.delete(key)
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
    finally:
        side.close()


def _store(settings: Settings, ns: str) -> FeatureStore:
    """The feature store of ``settings.redis_layout`` (one Redis or the cluster)."""
    from feature_pipelines.cluster_read import store_for

    return store_for(settings, SAMPLE_FEATURES, ns=ns)


def _values(settings: Settings, ns: str, at: datetime, sample: int) -> dict[str, Any]:
    store = _store(settings, ns)
    out: dict[str, Any] = {}
    for entity in store.entities():
        keys = sorted(store.scan_keys(entity))[:sample]
        for row in store.get_many(entity, keys, at):
            out[f"{entity}:{row.key}"] = row.values
    return out


def compare_values(
    settings: Settings, reference: str, other: str, at: datetime, sample: int = 500
) -> dict[str, Any]:
    """Values of up to ``sample`` entities per kind of ``reference`` read from ``other`` too."""
    ref = _values(settings, reference, at, sample)
    store = _store(settings, other)
    differ, checked = [], 0
    by_entity: dict[str, list[str]] = {}
    for name in ref:
        entity, key = name.split(":", 1)
        by_entity.setdefault(entity, []).append(key)
    for entity, keys in by_entity.items():
        for row in store.get_many(entity, keys, at):
            want = ref[f"{entity}:{row.key}"]
            checked += len(want)
            differ += [f"{entity}:{row.key}:{f}" for f, v in want.items() if row.values.get(f) != v]
    return {
        "entities": len(ref),
        "values_checked": checked,
        "mismatch_count": len(differ),
        "mismatches": differ[:20],
    }


def scaling(
    settings: Settings,
    counts: list[int],
    events: int,
    layout: str = "single",
    note: str | None = None,
) -> dict[str, Any]:
    """Every process count in turn over the same change events; values checked against the
    first count's. ``layout``: the one measured (``check_layout``), ``note``: why it is not the
    one asked for."""
    partitions = settings.topic_partitions
    if max(counts) > partitions:
        msg = (
            f"--processes {max(counts)} is more than the {partitions} partitions per topic: "
            "the extra processes would idle; set FRESHLOOP_TOPIC_PARTITIONS higher"
        )
        raise ValueError(msg)
    runs: list[dict[str, Any]] = []
    at = datetime.now(UTC)
    try:
        for n in counts:
            print(f"[bench] {n} process(es): filling {events:,} change events ...", flush=True)
            run = run_processes(settings, events, n, layout=layout)
            runs.append(run)
            rate = run["events_per_s"]
            print(
                f"[bench] {n} process(es): {0 if rate is None else rate:,.0f} events/s; CPU per "
                f"event: processes {run['processes_cpu_us_per_event']} µs "
                f"(each {run['process_cpu_us_per_event']}), Redis "
                f"{run['redis_cpu_us_per_event']} µs (net {run['redis_cpu_us_per_event_net']})",
                flush=True,
            )
        for run in runs[1:]:
            run["same_values"] = compare_values(
                settings, runs[0]["namespace"], run["namespace"], at
            )
    finally:
        for run in runs:
            _drop(settings, layout, run["namespace"])
    base = runs[0]["events_per_s"] or 0
    for run in runs:
        rate = run["events_per_s"]
        run["speedup_vs_first"] = round(rate / base, 3) if base and rate else None
    return {
        "redis_layout": layout,
        "layout_note": note,
        "cores": os.cpu_count(),
        "partitions_per_topic": partitions,
        "events": runs[0]["events"],
        "runs": runs,
    }


def _num(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def render(d: dict[str, Any]) -> list[str]:
    """Markdown lines for ``docs/performance.md`` (``bench.report``)."""
    cluster = d["redis_layout"] == "cluster"
    out = [
        f"### Many consumers, Redis layout `{d['redis_layout']}`",
        "",
        f"`python -m bench.replay --processes ... --redis-layout {d['redis_layout']}` "
        f"({d.get('at', 'n/a')}): {d['events']:,} change events over topics of "
        f"{d['partitions_per_topic']} partitions, replayed by N `freshloop features run` "
        f"processes in one consumer group on {d.get('cores') or 'n/a'} cores. The events of each "
        "count are written in one Kafka transaction committed once every process owns its "
        "partitions; window: from the commit to when the group's positions in Redis reach the "
        "topics' ends. CPU per change "
        "event: each process's and Redis's (`INFO cpu`"
        + (", summed over the primaries" if cluster else "")
        + ") over the window; net of Redis's background load (its CPU/s in the 2 s before the "
        "processes started, for a Redis other clients use too) in brackets. Busy share: the "
        + ("busiest primary's" if cluster else "Redis thread's")
        + " CPU over the window, of one core. Machine busy: all cores' busy share over the "
        "window (other work included), with the 1-minute load average at its start.",
    ]
    if d.get("layout_note"):
        out += ["", f"*{d['layout_note']}.*"]
    out += [
        "",
        "| processes | events/s | × 1 process | CPU µs/event, processes (each) | "
        "CPU µs/event, Redis (net) | Redis busy share | machine busy (load) | "
        "values differing from 1 process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in d["runs"]:
        same = run.get("same_values")
        if same is None:
            differ = "reference"
        else:
            count = same.get("mismatch_count", len(same["mismatches"]))
            differ = f"{count} of {same['values_checked']:,}"
        each = ", ".join(_num(v, ".1f") for v in run["process_cpu_us_per_event"])
        out.append(
            f"| {run['processes']} | {_num(run['events_per_s'])} | "
            f"{_num(run.get('speedup_vs_first'), '.2f')} | "
            f"{_num(run['processes_cpu_us_per_event'], '.1f')} ({each}) | "
            f"{_num(run['redis_cpu_us_per_event'], '.1f')} "
            f"({_num(run['redis_cpu_us_per_event_net'], '.1f')}) | "
            f"{_num(run['redis_busy_share'], '.2f')} | "
            f"{_num(run.get('machine_busy_share'), '.0%')} ({_num(run.get('load_1m'), '.1f')}) | "
            f"{differ} |"
        )
    return [*out, ""]
