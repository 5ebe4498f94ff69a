"""Where a change event's Redis time goes: the replay's batch writes, recorded, run again alone.

The scaling figures (``bench.scaling``) give Redis's CPU per change event with a consumer, the
broker and the rest of the stack sharing two cores. This measures the batch script by itself:

1. fills the replay's change events (``bench.replay.fill``) and runs the pipeline in this
   process once, recording every batch write it sends (keys and arguments, in order) and what
   each plan holds (row states and their fields, entities and their fields);
2. sends those writes again, in order, to an empty namespace of the same Redis with nothing
   else running: the whole script, and each prefix of it (the script returning after its step
   k of ``lua/apply.lua``), each ``--repeat`` times.

For each: the script's time per change event (``INFO commandstats`` of EVALSHA), the time of
the Redis commands it calls, the rest (Lua, and each call's own cost of passing arguments and
replies between Lua and Redis), and Redis's CPU per event (``INFO cpu``, which adds the request's
parsing and the append-only file); the fastest repeat of each. A step's cost is its prefix's
less the one before; the prefixes that stop before the row states are written skip the version
check's early answer, so that every batch runs. Single Redis only (the cluster splits a batch
into steps of several scripts). Usage: python -m bench.batch_script [--events N] [--repeat R]
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from confluent_kafka.admin import AdminClient

from bench.common import drop_keys, save
from bench.replay import fill
from feature_pipelines import FeaturePipeline
from feature_pipelines.lua import script
from feature_pipelines.planner import WritePlan
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings

# (name, the line of lua/apply.lua the prefix stops before)
STEPS = (
    ("call and arguments", "-- 1. every row state"),
    ("1. row versions checked", "-- 2. read-only"),
    ("2. entities read, sums decided", "-- 3. row states"),
    ("3. row states written, indexed", "-- 4. entity increments"),
    ("4. entities written, swept", "-- 5. what the partitions"),
)
_VERSION_CHECK = "if (current or '') ~= ARGV[4 + 5 * i] then return -i end"


def variants() -> dict[str, str]:
    """The whole script and its prefixes, by name (the texts ``store_write`` sends)."""
    whole = script("int64") + script("apply")
    missing = [m for m in (*(m for _n, m in STEPS), _VERSION_CHECK) if m not in whole]
    if missing:
        msg = (
            f"lua/apply.lua no longer has {missing!r}: update bench/batch_script.STEPS to its steps"
        )
        raise SystemExit(msg)
    relaxed = whole.replace(_VERSION_CHECK, "if false then return -i end")
    out = {name: relaxed.replace(marker, "do return 0 end\n" + marker, 1) for name, marker in STEPS}
    out["whole script"] = whole
    return out


Call = tuple[list[str], list[Any]]  # one batch write: its keys and arguments


def record(settings: Settings, events: int) -> tuple[str, list[Call], dict[str, int]]:
    """Run the pipeline over ``events`` filled change events in a namespace of its own: the
    namespace, its batch writes and plan counts."""
    total = fill(settings, events)
    ns = f"bench{uuid.uuid4().hex[:8]}"
    pipeline = FeaturePipeline(settings.model_copy(update={"redis_namespace": ns}), max_batch=5000)
    writer = pipeline.writer
    if not isinstance(writer, RedisBatchWriter):
        msg = "bench.batch_script measures one Redis: run it with redis_layout=single"
        raise SystemExit(msg)
    calls: list[Call] = []
    counts = dict.fromkeys(("rows", "row_fields", "entities", "entity_fields"), 0)
    send = writer._script_call  # noqa: SLF001 - the bench records what the writer sends

    def recording(plan: WritePlan, offsets: Mapping[str, int]) -> Call:
        keys, args = send(plan, offsets)
        calls.append((list(keys), list(args)))
        counts["rows"] += len(plan.rows)
        counts["row_fields"] += sum(len(w.updates) + len(w.deletes) for w in plan.rows.values())
        counts["entities"] += len(set(plan.increments) | set(plan.commit_ms))
        counts["entity_fields"] += sum(len(v) for v in plan.increments.values())
        return keys, args

    writer._script_call = recording  # type: ignore[method-assign]  # noqa: SLF001
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    while pipeline.stats.applied + pipeline.stats.duplicates < total and worker.is_alive():
        time.sleep(0.01)
    pipeline.stop.set()
    worker.join(timeout=60)
    drop_keys(settings.redis_conninfo(), f"{ns}:*")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    topics = [settings.topic(t) for t in ("payments", "payment_outcomes")]
    for future in admin.delete_topics(topics).values():
        future.result(timeout=30)
    counts["events"] = total
    return ns, calls, counts


def _stats(client: redis.Redis) -> tuple[float, float, float]:
    """(EVALSHA µs, every other command's µs, Redis CPU s) so far."""
    commands = client.info("commandstats")
    cpu = client.info("cpu")
    evalsha = commands.get("cmdstat_evalsha", {}).get("usec", 0)
    inside = sum(
        v["usec"] for k, v in commands.items() if k not in ("cmdstat_evalsha", "cmdstat_info")
    )
    return evalsha, inside, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def run_calls(
    client: redis.Redis, text: str, calls: Sequence[Call], events: int
) -> dict[str, float]:
    """Send ``calls`` with script ``text`` to an empty namespace; µs per change event."""
    sha = client.script_load(text)
    before = _stats(client)
    for keys, args in calls:
        client.evalsha(sha, len(keys), *keys, *args)
    after = _stats(client)
    script_us, inside_us = after[0] - before[0], after[1] - before[1]
    return {
        "script_us": script_us / events,
        "commands_us": inside_us / events,
        "rest_us": (script_us - inside_us) / events,
        "redis_cpu_us": (after[2] - before[2]) * 1e6 / events,
    }


def measure(settings: Settings, events: int, repeat: int) -> dict[str, Any]:
    namespace, calls, counts = record(settings, events)
    client = redis.Redis.from_url(settings.redis_conninfo())
    results: dict[str, dict[str, float]] = {}
    try:
        for name, text in variants().items():
            runs = []
            for _ in range(repeat):
                drop_keys(settings.redis_conninfo(), f"{namespace}:*")
                runs.append(run_calls(client, text, calls, counts["events"]))
            results[name] = min(runs, key=lambda r: r["script_us"])
            print(f"[bench] {name}: {results[name]['script_us']:.1f} µs/event", flush=True)
        drop_keys(settings.redis_conninfo(), f"{namespace}:*")
    finally:
        client.close()
    n = counts["events"]
    return {
        "events": n,
        "batches": len(calls),
        "per_event": {
            k: counts[k] / n for k in ("rows", "row_fields", "entities", "entity_fields")
        },
        "repeat": repeat,
        "variants": results,
    }


def render(d: dict[str, Any]) -> list[str]:
    per = d["per_event"]
    whole = d["variants"]["whole script"]
    lines = [
        "### Where a change event's Redis time goes",
        "",
        f"`python -m bench.batch_script` ({d['at']}): the {d['batches']} batch writes of one "
        f"replay of {d['events']:,} change events, recorded and sent again in order to an empty "
        "namespace of the same Redis with no other client, the fastest of "
        f"{d['repeat']}. Per change event the batches held {per['rows']:.2f} row states "
        f"({per['row_fields']:.2f} fields) and {per['entities']:.2f} entity writes "
        f"({per['entity_fields']:.2f} feature fields, besides the freshness fields). Script: "
        "EVALSHA's time; commands: the Redis commands it calls; rest: Lua and the calls' own "
        "cost of passing arguments and replies; Redis CPU adds the request's parsing and the "
        "append-only file. Each step's row is its prefix less the one before (prefixes that "
        "stop before step 4 leave the entities unwritten, so their reads find empty hashes).",
        "",
        "| part | script µs/event | commands µs/event | rest µs/event |",
        "| --- | --- | --- | --- |",
    ]
    previous = {"script_us": 0.0, "commands_us": 0.0, "rest_us": 0.0}
    for name, _marker in STEPS:
        row = d["variants"][name]
        lines.append(
            f"| {name} | {row['script_us'] - previous['script_us']:.1f} | "
            f"{row['commands_us'] - previous['commands_us']:.1f} | "
            f"{row['rest_us'] - previous['rest_us']:.1f} |"
        )
        previous = row
    lines += [
        f"| 5-6. expiry, offsets | {whole['script_us'] - previous['script_us']:.1f} | "
        f"{whole['commands_us'] - previous['commands_us']:.1f} | "
        f"{whole['rest_us'] - previous['rest_us']:.1f} |",
        f"| **whole script** | {whole['script_us']:.1f} | {whole['commands_us']:.1f} | "
        f"{whole['rest_us']:.1f} |",
        "",
        f"Redis CPU for the whole script alone: {whole['redis_cpu_us']:.1f} µs per change event "
        "(the scaling rows above, with a consumer beside it, include its reads of row states "
        "and share the cores' caches).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = Settings()
    if base.redis_layout != "single":  # make bench on a cluster stack goes on without it
        print("[bench] batch_script skipped: it measures one Redis (redis_layout=single)")
        return
    settings = base.model_copy(
        update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}", "metrics_port": 0}
    )
    result = measure(settings, args.events, args.repeat)
    print(f"[bench] saved {save('batch_script', result)}")


if __name__ == "__main__":
    main()
