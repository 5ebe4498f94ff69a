"""What ``freshloop drift report`` and ``freshloop drift check-now`` do (click lives in
``drift/cli.py``). Errors Freshloop raises on purpose end with one red line and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from freshloop.core.exceptions import FreshloopError

if TYPE_CHECKING:
    from drift.check import DriftReport

__all__ = ["check_now", "show_report"]


def _out(report: DriftReport, html_path: str | None, as_json: bool) -> None:
    from drift.report import render_terminal

    if html_path:
        Path(html_path).write_text(report.html, encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        render_terminal(report.report, report.summary, report.decision)
    if html_path:
        click.echo(f"[drift] HTML report written to {html_path}", err=as_json)


def show_report(
    *, latest: bool, report_id: int | None, html_path: str | None, as_json: bool
) -> None:
    """Print a stored report (the newest unless ``report_id``)."""
    from sqlalchemy import create_engine

    from drift.store import load_report
    from freshloop.core.settings import load_settings

    try:
        if latest and report_id is not None:
            msg = "give either --latest or --id, not both"
            raise click.UsageError(msg)
        settings = load_settings()
        engine = create_engine(settings.sqlalchemy_url())
        try:
            report = load_report(engine, settings.namespace, report_id)
        finally:
            engine.dispose()
        _out(report, html_path, as_json)
    except FreshloopError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


def check_now(*, html_path: str | None, as_json: bool) -> None:
    """Run one check now (no retrain follows: the policy's triggers are named, not acted on)."""
    from drift.check import run_check
    from freshloop.core.settings import load_settings

    try:
        report = run_check(load_settings())
        _out(report, html_path, as_json)
    except FreshloopError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
