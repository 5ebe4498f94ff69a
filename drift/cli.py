"""``freshloop drift ...``: the drift stage's commands (registered by ``freshloop.app.cli``)."""

from __future__ import annotations

from typing import Any

import click

from freshloop.core.commands import friendly
from freshloop.core.commands import settings as _settings

__all__ = ["drift", "retrain"]


@click.group()
def drift() -> None:
    """Drift and data-quality checks, reports, and the retrains they trigger."""


@drift.command("report")
@click.option("--latest", "latest", is_flag=True, help="The newest report (the default).")
@click.option("--id", "report_id", type=int, default=None, help="The report with this id.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the report's self-contained HTML page here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def drift_report(latest: bool, report_id: int | None, html_path: str | None, as_json: bool) -> None:
    """Show a stored drift report of this namespace: a terminal summary, JSON or HTML."""
    from drift.report_cli import show_report

    show_report(latest=latest, report_id=report_id, html_path=html_path, as_json=as_json)


@drift.command("check-now")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the report's HTML page here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def drift_check_now(html_path: str | None, as_json: bool) -> None:
    """Run one drift and data-quality check now, store it, and print its summary."""
    from drift.report_cli import check_now

    check_now(html_path=html_path, as_json=as_json)


@drift.command("run")
@click.option(
    "--interval",
    type=click.FloatRange(min=1.0),
    default=None,
    help="Seconds between checks [default: FRESHLOOP_DRIFT_INTERVAL_S].",
)
@click.option(
    "--now",
    "first_now",
    is_flag=True,
    help="Run the first check right away instead of after one interval.",
)
def drift_run(interval: float | None, first_now: bool) -> None:
    """Run THE drift scheduler of this namespace until Ctrl-C / SIGTERM: check, policy, retrain."""
    import sys

    from drift.jobs import CycleResult
    from drift.scheduler import job_id, run_until_signal
    from freshloop.core.exceptions import FreshloopError
    from freshloop.core.settings import load_settings

    def show(cycle: CycleResult) -> None:
        d = cycle.decision
        line = f"[drift] report {cycle.report_id}: {d.get('action', 'none')}"
        if d.get("reasons"):
            line += f" ({'; '.join(d['reasons'])})"
        if d.get("blocked"):
            line += f", blocked: {d['blocked']}"
        if cycle.retrain is not None:
            line += (
                f" -> retrain {cycle.retrain.retrain_id} {cycle.retrain.status}: "
                f"{cycle.retrain.detail}"
            )
        if cycle.error:
            line += f" -> {cycle.error}"
        click.echo(line)

    try:
        settings = load_settings()
        if interval is not None:
            settings = settings.model_copy(update={"drift_interval_s": interval})
        click.echo(
            f"[drift] scheduler of namespace {settings.namespace!r}: job "
            f"{job_id(settings.namespace)} every {settings.drift_interval_s:g}s"
        )
        run_until_signal(settings, first_run_in_s=0.0 if first_now else None, on_cycle=show)
    except FreshloopError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    click.echo("[drift] stopped")


# ---- retrain --------------------------------------------------------------------------------
@click.command()
@click.option(
    "--reason",
    default="manual retrain",
    show_default=True,
    help="Why, as recorded in the retrains table.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def retrain(reason: str, as_json: bool) -> None:
    """Batch retrain now: recent labelled examples -> challenger, promoted only if it wins."""
    import json

    from drift.retrain import retrain as run_retrain

    def show(progress: dict[str, Any]) -> None:
        extra = f" ({progress['learned']}/{progress['of']})" if "learned" in progress else ""
        click.echo(
            f"[retrain] {progress['retrain_id']}: {progress['phase']:<11} "
            f"{progress['pct']:5.1f}%{extra}",
            err=True,
        )

    result = run_retrain(_settings(), trigger="manual", reason=reason, on_progress=show)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    champ, chall = result.champion_metrics, result.challenger_metrics
    click.echo(f"retrain {result.retrain_id}: {result.status.upper()} - {result.detail}")
    click.echo(
        f"data      {result.n_train} train + {result.n_holdout} holdout, labelled "
        f"{result.data_start} .. {result.data_end}"
    )
    click.echo(
        f"champion   {result.champion_version}: roc_auc={champ.get('roc_auc')} "
        f"log_loss={champ.get('log_loss')}"
    )
    click.echo(
        f"challenger {result.challenger_version}: roc_auc={chall.get('roc_auc')} "
        f"log_loss={chall.get('log_loss')}"
    )
