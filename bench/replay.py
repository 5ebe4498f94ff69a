"""Replay throughput: the sample feature set over a pre-filled topic, one process.

Fills a fresh topic prefix with synthetic Debezium envelopes (inserts, updates, deletes and
outcomes of the sample schema), then measures, on the same topic and in the same run:
- the raw ceiling: consume + decode JSON (orjson), nothing else;
- Freshloop's pipeline: decode, plan, atomic Redis batch writes, offsets.
Reports events/s of each and the ratio. Usage: python -m bench.replay [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.common import bulk_producer, drop_keys, save
from feature_pipelines import FeaturePipeline
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics

BASE_MS = int(time.time() * 1000)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}000Z"


def _env(table: str, op: str, before, after, lsn: int, ms: int) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": ms,
            "source": {
                "version": "3.6.1.Final",
                "connector": "postgresql",
                "name": "bench",
                "ts_ms": ms,
                "snapshot": "false",
                "db": "freshloop",
                "schema": "public",
                "table": table,
                "txId": lsn,
                "lsn": lsn,
                "sequence": f'["{lsn - 1}","{lsn}"]',
            },
        }
    )


def fill(settings: Settings, events: int, seed: int = 1, producer: Any = None) -> int:
    """Produce ``events`` change events (with ``producer``, e.g. inside a transaction; default:
    a bulk producer of its own); returns how many were produced."""
    rng = random.Random(seed)
    topics = [settings.topic(t) for t in ("payments", "payment_outcomes")]
    ensure_topics(settings.kafka_bootstrap, topics, settings.topic_partitions)
    producer = producer or bulk_producer(settings.kafka_bootstrap)
    rows: dict[int, dict] = {}
    lsn, produced, next_id = 1000, 0, 1
    while produced < events:
        lsn += 8
        ms = BASE_MS - rng.randint(0, 3 * 86400_000)
        roll = rng.random()
        if roll < 0.6 or not rows:
            pk = next_id
            next_id += 1
            row = {
                "payment_id": pk,
                "customer_id": rng.randint(1, 20000),
                "merchant_id": rng.randint(1, 500),
                "amount": f"{rng.uniform(1, 900):.2f}",
                "currency": "USD",
                "channel": "web",
                "status": "pending",
                "created_at": _iso(ms),
                "updated_at": _iso(ms),
            }
            rows[pk] = row
            value = _env("payments", "c", None, row, lsn, ms)
            topic = topics[0]
        elif roll < 0.85:
            pk = rng.choice(list(rows)) if len(rows) < 1000 else next_id - rng.randint(1, 1000)
            if pk not in rows:
                continue
            before = rows[pk]
            after = {**before, "status": rng.choice(["approved", "declined"])}
            rows[pk] = after
            value = _env("payments", "u", before, after, lsn, ms)
            topic = topics[0]
        else:
            pk = next_id - rng.randint(1, min(1000, next_id - 1))
            if pk not in rows:
                continue
            outcome = {"payment_id": pk, "is_fraud": rng.random() < 0.05, "reported_at": _iso(ms)}
            value = _env("payment_outcomes", "c", None, outcome, lsn, ms)
            topic = topics[1]
        producer.produce(topic, key=orjson.dumps({"payment_id": pk}), value=value)
        produced += 1
        if produced % 50000 == 0:
            producer.poll(0)
    producer.flush(60)
    return produced


def raw_rate(settings: Settings, total: int, topics: list[str] | None = None) -> float:
    """The ceiling: consume ``total`` events of ``topics`` (default: the replay's payments and
    outcomes topics) from the start and decode each, nothing else; events/s."""
    if topics is None:
        topics = [settings.topic(t) for t in ("payments", "payment_outcomes")]
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions])
    seen, started = 0, time.perf_counter()
    while seen < total:
        for msg in consumer.consume(5000, timeout=1.0):
            if msg.error() is None:
                orjson.loads(msg.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def pipeline_rate(settings: Settings, total: int, profile: str | None = None) -> float:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    run = settings.model_copy(update={"redis_namespace": ns})
    pipeline = FeaturePipeline(run, max_batch=5000)
    target = pipeline.run if profile is None else lambda: _profiled(pipeline, profile)
    worker = threading.Thread(target=target, daemon=True)
    started = time.perf_counter()
    worker.start()
    while pipeline.stats.applied + pipeline.stats.duplicates < total and worker.is_alive():
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    pipeline.stop.set()
    worker.join(timeout=60)
    drop_keys(settings.redis_conninfo(), f"{ns}:*")
    return (pipeline.stats.applied + pipeline.stats.duplicates) / elapsed


def _profiled(pipeline: FeaturePipeline, path: str) -> None:
    """Run the pipeline under pyinstrument (the ``bench`` extra); text report to ``path``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        pipeline.run()
    finally:
        profiler.stop()
        Path(path).write_text(profiler.output_text(unicode=True, show_all=False))
        print(f"[bench] profile of the pipeline loop written to {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="profile the pipeline loop with pyinstrument (pip install -e '.[bench]'), "
        "write its text report to FILE",
    )
    parser.add_argument(
        "--processes",
        default="",
        help="comma-separated counts of 'features run' processes in one group (e.g. 1,2,4): "
        "aggregate events/s and CPU per event of each count instead (bench/scaling.py)",
    )
    parser.add_argument(
        "--redis-layout",
        default=None,
        help="with --processes: single or cluster (default: the settings' redis_layout); a "
        "cluster that cannot be measured here measures the single layout and says why",
    )
    args = parser.parse_args()
    base = Settings()
    settings = base.model_copy(
        update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}", "metrics_port": 0}
    )
    if args.processes:
        _scaling(settings, args.events, args.processes, args.redis_layout or base.redis_layout)
        return
    print(f"[bench] filling {args.events} change events ...", flush=True)
    total = fill(settings, args.events)
    raws, pipes = [], []
    for i in range(args.repeat):
        raws.append(raw_rate(settings, total))
        pipes.append(pipeline_rate(settings, total, args.profile))
        print(
            f"[bench] run {i + 1}: raw {raws[-1]:,.0f}/s, freshloop {pipes[-1]:,.0f}/s", flush=True
        )
    result = {
        "events": total,
        "raw_consume_decode_per_s": {"median": statistics.median(raws), "runs": raws},
        "freshloop_pipeline_per_s": {"median": statistics.median(pipes), "runs": pipes},
        "ratio_freshloop_to_raw": statistics.median(pipes) / statistics.median(raws),
    }
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_topics(
        [settings.topic(t) for t in ("payments", "payment_outcomes")]
    ).values():
        future.result(timeout=30)
    print(f"[bench] saved {save('replay', result)}")
    print(
        f"[bench] replay: freshloop {result['freshloop_pipeline_per_s']['median']:,.0f} "
        f"events/s = {result['ratio_freshloop_to_raw']:.2f} x raw consume+decode "
        f"({result['raw_consume_decode_per_s']['median']:,.0f}/s)"
    )


def _scaling(settings: Settings, events: int, processes: str, requested: str) -> None:
    """``--processes``: the same change events replayed by 1, 2, 4 ... processes."""

    from bench.scaling import cluster_enabled

    if requested == "cluster" and not cluster_enabled(settings):
        # the stack runs one Redis: measure a Redis Cluster of three primaries of the bench's
        # own on the same machine (loopback, stopped at the end), beside the stack's Kafka
        from freshloop.stack.redis_cluster import private_cluster

        print("[bench] starting a private Redis Cluster of three primaries", flush=True)
        with private_cluster(settings) as cluster:
            _measure_scaling(cluster, events, processes, requested)
        return
    _measure_scaling(settings, events, processes, requested)


def _measure_scaling(settings: Settings, events: int, processes: str, requested: str) -> None:
    import math

    from bench.scaling import check_layout, scaling

    layout, note = check_layout(settings, requested)
    if note:
        print(f"[bench] {note}", flush=True)
    counts = [int(n) for n in processes.split(",") if n]
    # partitions: a multiple of every count (each process gets an equal share)
    step = math.lcm(*counts)
    partitions = -(-settings.topic_partitions // step) * step
    settings = settings.model_copy(update={"topic_partitions": partitions, "redis_layout": layout})
    result = scaling(settings, counts, events, layout, note)
    print(f"[bench] saved {save(f'replay_scaling_{layout}', result)}")


if __name__ == "__main__":
    main()
