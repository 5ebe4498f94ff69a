"""``freshloop features ...``: the feature stage's commands (registered by ``freshloop.app.cli``;
``features list``, which names the services of every stage, is the app's)."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click

from feature_pipelines.plan_cli import definitions_option
from freshloop.core.commands import friendly
from freshloop.core.commands import settings as _settings
from freshloop.core.settings import Settings

__all__ = ["features"]


# ---- features -------------------------------------------------------------------------------
@click.group()
def features() -> None:
    """Incremental features from change events, in Redis."""


def _store(definitions: str | None):
    from feature_pipelines.cluster_read import layout_client, store_for
    from feature_pipelines.definitions import feature_set
    from feature_pipelines.registry import serving_set

    settings = _settings()
    declared = feature_set(settings, definitions)  # a bad name stops here, before any I/O
    client = layout_client(settings)  # one Redis, or a Redis Cluster (redis_layout)
    # after 'features apply', the set it recorded (what the pipelines compute)
    features = serving_set(client, settings.namespace, declared)
    return store_for(settings, features, client=client)


@features.command("get")
@click.argument("entity")
@click.argument("key")
@definitions_option
@friendly
def features_get(entity: str, key: str, definitions: str | None) -> None:
    """Feature values of one entity, with freshness (the set 'features apply' recorded, else
    the one in use)."""
    store = _store(definitions)
    try:
        result = store.get(entity, key)
    except KeyError as exc:
        click.secho(f"error: {exc.args[0]}", fg="red", err=True)
        sys.exit(2)
    for name, value in result.values.items():
        click.echo(f"{name:<28} {value}")
    age = "never written" if result.age_ms is None else f"{result.age_ms} ms since commit"
    click.echo(f"{'(freshness)':<28} {age}")


@features.command("verify")
@click.option("--sample", type=int, default=None, help="Check a random sample of N entities.")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to let the pipeline catch up before reporting mismatches.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Compare at this instant (UTC unless it has an offset; "
    "default: now), e.g. the event-time watermark of a replay or simulation.",
)
@definitions_option
@friendly
def features_verify(
    sample: int | None, wait_s: float, at: datetime | None, definitions: str | None
) -> None:
    """Compare online values with the SQL oracle; exit 1 on any mismatch (the set 'features
    apply' recorded, else the one in use)."""
    from feature_pipelines import verify_until_clean

    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    settings = _settings()
    store = _store(definitions)
    report = verify_until_clean(
        settings.postgres_conninfo(), store, wait_s=wait_s, sample=sample, at=at
    )
    for m in report.mismatches[:200]:
        click.echo(f"MISMATCH {m.entity} {m.key} {m.feature}: online={m.online} sql={m.oracle}")
    kinds = ", ".join(f"{n} {kind}" for kind, n in report.by_entity.items())
    click.echo(
        f"[verify] {report.entities_checked} entities ({kinds}), {report.values_checked} values "
        f"at {report.at.isoformat()}: {len(report.mismatches)} mismatches"
    )
    if not report.ok:
        sys.exit(1)


@features.command("run")
@click.option(
    "--stats-json",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write counts and commit->visible lag percentiles here on exit.",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run this many pipeline processes in one consumer group (they share the change "
    "topics' partitions; more processes than partitions idle). The i-th process serves its "
    "metrics on FRESHLOOP_METRICS_PORT + i; with --stats-json, the file holds each process's "
    "summary.",
)
@definitions_option
@friendly
def features_run(stats_json: str | None, processes: int, definitions: str | None) -> None:
    """Run the feature pipeline until Ctrl-C / SIGTERM."""
    from feature_pipelines import run_pipeline
    from feature_pipelines.definitions import feature_set

    settings = _settings()
    features = feature_set(settings, definitions)  # a bad name stops here, before any I/O
    if processes > 1:
        if definitions is not None:  # the processes load the same set
            settings = settings.model_copy(update={"feature_definitions": definitions})
        sys.exit(_features_run_group(settings, processes, stats_json))
    stats = run_pipeline(settings, features)
    if stats_json:
        import json
        from pathlib import Path

        Path(stats_json).write_text(json.dumps(stats.summary()))
    click.echo(
        f"[features] stopped: {stats.applied} applied, {stats.duplicates} duplicates, "
        f"{stats.dead_lettered} dead-lettered"
    )


def _features_run_group(settings: Settings, processes: int, stats_json: str | None) -> int:
    """``features run --processes N``: N ``features run`` processes in one consumer group,
    each with the settings of this one; SIGINT/SIGTERM is passed on to all. The exit code is
    the first non-zero one of the processes, else 0."""
    import json
    import signal
    import subprocess
    import tempfile
    from pathlib import Path

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    folder = Path(tempfile.mkdtemp(prefix="freshloop-run-"))
    procs = []
    for i in range(processes):
        port = settings.metrics_port + i if settings.metrics_port else 0
        env = settings.model_copy(update={"metrics_port": port}).environment(os.environ)
        procs.append(
            subprocess.Popen(  # noqa: S603 (this interpreter and module, fixed arguments)
                [sys.executable, "-m", "freshloop.app.cli", "--log-level", level]
                + ["features", "run", "--stats-json", str(folder / f"{i}.json")],
                env=env,
            )
        )

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    codes = [proc.wait() for proc in procs]
    summaries = []
    for i in range(processes):
        path = folder / f"{i}.json"
        summaries.append(json.loads(path.read_text()) if path.exists() else None)
        path.unlink(missing_ok=True)
    folder.rmdir()
    done = [s for s in summaries if s is not None]
    totals = {k: sum(s[k] for s in done) for k in ("applied", "duplicates", "dead_lettered")}
    if stats_json:
        Path(stats_json).write_text(json.dumps({**totals, "processes": summaries}))
    click.echo(
        f"[features] {processes} processes stopped (exit codes {codes}): {totals['applied']} "
        f"applied, {totals['duplicates']} duplicates, {totals['dead_lettered']} dead-lettered"
    )
    return next((c for c in codes if c != 0), 0)


@features.command("rebuild")
@click.option(
    "--reset-connector",
    is_flag=True,
    help="Also make the connector forget its offsets and snapshot the live database "
    "again (after the source database was replaced or restored).",
)
@definitions_option
@friendly
def features_rebuild(reset_connector: bool, definitions: str | None) -> None:
    """Drop the namespace's features and positions and start it again from the live database
    (stop its 'features run' first)."""
    from feature_pipelines.definitions import feature_set
    from feature_pipelines.source import rebuild_namespace

    settings = _settings()
    rebuild_namespace(
        settings,
        feature_set(settings, definitions),
        reset_connector=reset_connector,
        echo=click.echo,
    )


# ``features plan | apply``: definitions changed in a running namespace, backfilled exactly
# (see feature_pipelines/plan_cli.py and docs/features.md)
def _add_features_plan() -> None:
    from feature_pipelines.plan_cli import apply_command, plan_command

    features.add_command(plan_command)
    features.add_command(apply_command)


_add_features_plan()
