"""Freshness at the highest load, and who uses the two cores there (``bench.freshness
--load-rates``).

Rates are tried upwards. At each, two probes run on the whole stack, each with the CPU seconds of
every component sampled over its writing window (``bench.cpu``):
- features: ``freshloop features run`` gives commit -> feature (p99 <= 75 ms);
- predictions: ``freshloop learn serve`` (the pipeline with the scoring hook) and ``freshloop
  learn run`` (the learner, from the topics' end) give commit -> prediction (p99 <= 100 ms).
The highest rate that meets both bounds (and writes >= 90 % of its target) is reported with each
component's share of the machine's cores there: writers (the bench's writer processes),
Postgres, Connect, broker, Redis (each the stack's process tree, from its pid file), pipeline,
learner, and ``other``: what else kept the machine busy (other work on a shared machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.common import percentiles
from bench.cpu import CpuWindow
from freshloop.core.settings import Settings

FEATURE_P99_MS = 75.0
PREDICTION_P99_MS = 100.0
STACK_NAMES = {"postgres": "postgres", "connect": "connect", "kafka": "broker", "redis": "redis"}


def stack_pids(settings: Settings) -> dict[str, int]:
    """Component name -> root pid of the local stack's services (``freshloop stack status``);
    services this stack did not start (foreign, down) are left out."""
    from freshloop.stack import Stack

    out = {}
    for status in Stack(settings).status():
        if status.pid is not None and status.name in STACK_NAMES:
            out[STACK_NAMES[status.name]] = status.pid
    return out


def window(settings: Settings, procs: dict[str, list[int]]) -> CpuWindow:
    """A CPU window over the stack's services, ``procs`` and the bench's writer processes."""
    return CpuWindow(trees=stack_pids(settings), procs=procs, own_children="writers")


def prediction_probe(settings: Settings, rate: float, seconds: float, per_process: float) -> dict:
    """Writers + ``learn serve`` + ``learn run`` at ``rate``: commit -> prediction and shares."""
    from bench.freshness import (
        _commit_times,
        _drop,
        _forget_namespace,
        _start_at_end,
        _stop,
        _wait_ready,
        write_load,
    )

    ns = f"load{uuid.uuid4().hex[:8]}"
    starts = _start_at_end(settings, ns)
    topic = f"{ns}.predictions"
    env = {
        **os.environ,
        "FRESHLOOP_REDIS_NAMESPACE": ns,
        "FRESHLOOP_METRICS_PORT": "0",
        "FRESHLOOP_PREDICTIONS_TOPIC": topic,
        "FRESHLOOP_LEARNER_START": "latest",  # not the shared outcomes topic's whole history
    }
    cli = [sys.executable, "-m", "freshloop.app.cli"]
    quiet = subprocess.DEVNULL
    serve = subprocess.Popen([*cli, "learn", "serve"], env=env, stdout=quiet, stderr=quiet)
    learner = subprocess.Popen([*cli, "learn", "run"], env=env, stdout=quiet, stderr=quiet)
    try:
        _wait_ready(settings, ns, serve)
        time.sleep(5)  # the learner's start-up (model, checkpoint) is not in the window
        cpu = window(settings, {"pipeline": [serve.pid], "learner": [learner.pid]}).start()
        load = write_load(settings, rate, seconds, per_process)
        shares = cpu.stop()
        time.sleep(3)
        ids = set(load["payment_ids"])
        commits = _commit_times(settings, starts, ids)
        # from the predictions topic: the learner deletes a prediction's Redis copy once learned
        predicted = _predicted_at(settings, topic)
        lags = [predicted[pid] - commits[pid] for pid in sorted(commits) if pid in predicted]
    finally:
        _stop(learner)
        _stop(serve)
        _drop(settings, ns)
        _forget_namespace(settings, ns, topic)
    return {
        "target_payments_per_s": rate,
        "achieved_payments_per_s": load["achieved_payments_per_s"],
        "payments_written": len(ids),
        "payments_scored": len(lags),
        "commit_to_prediction_ms": percentiles(lags),
        "cpu": shares,
    }


def _predicted_at(settings: Settings, topic: str) -> dict[int, float]:
    """payment_id -> predicted_at (epoch ms) of every prediction logged to ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: dict[int, float] = {}
    done = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 60
    while len(done) < len(ends) and time.monotonic() < deadline:
        for msg in consumer.consume(5000, timeout=1.0):
            if msg.error() is not None or not msg.value():
                continue
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                done.add(msg.partition() or 0)
            row = orjson.loads(msg.value())
            moment = datetime.fromisoformat(row["predicted_at"]).timestamp() * 1000
            out.setdefault(int(row["payment_id"]), moment)
    consumer.close()
    return out


def highest_load(
    settings: Settings, rates: list[float], seconds: float, per_process: float
) -> dict[str, Any]:
    """Rates upwards until one misses a bound; the highest that met both, with its shares."""
    from bench.freshness import feature_run

    probes, best = [], None
    for rate in sorted(rates):
        feat = feature_run(settings, rate, seconds, per_process, shares=True)
        pred = prediction_probe(settings, rate, seconds, per_process)
        f99 = feat["lag_ms"]["p99"]
        p99 = pred["commit_to_prediction_ms"]["p99"]
        met = bool(
            f99 is not None
            and f99 <= FEATURE_P99_MS
            and p99 is not None
            and p99 <= PREDICTION_P99_MS
            and feat["achieved_payments_per_s"] >= 0.9 * rate
            and pred["achieved_payments_per_s"] >= 0.9 * rate
        )
        probes.append({"rate": rate, "features": feat, "predictions": pred, "met": met})
        print(
            f"[bench] load {rate:.0f}/s: commit -> feature p99 {f99} ms, commit -> prediction "
            f"p99 {p99} ms, met {met}; shares {pred['cpu']['share_of_cores']}",
            flush=True,
        )
        if not met:
            break
        best = probes[-1]
    return {
        "rule": (
            f"commit -> feature p99 <= {FEATURE_P99_MS:.0f} ms and commit -> prediction p99 <= "
            f"{PREDICTION_P99_MS:.0f} ms, each probe writing >= 90% of its target"
        ),
        "seconds": seconds,
        "highest_rate": None if best is None else best["rate"],
        "at_highest": best,
        "probes": probes,
    }


# ---- report ---------------------------------------------------------------------------------
ORDER = ("writers", "postgres", "connect", "broker", "redis", "pipeline", "learner", "other")
MOVING = ("postgres", "connect", "broker", "redis", "pipeline", "learner")  # the writers: load


def pipeline_rank(d: dict[str, Any]) -> tuple[int, int, str] | None:
    """(the pipeline's rank by CPU share among the moving parts, 1 = smallest; how many; the
    smallest one's name) at the highest rate met (else the last tried), prediction probe."""
    shown = d.get("at_highest") or (d["probes"][-1] if d.get("probes") else None)
    if shown is None:
        return None
    shares = shown["predictions"]["cpu"]["share_of_cores"]
    parts = sorted((shares[n], n) for n in MOVING if shares.get(n) is not None)
    names = [n for _share, n in parts]
    if "pipeline" not in names:
        return None
    return names.index("pipeline") + 1, len(names), names[0]


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f} %"


def render(d: dict[str, Any]) -> list[str]:
    """Markdown lines for ``docs/performance.md`` (``bench.report``)."""
    at = d.get("at_highest")
    probes = d.get("probes", [])
    out = [
        "**Freshness at the highest load** (`python -m bench.freshness --load-rates ...`, "
        f"{d.get('seconds')} s per probe; rule: {d['rule']}): "
        + (
            "no rate tried met it."
            if at is None
            else f"{at['rate']:.0f} payments/s target "
            f"({at['predictions']['achieved_payments_per_s']:.0f}/s achieved)."
        ),
        "",
        "| target payments/s | commit → feature p99 ms | commit → prediction p99 ms | met |",
        "| --- | --- | --- | --- |",
    ]
    for p in probes:
        f99 = p["features"]["lag_ms"]["p99"]
        p99 = p["predictions"]["commit_to_prediction_ms"]["p99"]
        out.append(
            f"| {p['rate']:.0f} | {'n/a' if f99 is None else f'{f99:.1f}'} | "
            f"{'n/a' if p99 is None else f'{p99:.1f}'} | {'yes' if p['met'] else 'no'} |"
        )
    shown = at or (probes[-1] if probes else None)
    if shown is not None:
        cpu, fcpu = shown["predictions"]["cpu"], shown["features"].get("cpu") or {}
        label = "at that rate" if at is not None else "at the last rate tried (none met the rule)"
        out += [
            "",
            f"Share of the machine's {cpu['cores']} cores {label}, CPU time of each process "
            "(tree) over the writing window; `other` is the rest of the machine's busy time "
            "(other work on the shared machine). Prediction probe: pipeline = `learn serve` "
            "(pipeline + scoring hook), learner = `learn run`; feature probe: pipeline = "
            "`features run`, no learner.",
            "",
            "| component | prediction probe | feature probe |",
            "| --- | --- | --- |",
        ]
        for name in ORDER:
            a = cpu["share_of_cores"].get(name)
            b = (fcpu.get("share_of_cores") or {}).get(name)
            out.append(f"| {name} | {_pct(a)} | {_pct(b)} |")
        out.append(
            f"| machine busy | {_pct(cpu.get('machine_busy_share'))} | "
            f"{_pct(fcpu.get('machine_busy_share'))} |"
        )
        rank = pipeline_rank(d)
        if rank is not None:
            place, parts, smallest = rank
            out += [
                "",
                f"The pipeline's share ranks {place} of the {parts} moving parts, smallest "
                f"first (prediction probe; the smallest is {smallest}).",
            ]
    return [*out, ""]
