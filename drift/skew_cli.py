"""``freshloop skew report``: the skew audit (registered by ``freshloop.app.cli``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

__all__ = ["lines", "skew"]


@click.group()
def skew() -> None:
    """Online/offline skew: logged vectors against point-in-time vectors from the row history."""


@skew.command("report")
@click.option(
    "--from",
    "start",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Examples scored at or after this time (ISO 8601, UTC when no offset).",
)
@click.option(
    "--to",
    "end",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Examples scored before this time.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="The newest this many examples of the range (default: FRESHLOOP_SKEW_SAMPLE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole audit as JSON.")
def skew_report(
    start: datetime | None, end: datetime | None, limit: int | None, as_json: bool
) -> None:
    """Per input, the share of logged examples that differs from the history beyond the
    tolerance (FRESHLOOP_SKEW_TOLERANCE_S), and the largest differences. Exits 1 on a warning."""
    import orjson

    from drift.skew_audit import audit
    from freshloop.core.exceptions import FreshloopError
    from freshloop.core.settings import load_settings

    start = None if start is None or start.tzinfo else start.replace(tzinfo=UTC)
    end = None if end is None or end.tzinfo else end.replace(tzinfo=UTC)
    try:
        summary = audit(load_settings(), start=start, end=end, limit=limit)
    except FreshloopError as exc:
        raise click.ClickException(str(exc)) from exc
    out = summary.to_dict()
    if as_json:
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in lines(out):
            click.echo(line)
    if summary.status == "warning":
        sys.exit(1)


def lines(audit: Mapping[str, Any]) -> list[str]:
    """The audit as terminal lines: the verdict, then one line per input that was compared."""
    ex = audit.get("examples") or {}
    out = [
        f"skew {audit.get('status')}: {audit.get('compared')} of {audit.get('sampled')} examples "
        f"compared ({audit.get('no_history')} without history), exact {ex.get('exact', 0)}, "
        f"within {audit.get('tolerance_s')} s {ex.get('tolerated', 0)}, "
        f"beyond {ex.get('beyond', 0)}; scored {audit.get('from')} .. {audit.get('to')}"
    ]
    for name, s in (audit.get("inputs") or {}).items():
        worst = s.get("largest") or []
        tail = (
            "; largest: "
            + ", ".join(
                f"payment {d['payment_id']} logged {d['logged']:g} history {d['recomputed']:g}"
                for d in worst[:3]
            )
            if worst
            else ""
        )
        out.append(
            f"  {name}: beyond {s['beyond']}/{s['compared']} ({100 * s['beyond_share']:.1f}%), "
            f"within tolerance {s['tolerated']}{tail}"
        )
    unmatched = audit.get("unmatched_inputs") or {}
    if unmatched:
        out.append(
            "  not compared (logged or recomputed alone, another feature service): "
            + ", ".join(f"{k} ({v})" for k, v in unmatched.items())
        )
    return out
