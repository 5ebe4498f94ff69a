"""The ``freshloop`` command line: wires the stages together.

Errors Freshloop raises on purpose end the command with one clear line and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from feature_pipelines.plan_cli import definitions_option
from freshloop.core.commands import friendly
from freshloop.core.commands import settings as _settings

if TYPE_CHECKING:
    from freshloop.simulate.clock import EventClock

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="DEBUG, INFO, WARNING or ERROR (default: FRESHLOOP_LOG_LEVEL, else WARNING).",
)
def cli(log_level: str | None) -> None:
    """Freshloop: CDC-driven fresh features and feedback loops."""
    level = (log_level or os.environ.get("FRESHLOOP_LOG_LEVEL") or "WARNING").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        msg = f"FRESHLOOP_LOG_LEVEL={level!r} is not a log level: set DEBUG, INFO, WARNING or ERROR"
        raise click.UsageError(msg)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )


# ---- stack --------------------------------------------------------------------------------
@cli.group()
def stack() -> None:
    """The local stack: Postgres, Redis, Kafka (KRaft) and Kafka Connect with Debezium."""


def _stack():
    from freshloop.stack import Stack

    return Stack(_settings(), echo=lambda m: click.echo(f"[stack] {m}"))


@stack.command("up")
@click.argument("services", nargs=-1)
@friendly
def stack_up(services: tuple[str, ...]) -> None:
    """Fetch what is missing, then start the services that are not running, in order."""
    t0 = time.monotonic()
    started = _stack().up(services or None)
    took = time.monotonic() - t0
    if started:
        click.echo(f"[stack] up in {took:.1f}s (started {', '.join(started)})")
    else:
        click.echo("[stack] already up: nothing to do")


@stack.command("down")
@click.argument("services", nargs=-1)
@friendly
def stack_down(services: tuple[str, ...]) -> None:
    """Stop the services this stack started (never anything else)."""
    stopped = _stack().down(services or None)
    click.echo(f"[stack] stopped {', '.join(stopped) if stopped else 'nothing'}")


@stack.command("status")
@friendly
def stack_status() -> None:
    """Each service with its port, pid and health; exit 1 unless all are healthy."""
    rows = _stack().status()
    click.echo(f"{'service':<10}{'port':>7}{'pid':>9}  {'state':<9}health")
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        health = "ok" if row.healthy else "-"
        click.echo(f"{row.name:<10}{row.port:>7}{pid:>9}  {row.state:<9}{health}")
    if not all(r.healthy for r in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service", required=False)
@click.option("-n", "--lines", default=40, show_default=True)
@friendly
def stack_logs(service: str | None, lines: int) -> None:
    """The last lines of one service's log, or of each."""
    st = _stack()
    for svc in st.select([service] if service else None):
        click.secho(f"==> {st.log_path(svc.name)} <==", bold=True)
        click.echo(st.tail(svc.name, lines))


@stack.command("setup")
@click.option(
    "--for-tests",
    is_flag=True,
    help="Also install what only the tests need (a headless browser): make test, CI.",
)
@friendly
def stack_setup(for_tests: bool) -> None:
    """Install missing system packages (as root) and fetch the pinned jars, once."""
    _stack().setup(for_tests=for_tests)
    click.echo("[setup] system packages and jars are in place")


# ---- db -----------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """The database side: schema, CDC role, publication, signal and heartbeat tables."""


@db.command("init")
@friendly
def db_init() -> None:
    """Apply sql/*.sql idempotently, and publish the captured tables (FRESHLOOP_FEATURE_DEFINITIONS
    and the learning loop's) to the CDC role."""
    from feature_pipelines.definitions import tables_to_capture
    from freshloop.core.db import init_database

    settings = _settings()
    tables = tables_to_capture(settings)
    for name in init_database(settings, capture=tables):
        click.echo(f"[db] applied {name}")
    click.echo(f"[db] captured tables: {', '.join(tables)}")


@db.command("prune")
@click.option("--dry-run", is_flag=True, help="Show what would go; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Prune the count-kept tables of this namespace only (repeatable; default: "
    "all). Example partitions are database-wide.",
)
@friendly
def db_prune(dry_run: bool, as_json: bool, namespaces: tuple[str, ...]) -> None:
    """Apply retention now (what the drift scheduler runs every retention_interval_s)."""
    import json

    from sqlalchemy import create_engine

    from drift.prune import prune

    settings = _settings()
    engine = create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
    try:
        report = prune(engine, settings, dry_run=dry_run, namespaces=list(namespaces) or None)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for line in report.lines():
        click.echo(f"[prune] {line}")


# ---- connectors ---------------------------------------------------------------------------
@cli.group()
def connectors() -> None:
    """Manage the Debezium connector over Kafka Connect's REST API."""


def _client():
    from connectors import ConnectClient

    return ConnectClient(_settings().connect_url)


@connectors.command("apply")
@click.option(
    "--secret-mode",
    type=click.Choice(["env", "inline"]),
    default="env",
    show_default=True,
    help="env: the worker resolves ${env:FRESHLOOP_CDC_PASSWORD}.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one connector setting (repeatable); table.include.list replaces the "
    "captured tables (default: those of FRESHLOOP_FEATURE_DEFINITIONS and the learning loop).",
)
@friendly
def connectors_apply(secret_mode: str, overrides: tuple[str, ...]) -> None:
    """Validate, create or update (only if changed), and wait until RUNNING."""
    from connectors import ConnectorValidationError, apply_connector
    from feature_pipelines.definitions import tables_to_capture

    settings = _settings()
    bad = [item for item in overrides if "=" not in item]
    if bad:
        msg = f"expected KEY=VALUE, got {', '.join(bad)}"
        raise click.BadParameter(msg, param_hint="--set")
    extra = dict(item.split("=", 1) for item in overrides)
    tables = tables_to_capture(settings)
    try:
        result = apply_connector(
            settings,
            tables=tables,
            secret_mode=secret_mode,  # type: ignore[arg-type]
            overrides=extra,
        )
    except ConnectorValidationError as exc:
        click.secho(f"connector {settings.connector_name} config is invalid:", fg="red", err=True)
        for field, errors in exc.errors.items():
            for error in errors:
                click.echo(f"  {field}: {error}", err=True)
        sys.exit(2)
    click.echo(f"[connectors] {result.name}: {result.action}, {result.state}")


@connectors.command("validate")
@friendly
def connectors_validate() -> None:
    """Ask Connect to validate the rendered config; print errors field by field."""
    from connectors import render_config
    from feature_pipelines.definitions import tables_to_capture

    settings = _settings()
    config = render_config(settings, tables=tables_to_capture(settings))
    with _client() as client:
        errors = client.validate({**config, "name": settings.connector_name})
    if not errors:
        click.echo("[connectors] config is valid")
        return
    for field, errs in errors.items():
        for error in errs:
            click.echo(f"  {field}: {error}", err=True)
    sys.exit(2)


@connectors.command("status")
@friendly
def connectors_status() -> None:
    """Connector and task states (with the trace of a failed task)."""
    settings = _settings()
    with _client() as client:
        status = client.status(settings.connector_name)
    click.echo(f"{status['name']}: {status['connector']['state']}")
    for task in status.get("tasks", []):
        click.echo(f"  task {task['id']}: {task['state']}")
        if task.get("trace"):
            click.echo("    " + task["trace"].strip().splitlines()[0])


def _lifecycle(verb: str) -> Callable[[], None]:
    @friendly
    def run() -> None:
        name = _settings().connector_name
        with _client() as client:
            if verb == "delete":
                done = client.delete(name)
                click.echo(f"[connectors] {name}: {'deleted' if done else 'not there'}")
                return
            getattr(client, verb)(name)
        click.echo(f"[connectors] {name}: {verb} requested")

    run.__doc__ = f"{verb.capitalize()} the connector."
    return run


for _verb in ("pause", "resume", "restart", "delete"):
    connectors.command(_verb)(_lifecycle(_verb))


@connectors.command("snapshot")
@click.argument("tables", nargs=-1, required=True)
@friendly
def connectors_snapshot(tables: tuple[str, ...]) -> None:
    """Ask Debezium for an incremental snapshot of TABLES (re-sends their rows as op=r)."""
    from connectors import snapshot_signal
    from freshloop.core.db import connect

    row = snapshot_signal(list(tables))
    with connect(_settings()) as conn:
        conn.execute("INSERT INTO freshloop_signal (id, type, data) VALUES (%s, %s, %s)", row)
    click.echo(f"[connectors] snapshot signal {row[0]} sent for {', '.join(tables)}")


# ---- configuration reference ------------------------------------------------------------------
@cli.group()
def config() -> None:
    """The settings: every FRESHLOOP_ variable, its default and what it sets."""


@config.command("reference")
@click.option(
    "--write",
    "write_to",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Replace the generated table in this markdown file (e.g. README.md).",
)
@friendly
def config_reference(write_to: str | None) -> None:
    """Print the configuration reference (markdown), or refresh it in a file."""
    from pathlib import Path

    from freshloop.core.settings_doc import reference_table, write_readme

    if write_to is None:
        click.echo(reference_table())
        return
    changed = write_readme(Path(write_to))
    click.echo(f"[config] {write_to}: {'updated' if changed else 'already up to date'}")


# ---- simulate and demo ----------------------------------------------------------------------
@cli.command()
@click.option("--rate", default=20.0, show_default=True, help="Payments per second.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of new payments.")
@click.option(
    "--drift-at", default=None, type=float, help="Seconds after start when fraud changes."
)
@click.option("--label-delay", default=5.0, show_default=True, help="Seconds until an outcome.")
@click.option("--seed", default=7, show_default=True)
@click.option("--customers", default=300, show_default=True)
@click.option("--merchants", default=60, show_default=True)
@click.option(
    "--time-scale",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Event seconds per wall second (3600: a wall second is an hour of created_at and "
    "reported_at; the span ends now). Delays and --drift-at are then in event seconds; "
    "--rate and --duration stay wall seconds. [default: event time is the wall clock]",
)
@click.option(
    "--outcome-share",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of payments whose outcome is reported (the rest reach the label horizon).",
)
@click.option(
    "--label-delay-spread",
    default="around",
    show_default=True,
    type=click.Choice(["around", "uniform"]),
    help="around: delays of 0.5-1.5x --label-delay; uniform: anywhere in [0, --label-delay).",
)
@friendly
def simulate(
    rate: float,
    duration: float,
    drift_at: float | None,
    label_delay: float,
    seed: int,
    customers: int,
    merchants: int,
    time_scale: float | None,
    outcome_share: float,
    label_delay_spread: str,
) -> None:
    """Write realistic sample payments, status changes, deletes and outcomes."""
    from freshloop.simulate import WorkloadConfig, run_simulation

    config = WorkloadConfig(
        rate=rate,
        drift_at=drift_at,
        label_delay_s=label_delay,
        seed=seed,
        customers=customers,
        merchants=merchants,
        time_scale=time_scale,
        outcome_share=outcome_share,
        label_delay_spread="uniform" if label_delay_spread == "uniform" else "around",
    )
    report = run_simulation(
        _settings(),
        config,
        duration,
        on_tick=lambda r: click.echo(f"[simulate] {sum(r.writes.values())} writes"),
        on_start=_echo_clock,
    )
    for (table, op), n in sorted(report.writes.items()):
        click.echo(f"[simulate] {table:<17} {op}: {n}")


def _echo_clock(clock: EventClock | None, _started: float) -> None:
    if clock is not None:
        click.echo(f"[simulate] event time from {clock.start.isoformat()}, {clock.scale:g}x")


@cli.command()
@click.option("--rate", default=40.0, show_default=True, help="Payments per second.")
@click.option("--duration", default=180.0, show_default=True, help="Seconds of sample writes.")
@click.option(
    "--drift-at",
    default=None,
    type=float,
    help="Seconds after start when the fraud pattern changes [default: half the duration].",
)
@click.option("--no-drift", is_flag=True, help="Keep the fraud pattern the same all along.")
@click.option(
    "--linger",
    default=0.0,
    show_default=True,
    help="Seconds to keep serving (dashboard, API) after the writes end.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the summary as JSON to this file.",
)
@friendly
def demo(
    rate: float,
    duration: float,
    drift_at: float | None,
    no_drift: bool,
    linger: float,
    summary_json: str | None,
) -> None:
    """The whole loop live: stack, connector, features, scoring, learning, drift, retrains."""
    import json

    from freshloop.app.demo import run_demo

    if drift_at is None and not no_drift:
        drift_at = duration / 2
    summary = run_demo(
        _settings(),
        rate=rate,
        duration=duration,
        drift_at=None if no_drift else drift_at,
        linger=linger,
    )
    if summary_json:
        with open(summary_json, "w") as fh:
            json.dump(summary.as_dict(), fh, indent=2, default=str)
    if summary.mismatches:
        raise SystemExit(1)


@cli.command()
@friendly
def serve() -> None:
    """Every part of the loop in one process: pipeline + scorer, learner, drift, API."""
    from freshloop.app.service import Service

    service = Service(_settings())
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: service.stop_event.set())
    click.echo("[serve] pipeline + scorer, learner, drift scheduler and API starting")
    service.run_forever()


# ---- the stages' command groups ---------------------------------------------------------------
def _add_stages() -> None:
    from drift.cli import retrain
    from feature_pipelines.cli import features
    from online_learning.cli import learn, training_set

    features.add_command(features_list)
    cli.add_command(features)
    cli.add_command(learn)
    cli.add_command(training_set)
    cli.add_command(retrain)


@click.command("list")
@definitions_option
@friendly
def features_list(definitions: str | None) -> None:
    """Every feature definition of the set in use (the one 'features run', 'serve' and 'learn
    serve' compute), one line each, with the feature services that read it."""
    from feature_pipelines import describe
    from feature_pipelines.definitions import feature_set
    from feature_pipelines.services import services_using
    from online_learning.services import DEFAULT_SERVICE, SERVICES

    settings = _settings()
    for feature in feature_set(settings, definitions):
        users = services_using(SERVICES.values(), feature.name)
        click.echo(f"{describe(feature)} [services: {', '.join(users) or 'none'}]")
    chosen = settings.feature_service
    for service in SERVICES.values():
        marks = [
            m
            for m, on in (
                ("default", service.name == DEFAULT_SERVICE),
                ("chosen", service.name == chosen),
            )
            if on
        ]
        note = f" ({', '.join(marks)})" if marks else ""
        click.echo(
            f"service {service.name}{note}: {len(service.features)} features over "
            f"{', '.join(service.tables())}. {service.description}"
        )


_add_stages()


# ---- api (its module imports FastAPI only when a command runs) -------------------------------
def _add_api() -> None:
    from freshloop.app.api.cli import api

    cli.add_command(api)


_add_api()


# ---- drift (``drift run``: the scheduler; see drift/cli.py) -----------------------------------
def _add_drift() -> None:
    from drift.cli import drift

    cli.add_command(drift)


_add_drift()


# ---- skew (``skew report``: logged vectors against the row history; see drift/skew_cli.py) ----
def _add_skew() -> None:
    from drift.skew_cli import skew

    cli.add_command(skew)


_add_skew()


def main() -> None:
    """Console entry point."""
    cli(prog_name="freshloop")


if __name__ == "__main__":
    main()
