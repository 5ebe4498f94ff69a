"""``freshloop learn ...``: the learning stage's commands (registered by ``freshloop.app.cli``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from freshloop.core.commands import friendly
from freshloop.core.commands import settings as _settings

__all__ = ["learn", "training_set"]


# ---- learn ----------------------------------------------------------------------------------
@click.group()
def learn() -> None:
    """Online learning: score at event time, learn from delayed outcomes."""


@learn.command("run")
@friendly
def learn_run() -> None:
    """Run THE learner of this namespace until Ctrl-C / SIGTERM (checkpoints on the way out)."""
    from online_learning import run_learner

    counts = run_learner(_settings())
    click.echo(
        f"[learn] stopped: {counts.predictions} predictions, {counts.outcomes} outcomes, "
        f"{counts.dead_lettered} dead-lettered, {counts.checkpoints} checkpoints"
    )


@learn.command("serve")
@friendly
def learn_serve() -> None:
    """Feature pipeline + scoring of new payments (instead of 'features run'; scale out freely)."""
    from online_learning.scoring_pipeline import serve

    stats, scorer = serve(_settings())
    click.echo(f"[learn] stopped: {stats.applied} applied, {scorer.stats.scored} scored")


@learn.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@friendly
def learn_status(as_json: bool) -> None:
    """Metrics, counts, model version and join backlog, from the newest checkpoint."""
    import json

    from online_learning import learner_status

    status = learner_status(_settings())
    if status is None:
        click.echo("[learn] no checkpoint yet: start 'freshloop learn run'")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
        return
    m = status.get("metrics", {})
    click.echo(f"checkpoint      {status['checkpoint_id']} at {status['checkpoint_at']}")
    click.echo(
        f"model           {status['model_version']} (champion {status['champion']}, "
        f"{status['model_learned']} learned)"
    )
    click.echo(
        f"examples        {status['counts'].get('learned', 0)} learned, "
        f"{status['training_examples']} in training_examples"
    )
    click.echo(
        f"metrics         roc_auc={m.get('roc_auc')} log_loss={m.get('log_loss')} "
        f"rolling_roc_auc={m.get('rolling_roc_auc')} "
        f"rolling_log_loss={m.get('rolling_log_loss')}"
    )
    click.echo(f"join backlog    {status['backlog']}")
    click.echo(f"drift alarms    {len(status.get('drift_alarms', []))}")
    click.echo(f"service         {status.get('service', {})}")


@learn.command("promote")
@click.argument("version")
@friendly
def learn_promote(version: str) -> None:
    """Make a registered model VERSION the champion (scorers and the learner follow)."""
    from sqlalchemy import create_engine

    from online_learning import ModelRegistry

    settings = _settings()
    registry = ModelRegistry(
        create_engine(settings.sqlalchemy_url()),
        settings.namespace,
        settings.model_signing_key.get_secret_value().encode(),
    )
    ref = registry.promote(version)
    click.echo(f"[learn] {ref.version} is champion since {ref.promoted_at.isoformat()}")


# ---- point-in-time training sets -------------------------------------------------------------
_WHEN = click.DateTime(
    ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
)


@click.command("training-set")
@click.option(
    "--from",
    "t1",
    type=_WHEN,
    required=True,
    help="First commit time included (UTC unless it has an offset).",
)
@click.option(
    "--to", "t2", type=_WHEN, required=True, help="Commit time where the set ends (excluded)."
)
@click.option(
    "--service",
    default=None,
    help="Feature service whose vector to build [default: FRESHLOOP_FEATURE_SERVICE].",
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), required=True, help="Parquet file to write."
)
@click.option(
    "--chunk",
    default=2000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Payments per statement and per row group.",
)
@friendly
def training_set(t1: datetime, t2: datetime, service: str | None, out: str, chunk: int) -> None:
    """Each payment committed in [--from, --to): its vector as of its commit, and its label."""
    from online_learning.training_set import build_training_set

    t1, t2 = (t if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in (t1, t2))
    report = build_training_set(
        _settings(),
        t1,
        t2,
        out,
        service=service,
        chunk=chunk,
        on_chunk=lambda r: click.echo(
            f"[training-set] {r.rows} payments, {r.rows_per_s:,.0f}/s", err=True
        ),
    )
    labels = ", ".join(f"{k} {v}" for k, v in sorted(report.labels.items())) or "none"
    click.echo(
        f"[training-set] {report.rows} payments of service {report.service} in "
        f"{report.seconds:.1f}s ({report.rows_per_s:,.0f}/s) -> {report.path}; "
        f"labels: {labels}"
    )
