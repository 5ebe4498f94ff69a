"""Replay next to Quix Streams: the same per-customer windowed counts and sums, the same topic.

A bench-only topic is pre-filled with insert-only Debezium-shaped ``payments`` envelopes
(produced directly, not through Postgres: a million changes through Debezium would take most of
the run; the envelopes have the shape the connector writes, ``bench.replay._env``). On it, in
the same run and ``--repeat`` times each:
- raw: consume + decode JSON (orjson), nothing else: the ceiling;
- Freshloop: the feature pipeline computing the customer count/sum features Quix computes
  (``PEER_FEATURES``), one process;
- Quix Streams (``bench/peers/quix_replay.py`` in ``.venv-bench``), one process.
After the last repeat a sample of customers is read from both (Freshloop's ``FeatureStore``;
Quix's buckets folded by Freshloop's read rule) at one read time: they must be equal, or the
comparison is void and says so. Usage: python -m bench.replay_peers [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient

from bench.common import bulk_producer, drop_keys, ratio, save, spread
from bench.peers import PeerMissing, run_peer
from bench.replay import BASE_MS, _env, _iso, raw_rate
from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline, FeatureSet, FeatureStore
from feature_pipelines.readout import ReadPlan
from freshloop.core.settings import Settings
from freshloop.core.topics import ensure_topics

PEER_FEATURES = FeatureSet.of(
    SAMPLE_FEATURES.by_name(name)
    for name in (
        "payment_count_10m",
        "payment_count_1h",
        "payment_count_24h",
        "amount_sum_1h",
        "amount_sum_24h",
        "payment_count_lifetime",
        "amount_sum_lifetime",
    )
)
CUSTOMERS = 20_000


def fill_inserts(settings: Settings, events: int, seed: int = 11) -> str:
    """Create the topic and produce ``events`` payment inserts; returns the topic name."""
    topic = settings.topic("payments")
    ensure_topics(settings.kafka_bootstrap, [topic], settings.topic_partitions)
    producer = bulk_producer(settings.kafka_bootstrap)
    rng = random.Random(seed)
    for i in range(events):
        pk = i + 1
        ms = BASE_MS - rng.randint(0, 3 * 86400_000)
        row = {
            "payment_id": pk,
            "customer_id": rng.randint(1, CUSTOMERS),
            "merchant_id": rng.randint(1, 500),
            "amount": f"{rng.uniform(1, 900):.2f}",
            "currency": "USD",
            "channel": "web",
            "status": "pending",
            "created_at": _iso(ms),
            "updated_at": _iso(ms),
        }
        value = _env("payments", "c", None, row, 1000 + 8 * pk, ms)
        while True:
            try:
                producer.produce(topic, key=orjson.dumps({"payment_id": pk}), value=value)
                break
            except BufferError:
                producer.poll(0.1)
        if pk % 50000 == 0:
            producer.poll(0)
    producer.flush(120)
    return topic


def freshloop_rate(settings: Settings, ns: str, total: int) -> dict[str, float]:
    """Drain the topic with a fresh pipeline under ``ns`` (left in Redis for the check).

    ``events_per_s`` counts from the first batch written (start-up and the group join left out,
    as for Quix); ``wall_events_per_s`` from the start of the process's pipeline.
    """
    run = settings.model_copy(update={"redis_namespace": ns})
    # Batches small enough that a short run is seen in several steps: a run drained in one batch
    # has no steady span to time.
    pipeline = FeaturePipeline(run, PEER_FEATURES, max_batch=min(5000, max(100, total // 10)))
    worker = threading.Thread(target=pipeline.run, daemon=True)
    started = time.perf_counter()
    first_at, first_n = 0.0, 0
    worker.start()
    while (done := pipeline.stats.applied + pipeline.stats.duplicates) < total:
        if not worker.is_alive():
            msg = f"the pipeline stopped after {done} of {total} events"
            raise RuntimeError(msg)
        if not first_at and done:
            first_at, first_n = time.perf_counter(), done
        time.sleep(0.002)
    ended = time.perf_counter()
    pipeline.stop.set()
    worker.join(timeout=60)
    wall = total / (ended - started)
    steady = (total - first_n) / (ended - first_at) if first_at and ended > first_at else wall
    return {"events_per_s": steady, "wall_events_per_s": wall}


def quix_rate(settings: Settings, topic: str, prefix: str, total: int) -> dict[str, Any]:
    group = f"{prefix}-quix"
    return run_peer(
        "quix_replay.py",
        [
            "--bootstrap",
            settings.kafka_bootstrap,
            "--topic",
            topic,
            "--redis-url",
            settings.redis_url,
            "--prefix",
            prefix,
            "--group",
            group,
            "--events",
            str(total),
        ],
        timeout=max(600.0, total / 500),
        redis_url=settings.redis_conninfo(),
    )


def compare(settings: Settings, ns: str, quix_prefix: str, sample: int = 300) -> dict[str, Any]:
    """Read a sample of customers from both at one time; count values that differ."""
    store = FeatureStore.connect(settings.redis_conninfo(), PEER_FEATURES, ns)
    client = store.client
    keys = random.Random(5).sample(range(1, CUSTOMERS + 1), sample)
    at = datetime.now(UTC)
    plan = ReadPlan(PEER_FEATURES, int(at.timestamp() * 1_000_000))
    ours = store.get_many("customer", keys, at)
    mismatches, checked, examples = 0, 0, []
    for key, entity in zip(keys, ours, strict=True):
        theirs = plan.values(client.hgetall(f"{quix_prefix}:e:{{customer:{key}}}"))
        for name, value in entity.values.items():
            checked += 1
            if theirs.get(name) != value:
                mismatches += 1
                if len(examples) < 5:
                    examples.append(
                        {"customer": key, "feature": name, "freshloop": value, "quix": theirs[name]}
                    )
    return {"values_checked": checked, "mismatches": mismatches, "examples": examples}


def _drop_topics(settings: Settings, marker: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if marker in t]
    if names:
        for future in admin.delete_topics(names).values():
            try:
                future.result(timeout=30)
            except Exception as exc:  # noqa: BLE001 - best-effort cleanup, reported
                print(f"[bench] could not delete a topic: {exc}", flush=True)


def run(events: int, repeat: int, with_quix: bool = True) -> dict[str, Any]:
    tag = f"benchq{uuid.uuid4().hex[:6]}"
    settings = Settings().model_copy(update={"topic_prefix": tag, "metrics_port": 0})
    raws: list[float] = []
    ours: list[float] = []
    ours_wall: list[float] = []
    quix: list[float | None] = []
    quix_wall: list[float | None] = []
    quix_version, check, note = None, None, None
    try:
        started = time.perf_counter()
        topic = fill_inserts(settings, events)
        print(f"[bench] filled {events:,} inserts in {time.perf_counter() - started:.0f} s")
        for i in range(repeat):
            last = i == repeat - 1
            raws.append(raw_rate(settings, events, [topic]))
            ns = f"{tag}f{i}"
            mine = freshloop_rate(settings, ns, events)
            ours.append(mine["events_per_s"])
            ours_wall.append(mine["wall_events_per_s"])
            quix_prefix = f"{tag}q{i}"
            if with_quix and note is None:
                try:
                    peer = quix_rate(settings, topic, quix_prefix, events)
                    quix.append(peer["steady_events_per_s"])
                    quix_wall.append(peer["events_per_s"])
                    quix_version = peer["quixstreams"]
                    if last:
                        check = compare(settings, ns, quix_prefix)
                except PeerMissing as exc:
                    note = str(exc)
            print(
                f"[bench] run {i + 1}: raw {raws[-1]:,.0f}/s, freshloop {ours[-1]:,.0f}/s, "
                f"quix {quix[-1] if quix else float('nan'):,.0f}/s",
                flush=True,
            )
            drop_keys(settings.redis_conninfo(), f"{ns}:*")
            drop_keys(settings.redis_conninfo(), f"{quix_prefix}:*")
    finally:
        _drop_topics(settings, tag)
    raw, fl, qx = spread(raws), spread(ours), spread(quix)
    return {
        "events": events,
        "workload": "insert-only payments, 20,000 customers, event times over 3 days",
        "features": [f.name for f in PEER_FEATURES],
        "raw_consume_decode_per_s": raw,
        "freshloop_per_s": fl,
        "quix_per_s": qx,
        "wall_per_s": {"freshloop": spread(ours_wall), "quix": spread(quix_wall)},
        "rate_note": "events/s from the first event processed to the last written (start-up, "
        "group join and Quix's topic creation left out); wall_per_s includes them",
        "quixstreams": quix_version,
        "ratio_freshloop_to_quix": ratio(fl["median"], qx["median"]),
        "ratio_freshloop_to_raw": ratio(fl["median"], raw["median"]),
        "same_values": check,
        "peer_note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-quix", action="store_true", help="Freshloop and raw only.")
    args = parser.parse_args()
    result = run(args.events, args.repeat, with_quix=not args.no_quix)
    print(f"[bench] saved {save('replay_peers', result)}")
    r = result["ratio_freshloop_to_quix"]
    print(
        f"[bench] replay vs quix: freshloop {result['freshloop_per_s']['median']:,.0f}/s, "
        f"quix {result['quix_per_s']['median'] or 0:,.0f}/s, ratio "
        f"{'n/a' if r is None else f'{r:.2f}'}; same values: {result['same_values']}"
    )


if __name__ == "__main__":
    main()
