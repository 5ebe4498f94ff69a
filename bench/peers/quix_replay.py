"""Peer of the replay benchmark: a Quix Streams app computing Freshloop's per-customer windowed
counts and sums from the same pre-filled change topic, into Redis.

Runs in the peers' virtualenv (``.venv-bench``, see ``make bench-peers``), started as a
subprocess by ``bench/replay_peers.py``; it imports nothing of Freshloop. The topic holds
insert-only Debezium envelopes of ``payments`` (keyed by payment_id), so a windowed count or sum
per customer is the same thing in both engines. Freshloop's window rule keeps buckets of width
W/60 and a read sums the last 60; Quix's idiomatic equivalent is a tumbling window of that width
per customer (``group_by`` customer first: Quix windows are per message key), with a grace period
longer than the topic's event-time spread so no event is dropped as late. Each window update is
written to a Redis hash per customer under Freshloop's field names (``payment_count_1h@<bucket>``,
sums in cents), so the harness can fold Quix's buckets with Freshloop's own read rule and compare
values. Lifetime count and sum use Quix's key-value state.

Prints one JSON line: events, seconds, events_per_s, quixstreams version.
Usage: python bench/peers/quix_replay.py --bootstrap H:P --topic T --redis-url URL --prefix P
       --group G --events N
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime
from importlib.metadata import version
from typing import Any

import redis
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Count, Sum
from quixstreams.sinks import BatchingSink, SinkBatch

DAY_MS = 86_400_000
# bucket width (ms) -> {aggregation name: Freshloop feature name}; widths are W/60 of 10 min,
# 1 h and 24 h
WINDOWS: dict[int, dict[str, str]] = {
    10_000: {"n": "payment_count_10m"},
    60_000: {"n": "payment_count_1h", "s": "amount_sum_1h"},
    1_440_000: {"n": "payment_count_24h", "s": "amount_sum_24h"},
}


def _cents(text: str) -> int:
    whole, _dot, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole or "0")) * 100 + int((frac + "00")[:2] or "0"))


def _event_ms(value: Any, _headers: Any, _timestamp: int, _type: Any) -> int:
    after = value.get("after") or {}
    created = after.get("created_at")
    if not created:
        return int(value.get("ts_ms") or 0)
    return int(datetime.fromisoformat(created).timestamp() * 1000)


class HashSink(BatchingSink):
    """Writes each window update as one field of the customer's hash, pipelined per batch."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix

    def setup(self) -> None:
        self.client.ping()

    def write(self, batch: SinkBatch) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item in batch:
            fields = item.value
            pipe.hset(f"{self.prefix}:e:{{customer:{item.key}}}", mapping=fields)
        pipe.execute()


def _window_fields(width: int, names: dict[str, str]) -> Any:
    def to_fields(window: dict[str, Any]) -> dict[str, int]:
        bucket = window["start"] // width
        return {f"{feature}@{bucket}": int(window[agg]) for agg, feature in names.items()}

    return to_fields


def _lifetime(value: dict[str, Any], state: Any) -> dict[str, int]:
    n = state.get("n", 0) + 1
    s = state.get("s", 0) + value["cents"]
    state.set("n", n)
    state.set("s", s)
    return {"payment_count_lifetime": n, "amount_sum_lifetime": s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--grace-days", type=float, default=4.0)
    args = parser.parse_args()

    # the URL with the writer's user and password, when the bench passes one (Redis's ACL)
    client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL") or args.redis_url)
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
        )
        topic = app.topic(
            args.topic,
            value_deserializer="json",
            key_deserializer="json",
            timestamp_extractor=_event_ms,
        )
        sdf = app.dataframe(topic)
        sdf = sdf.filter(lambda v: v.get("op") == "c" and v.get("after") is not None)
        sdf = sdf.apply(
            lambda v: {
                "customer_id": v["after"]["customer_id"],
                "cents": _cents(v["after"]["amount"]),
            }
        )
        sdf = sdf.group_by(lambda v: v["customer_id"], name="customer")

        seen = [0]
        started = [0.0]

        def count(_value: Any) -> None:
            if seen[0] == 0:
                started[0] = time.perf_counter()
            seen[0] += 1
            if seen[0] >= args.events:
                app.stop()

        sdf = sdf.update(count)
        grace = int(args.grace_days * DAY_MS)
        for width, names in WINDOWS.items():
            aggs: dict[str, Any] = {"n": Count()}
            if "s" in names:
                aggs["s"] = Sum("cents")
            branch = sdf.tumbling_window(width, grace_ms=grace, name=f"w{width}").agg(**aggs)
            branch = branch.current().apply(_window_fields(width, names))
            branch.sink(HashSink(client, args.prefix))
        life = sdf.apply(_lifetime, stateful=True)
        life.sink(HashSink(client, args.prefix))

        wall = time.perf_counter()
        app.run()
        ended = time.perf_counter()
    print(
        json.dumps(
            {
                "events": seen[0],
                "seconds": ended - wall,
                "events_per_s": seen[0] / (ended - wall),
                "steady_events_per_s": (seen[0] - 1) / (ended - started[0]),
                "quixstreams": version("quixstreams"),
                "redis_py": version("redis"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
