"""``make demo``: the whole loop, live, on sample writes whose fraud pattern changes mid-run.

Stack up, schema, connector, then the service (feature pipeline + scorer, learner, drift
scheduler, API with its dashboard) and the sample writes generator. The terminal shows change
events/s, commit -> feature lag, predictions/s, ROC AUC, drift status, retrains and promotions.
At the end (or on Ctrl-C) every part stops, features are checked against the SQL oracle, and a
summary with the dashboard and report addresses is printed.

The demo runs in its own namespace (``demo`` unless ``FRESHLOOP_REDIS_NAMESPACE`` says
otherwise); its learning state (models, checkpoints, examples, reports, retrains) is cleared at
start so each run shows a model learning from scratch, the drift, a retrain and the recovery.
Features and their positions are kept: they stay exact across runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table
from sqlalchemy import create_engine, text

from connectors import apply_connector, captured_tables
from feature_pipelines import verify_until_clean
from feature_pipelines.cluster_read import store_for
from freshloop.app.service import LoopSnapshot, Service
from freshloop.core.db import init_database
from freshloop.core.settings import Settings
from freshloop.core.topics import asking_again
from freshloop.simulate import SimulationReport, WorkloadConfig, run_simulation
from freshloop.stack import Stack
from online_learning import SCORING_FEATURES

__all__ = ["DemoSummary", "demo_settings", "run_demo"]

# The learnable pattern: bursts of large payments at a few risky merchants through one channel;
# at ``drift_at`` other merchants become risky and fraud moves to another channel.
DEMO_WORKLOAD = WorkloadConfig(
    customers=300,
    merchants=40,
    burst_share=0.03,
    base_fraud_rate=0.002,
    label_delay_s=2.0,
    # after the drift, fraud looks like card testing: small amounts the champion never saw
    drift_fraud_amount=(5.0, 60.0),
)
_LEARNING_TABLES = (
    "retrains",
    "drift_reports",
    "training_examples",
    "learner_checkpoints",
    "model_registry",
)


@dataclass
class DemoSummary:
    """What the demo prints at the end (and what its test checks)."""

    payments: int
    snapshot: LoopSnapshot
    verified_entities: int
    mismatches: int
    dashboard: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "payments": self.payments,
            "mismatches": self.mismatches,
            "verified_entities": self.verified_entities,
            "dashboard": self.dashboard,
            **{k: v for k, v in vars(self.snapshot).items()},
        }


def demo_settings(settings: Settings, duration: float) -> Settings:
    """The demo's pace: short label horizon, checks every ~duration/8 (at least 10 s)."""
    update: dict[str, Any] = {
        "label_horizon": timedelta(seconds=20),
        "label_grace": timedelta(seconds=10),
        "horizon_negatives": True,
        "checkpoint_every_s": 3.0,
        "champion_poll_s": 2.0,
        "learner_start": "latest",
        "score_max_age": timedelta(seconds=30),
    }
    if "redis_namespace" not in settings.model_fields_set:
        update["redis_namespace"] = "demo"
    interval = max(10.0, round(duration / 8))
    update.update(
        drift_interval_s=interval,
        drift_current_window_s=3 * interval,
        retrain_window_s=3 * interval,
        # a retrain that kept the champion (the change not yet in the labels) is tried again at
        # the next check, so a short demo still shows the swap on a slow machine
        retrain_cooldown_s=0.8 * interval,
        retrain_min_examples=200,
    )
    return settings.model_copy(update=update)


def _clear_learning_state(settings: Settings) -> None:
    engine = create_engine(settings.sqlalchemy_url())
    with engine.begin() as conn:
        for table in _LEARNING_TABLES:
            conn.execute(
                text(f"DELETE FROM {table} WHERE namespace = :ns"),  # noqa: S608 (fixed names)
                {"ns": settings.namespace},
            )
    engine.dispose()


def _backlog(service: Service, probe: Consumer) -> int:
    """Change events on the topics that the service's pipeline has not applied yet."""
    stored = service.pipeline.writer.offsets()
    total = 0
    for topic in service.pipeline.topics:
        # the stack may have just started: a partition without its leader yet is asked again
        meta = asking_again(
            lambda: probe.list_topics(topic, timeout=10).topics[topic],  # noqa: B023 - called at once
            f"metadata of {topic}",
        )
        for p in meta.partitions:
            tp = TopicPartition(topic, p)
            low, high = asking_again(
                lambda: probe.get_watermark_offsets(tp, timeout=10, cached=False),  # noqa: B023
                f"watermarks of {topic}:{p}",
            )
            total += max(0, high - max(low, stored.get(f"{topic}:{p}", low)))
    return total


def _catch_up(service: Service, console: Console, timeout: float = 900.0) -> None:
    """Wait until the pipeline applied the topics' history (a new namespace replays it)."""
    probe = Consumer(
        {"bootstrap.servers": service.settings.kafka_bootstrap, "group.id": "freshloop-probe"}
    )
    try:
        started = time.monotonic()
        deadline = started + timeout
        backlog = first = _backlog(service, probe)
        if backlog > 50:
            console.print(
                f"  catching up with {backlog} change events already on the topics "
                "(earlier runs, tests and benchmarks wrote them; a new namespace replays them)"
            )
        while backlog > 50 and time.monotonic() < deadline:
            time.sleep(3.0)
            backlog = _backlog(service, probe)
            elapsed = time.monotonic() - started
            per_s = (first - backlog) / elapsed if elapsed > 0 else None
            console.print(f"  {_catch_up_line(backlog, service.pipeline.stats.applied, per_s)}")
        if backlog > 50:
            console.print(
                f"  {backlog} change events still to apply after {timeout:.0f}s: the demo goes "
                "on while the pipeline catches up"
            )
    finally:
        probe.close()


def _catch_up_line(backlog: int, applied: int, per_s: float | None) -> str:
    """One progress line of the catch-up: what is left, the rate so far, the time left."""
    line = f"{backlog} to go ({applied} applied"
    if per_s is None or per_s <= 0:
        return line + ")"
    left = backlog / per_s
    eta = f"{left:.0f}s" if left < 120 else f"{left / 60:.0f} min"
    return line + f", {per_s:,.0f}/s, about {eta} left)"


def _fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _view(snap: LoopSnapshot, report: SimulationReport | None, phase: str) -> Table:
    table = Table(title=f"Freshloop: the loop, live ({phase})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    written = report.count("payments", "c") if report else 0
    table.add_row("payments written", str(written))
    table.add_row("change events applied", f"{snap.applied}  ({snap.events_per_s:.0f}/s)")
    table.add_row(
        "commit -> features p50 / p99",
        f"{_fmt(snap.lag_p50_ms, unit=' ms')} / {_fmt(snap.lag_p99_ms, unit=' ms')}",
    )
    table.add_row("predictions", f"{snap.scored}  ({snap.predictions_per_s:.0f}/s)")
    table.add_row("examples learned", str(snap.learned))
    table.add_row(
        "ROC AUC progressive / rolling",
        "-" if not snap.learned else f"{_fmt(snap.auc, '.3f')} / {_fmt(snap.rolling_auc, '.3f')}",
    )
    table.add_row("concept-drift alarms (ADWIN)", str(snap.concept_alarms))
    table.add_row("model", f"{snap.model_version or '-'}  (swaps: {snap.swaps})")
    share = "" if snap.drift_share is None else f", drifted share {snap.drift_share:.2f}"
    table.add_row("drift reports", f"{snap.drift_reports}  ({snap.drift_status or '-'}{share})")
    retrains = ", ".join(f"{k} {v}" for k, v in sorted(snap.retrains.items())) or "none"
    table.add_row("retrains", retrains)
    if snap.errors:
        table.add_row("[red]errors[/]", "; ".join(snap.errors)[-200:])
    return table


def run_demo(
    settings: Settings,
    *,
    rate: float,
    duration: float,
    drift_at: float | None,
    linger: float = 0.0,
    console: Console | None = None,
    api: bool = True,
    drift: bool = True,
) -> DemoSummary:
    console = console or Console()
    settings = demo_settings(settings, duration)
    root = logging.getLogger()
    saved_handlers = root.handlers[:]
    root.handlers = [RichHandler(console=console, show_path=False, level=logging.WARNING)]
    try:
        return _run(settings, rate, duration, drift_at, linger, console, api, drift)
    finally:
        root.handlers = saved_handlers


def _run(
    settings: Settings,
    rate: float,
    duration: float,
    drift_at: float | None,
    linger: float,
    console: Console,
    api: bool,
    drift: bool,
) -> DemoSummary:
    console.print("[bold]1/5[/] bringing the stack up (first time: fetch jars, init database)")
    t0 = time.monotonic()
    Stack(settings, echo=lambda m: console.print(f"  {m}")).up()
    console.print(f"  stack ready in {time.monotonic() - t0:.1f}s")
    console.print("[bold]2/5[/] applying the schema, CDC role and publication")
    tables = captured_tables(SCORING_FEATURES.tables())  # what the service's pipeline reads
    init_database(settings, capture=tables)
    console.print("[bold]3/5[/] applying the Debezium connector")
    result = apply_connector(settings, tables=tables)
    console.print(f"  {result.name}: {result.action}, {result.state}")
    console.print(f"[bold]4/5[/] starting the service in namespace '{settings.namespace}'")
    _clear_learning_state(settings)
    service = Service(settings, api=api, drift=drift)
    token = _dashboard_token(settings) if api else None
    service.start()
    _catch_up(service, console)
    if service.api_url:
        console.print(
            f"  dashboard: {service.api_url}/?token={token}   API docs: {service.api_url}/docs "
            f"(the token, '{_DEMO_DASHBOARD_NAME}', is valid {_DEMO_DASHBOARD_DAYS} day)"
        )
    drift_note = "" if drift_at is None else f", the pattern changes at {drift_at:.0f}s"
    console.print(
        f"[bold]5/5[/] writing sample payments for {duration:.0f}s at {rate:.0f}/s{drift_note}"
    )
    state: dict[str, SimulationReport | None] = {"report": None}
    stop = threading.Event()

    def write() -> None:
        config = WorkloadConfig(
            **{**vars(DEMO_WORKLOAD), "rate": rate, "drift_at": drift_at, "seed": int(time.time())}
        )
        state["report"] = run_simulation(
            settings, config, duration, on_tick=lambda r: state.update(report=r), stop=stop.is_set
        )

    writer = threading.Thread(target=write, name="simulate", daemon=True)
    writer.start()
    try:
        with Live(
            _view(service.snapshot(), None, "writing"), console=console, refresh_per_second=2
        ) as live:
            while writer.is_alive():
                time.sleep(0.5)
                live.update(_view(service.snapshot(), state["report"], "writing"))
            settle_until = time.monotonic() + max(linger, 5.0)
            while time.monotonic() < settle_until:
                time.sleep(0.5)
                live.update(_view(service.snapshot(), state["report"], "settling"))
    except KeyboardInterrupt:
        stop.set()
        console.print("stopping (Ctrl-C)")
    writer.join(timeout=30)
    snap = service.snapshot()
    store = store_for(settings, SCORING_FEATURES)  # one Redis or a cluster (redis_layout)
    # The demo's entities (other writers may share the database: their rows are not ours to judge)
    only = {
        "customer": list(range(1, DEMO_WORKLOAD.customers + 1)),
        "merchant": list(range(1, DEMO_WORKLOAD.merchants + 1)),
    }
    check = verify_until_clean(settings.postgres_conninfo(), store, wait_s=30, only=only)
    dashboard = service.api_url
    service.stop()
    report = state["report"]
    summary = DemoSummary(
        payments=report.count("payments", "c") if report else 0,
        snapshot=snap,
        verified_entities=check.entities_checked,
        mismatches=len(check.mismatches),
        dashboard=dashboard,
    )
    _print_summary(console, summary, settings, token)
    return summary


def _print_summary(
    console: Console, s: DemoSummary, settings: Settings, token: str | None = None
) -> None:
    snap = s.snapshot
    console.line()  # the live table's last line ends without one when not on a terminal
    console.print(
        f"[bold]summary[/]: {s.payments} payments; {snap.applied} changes applied "
        f"(commit -> features p50 {_fmt(snap.lag_p50_ms, unit=' ms')}, "
        f"p99 {_fmt(snap.lag_p99_ms, unit=' ms')}); {snap.scored} predictions; "
        f"{snap.learned} examples learned; ROC AUC {_fmt(snap.auc, '.3f')} "
        f"(rolling {_fmt(snap.rolling_auc, '.3f')}); {snap.concept_alarms} concept-drift alarms; "
        f"{snap.drift_reports} drift reports (latest: {snap.drift_status or '-'}); retrains: "
        f"{dict(snap.retrains) or 'none'}; model swaps: {snap.swaps}."
    )
    if snap.last_retrain is not None:
        console.print(f"[bold]latest retrain[/]: {snap.last_retrain}")
    verdict = (
        "[green]0 mismatches[/]" if s.mismatches == 0 else f"[red]{s.mismatches} mismatches[/]"
    )
    console.print(
        f"[bold]verify[/]: {s.verified_entities} entities against the SQL oracle: {verdict}"
    )
    ns_env = f"FRESHLOOP_REDIS_NAMESPACE={settings.namespace}"
    console.print(
        f"Reports: '{ns_env} freshloop drift report --latest'; dashboard and API: "
        f"'{ns_env} freshloop api serve' then {settings_api(settings, token)} (this run's "
        f"server stopped with the demo). The stack keeps running: 'freshloop stack down'."
    )
    if snap.errors:
        console.print(f"[red]errors[/]: {'; '.join(snap.errors)}")


def settings_api(settings: Settings, token: str | None = None) -> str:
    """Where ``freshloop api serve`` will listen with these settings (with the dashboard's
    ``?token=`` when given)."""
    host = "127.0.0.1" if settings.api_host in {"0.0.0.0", "::"} else settings.api_host  # noqa: S104
    query = "" if token is None else f"?token={token}"
    if settings.api_port == 0:
        page = "the address it prints" + ("" if token is None else f" + /{query}")
        return f"{page} (FRESHLOOP_API_PORT=0: a free port on {host})"
    return f"http://{host}:{settings.api_port}/{query}"


_DEMO_DASHBOARD_NAME = "demo-dashboard"
_DEMO_DASHBOARD_DAYS = 1


def _dashboard_token(settings: Settings) -> str:
    """A fresh token for the demo's dashboard (predictions:read and features:read, one day):
    the API asks for one like any other; the previous demo run's token is revoked."""
    from freshloop.app.api.exceptions import TokenError
    from freshloop.app.api.tokens import FEATURES_READ, PREDICTIONS_READ, TokenStore

    engine = create_engine(settings.sqlalchemy_url())
    try:
        store = TokenStore(engine, settings.namespace)
        with contextlib.suppress(TokenError):  # no earlier demo token: nothing to revoke
            store.revoke(_DEMO_DASHBOARD_NAME)
        scopes = [FEATURES_READ, PREDICTIONS_READ]
        created = store.create(_DEMO_DASHBOARD_NAME, scopes, expires_days=_DEMO_DASHBOARD_DAYS)
        return created.token
    finally:
        engine.dispose()
