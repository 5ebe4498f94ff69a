"""``freshloop features plan | apply`` (registered by ``freshloop.app.cli``; docs/features.md)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from freshloop.core.commands import friendly

__all__ = ["apply_command", "definitions_option", "plan_command"]

definitions_option = click.option(
    "--definitions",
    default=None,
    metavar="MODULE:ATTRIBUTE",
    help="The feature set, e.g. mymodule:FEATURES (default: FRESHLOOP_FEATURE_DEFINITIONS, "
    "the sample set unless set).",
)


@click.command("plan")
@definitions_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@friendly
def plan_command(definitions: str | None, as_json: bool) -> None:
    """Added, changed and removed features against the namespace's applied set, and which
    need a backfill; exit 1 when apply cannot do the plan."""
    from feature_pipelines.backfill import plan_features
    from feature_pipelines.definitions import feature_set
    from freshloop.core.settings import load_settings

    settings = load_settings()
    plan, origin = plan_features(settings, feature_set(settings, definitions))
    if as_json:
        click.echo(json.dumps({"applied_from": origin, **plan.to_dict()}, indent=2))
    else:
        click.echo(f"[plan] applied set from: {origin}")
        for line in plan.lines():
            click.echo(f"[plan] {line}")
    if plan.blocked:
        sys.exit(1)


@click.command("apply")
@definitions_option
@click.option("--yes", is_flag=True, help="Apply without asking.")
@click.option(
    "--ack-timeout",
    "ack_timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for every running pipeline to reach a batch boundary.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@friendly
def apply_command(definitions: str | None, yes: bool, ack_timeout_s: float, as_json: bool) -> None:
    """Backfill added and changed features from the database while the pipelines keep
    running, clean removed ones, then switch the applied set."""
    from feature_pipelines.backfill import apply_features, plan_features
    from feature_pipelines.definitions import feature_set
    from freshloop.core.settings import load_settings

    settings = load_settings()
    declared = feature_set(settings, definitions)
    plan, _origin = plan_features(settings, declared)
    echo = (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))
    for line in plan.lines():
        echo(f"[plan] {line}")
    if not plan.empty and not yes and not click.confirm("apply this plan?", err=True):
        click.echo("[apply] nothing done", err=True)
        return
    bar: Any = None
    last = [0]

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if as_json:
            return
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label="[apply] backfill", file=sys.stderr)
            bar.__enter__()
        bar.update(done - last[0])
        last[0] = done

    try:
        report = apply_features(
            settings, declared, echo=echo, on_progress=progress, ack_timeout_s=ack_timeout_s
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    result = {
        "generation": report.generation,
        "rows": report.rows,
        "entities": report.entities,
        "fields_cleaned": report.fields_cleaned,
        "snapshot": report.snapshot,
        "pause_ms": round(report.pause_ms, 1),
        "seconds": round(report.seconds, 2),
        "note": report.note,
        "plan": report.plan.to_dict(),
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"[apply] generation {report.generation}: {report.rows} rows into {report.entities} "
        f"entities, {report.fields_cleaned} fields cleaned, pipelines paused "
        f"{report.pause_ms:.0f} ms, {report.seconds:.1f} s"
        + (f" ({report.note})" if report.note else "")
    )
