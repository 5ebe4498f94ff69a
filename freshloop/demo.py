"""``make demo``: bring the stack up, apply schema and connector, write sample data, and show
the change events flowing (per table and kind, rate, and commit -> Kafka lag) in a live view."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import orjson
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from connectors import CAPTURED_TABLES, apply_connector
from feature_pipelines import (
    SAMPLE_FEATURES,
    FeaturePipeline,
    FeatureStore,
    PipelineStats,
    verify_until_clean,
)
from freshloop.db import init_database
from freshloop.settings import Settings
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from freshloop.stack import Stack

__all__ = ["run_demo"]


class _EventTally:
    """Counts change events per (table, op) and keeps commit -> Kafka lags."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lags_ms: list[float] = []
        self.total = 0

    def add(self, value: bytes | None, kafka_ts_ms: int) -> None:
        if value is None:
            self.counts[("(tombstone)", "-")] += 1
            return
        event = orjson.loads(value)
        source = event.get("source") or {}
        self.counts[(source.get("table", "?"), event.get("op", "?"))] += 1
        self.total += 1
        if source.get("ts_ms") and event.get("op") != "r":
            self.lags_ms.append(kafka_ts_ms - source["ts_ms"])

    def percentile(self, q: float) -> float:
        if not self.lags_ms:
            return float("nan")
        ordered = sorted(self.lags_ms[-5000:])
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values[-5000:])
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _view(
    tally: _EventTally,
    report: SimulationReport | None,
    rate: float,
    done: bool,
    stats: PipelineStats,
) -> Table:
    table = Table(title="Freshloop: change events flowing" + (" (done)" if done else ""))
    table.add_column("table")
    table.add_column("op")
    table.add_column("events", justify="right")
    table.add_column("written", justify="right")
    writes = report.writes if report else Counter()
    for (name, op), n in sorted(tally.counts.items()):
        table.add_row(name, op, str(n), str(writes.get((name, op), "")))
    table.caption = (
        f"{tally.total} events, {rate:.0f}/s now\n"
        f"commit -> Kafka p50 {tally.percentile(0.5):.0f} ms, p99 {tally.percentile(0.99):.0f} ms"
        f"\ncommit -> features in Redis p50 {_pct(stats.lags_ms, 0.5):.0f} ms, "
        f"p99 {_pct(stats.lags_ms, 0.99):.0f} ms\n"
        f"features: {stats.applied} applied, {stats.duplicates} duplicates dropped, "
        f"{stats.dead_lettered} dead-lettered"
    )
    return table


def run_demo(settings: Settings, *, rate: float, duration: float, drift_at: float | None) -> None:
    console = Console()
    console.print("[bold]1/4[/] bringing the stack up (first time: fetch jars, init database)")
    t0 = time.monotonic()
    Stack(settings, echo=lambda m: console.print(f"  {m}")).up()
    console.print(f"  stack ready in {time.monotonic() - t0:.1f}s")
    console.print("[bold]2/4[/] applying the schema, CDC role and publication")
    init_database(settings)
    console.print("[bold]3/4[/] applying the Debezium connector")
    result = apply_connector(settings)
    console.print(f"  {result.name}: {result.action}, {result.state}")
    console.print(f"[bold]4/4[/] writing sample payments for {duration:.0f}s at {rate:.0f}/s")

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"freshloop-demo-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    start_ms = int(time.time() * 1000)

    def from_now(c: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = start_ms
        c.assign(c.offsets_for_times(partitions, timeout=10))

    consumer.subscribe([settings.topic(t) for t in CAPTURED_TABLES], on_assign=from_now)
    tally = _EventTally()
    state: dict[str, SimulationReport | None] = {"report": None}
    stop = threading.Event()
    # Wait for the assignment so no event of the run is missed.
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)

    def write() -> None:
        config = WorkloadConfig(
            rate=rate, drift_at=drift_at, label_delay_s=3.0, seed=int(time.time())
        )
        state["report"] = run_simulation(
            settings,
            config,
            duration,
            on_tick=lambda r: state.update(report=r),
            stop=stop.is_set,
        )

    pipeline = FeaturePipeline(settings)
    features_thread = threading.Thread(target=pipeline.run, name="features", daemon=True)
    features_thread.start()
    writer = threading.Thread(target=write, name="simulate", daemon=True)
    writer.start()
    window: list[tuple[float, int]] = []
    try:
        with Live(
            _view(tally, None, 0, False, pipeline.stats), console=console, refresh_per_second=4
        ) as live:
            idle_since = None
            while True:
                for msg in consumer.consume(500, timeout=0.25):
                    if msg.error() is None:
                        tally.add(msg.value(), msg.timestamp()[1])
                now = time.monotonic()
                window = [(t, n) for t, n in window if now - t <= 2.0] + [(now, tally.total)]
                rate_now = (window[-1][1] - window[0][1]) / max(1e-3, now - window[0][0])
                live.update(_view(tally, state["report"], rate_now, False, pipeline.stats))
                if not writer.is_alive():
                    idle_since = idle_since or now
                    if now - idle_since > 3.0:
                        live.update(_view(tally, state["report"], 0, True, pipeline.stats))
                        break
    except KeyboardInterrupt:
        stop.set()
        console.print("stopping (Ctrl-C)")
    finally:
        writer.join(timeout=30)
        consumer.close()
    store = FeatureStore.connect(settings.redis_url, SAMPLE_FEATURES, settings.namespace)
    check = verify_until_clean(settings.postgres_conninfo(), store, wait_s=15)
    pipeline.stop.set()
    features_thread.join(timeout=30)
    stats = pipeline.stats
    console.print(
        f"[bold]summary[/]: {tally.total} change events; commit -> Kafka p50 "
        f"{tally.percentile(0.5):.0f} ms, p99 {tally.percentile(0.99):.0f} ms; "
        f"commit -> features p50 {_pct(stats.lags_ms, 0.5):.0f} ms, "
        f"p99 {_pct(stats.lags_ms, 0.99):.0f} ms; {stats.applied} changes applied, "
        f"{stats.duplicates} duplicates dropped, {stats.dead_lettered} dead-lettered."
    )
    verdict = (
        "[green]0 mismatches[/]" if check.ok else f"[red]{len(check.mismatches)} mismatches[/]"
    )
    console.print(
        f"[bold]verify[/]: {check.entities_checked} entities, {check.values_checked} feature "
        f"values against the SQL oracle: {verdict}"
    )
    console.print(
        "Try: 'freshloop features get customer 1'. The stack keeps running: "
        "'freshloop stack status', 'freshloop stack down'."
    )
