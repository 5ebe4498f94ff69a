"""``docs/state.md`` from a ``make month`` result: charts (matplotlib, Agg) and the curve table.

The "## State budget" section belongs to whoever keeps the budget table: a regenerated page
keeps that section exactly as it found it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from bench.month_curves import curves_of

__all__ = ["write_state_doc"]

BUDGET = "## State budget"
_BUDGET_PLACEHOLDER = (
    "_Placeholder: the budget table (per class of state: its bound, what bounds it, the "
    "setting that moves it) is filled in separately; regenerating this page keeps this section._"
)

# (file, title, unit divisor, unit, which curves)
_CHARTS: list[tuple[str, str, float, str, tuple[str, ...]]] = [
    ("redis", "Redis memory", 1e6, "MB", ("redis.used_memory", "redis.namespace_bytes")),
    ("keys", "Redis keys per class", 1.0, "keys", ("redis.keys.",)),
    ("hash-bytes", "Largest entity hash (MEMORY USAGE)", 1e3, "KB", ("hash.", "max_bytes")),
    (
        "hash-fields",
        "Largest entity hash (HLEN) and expired buckets",
        1.0,
        "fields",
        ("hash.", "fields"),
    ),
    ("rss", "Process RSS", 1e6, "MB", ("rss.",)),
    (
        "postgres",
        "Postgres: tables, checkpoint, retained WAL",
        1e6,
        "MB",
        ("pg.", "checkpoint.bytes", "wal.retained_bytes"),
    ),
]


def _picks(names: list[str], spec: tuple[str, ...]) -> list[str]:
    if spec[0] == "hash.":
        return [n for n in names if n.startswith("hash.") and n.endswith(spec[1])]
    return [n for n in names if any(n == s or (s.endswith(".") and n.startswith(s)) for s in spec)]


def _charts(result: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = curves_of(result["samples"])
    names = sorted(curves)
    verdicts = result["verdicts"]
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for file, title, div, unit, spec in _CHARTS:
        picked = [n for n in _picks(names, spec) if any(v for _, v in curves[n])]
        if not picked:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
        for name in picked:
            pts = [(d, v / div) for d, v in curves[name] if v is not None]
            flat = verdicts.get(name, {}).get("flat")
            mark = {True: "flat", False: "NOT flat", None: "not judged"}[flat]
            ax.plot([d for d, _ in pts], [v for _, v in pts], marker=".", label=f"{name} ({mark})")
        settles = [verdicts[n]["settles_after_days"] for n in picked]
        known_settles = [d for d in settles if d is not None]
        if known_settles:
            ax.axvline(min(known_settles), color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("simulated day")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper left", ncol=2)
        fig.tight_layout()
        fig.savefig(out / f"{file}.png")
        plt.close(fig)
        made.append((file, title))
    return made


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:,.1f} k"
    return f"{value:,.0f}"


def _table(result: dict[str, Any]) -> list[str]:
    curves = curves_of(result["samples"])
    rows = [
        "| curve | settles after (days) | first | last | growth (judged span) | flat |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, v in sorted(result["verdicts"].items()):
        known = [x for _, x in curves.get(name, []) if x is not None]
        growth = v["growth"]
        span = (
            "–"
            if growth is None
            else ("from zero" if math.isinf(growth) else f"{growth * 100:+.1f}%")
            + f" (day {v['from_day']:g} → {v['to_day']:g})"
        )
        flat = {True: "yes", False: "**no**", None: "not judged"}[v["flat"]]
        rows.append(
            f"| `{name}` | {_days(v['settles_after_days'])} | "
            f"{_fmt(known[0] if known else None)} | "
            f"{_fmt(known[-1] if known else None)} | {span} | {flat} |"
        )
    return rows


def _kept_budget(existing: str) -> str:
    match = re.search(r"^## State budget\n(.*?)(?=^## |\Z)", existing, re.S | re.M)
    return match.group(1).strip() if match else _BUDGET_PLACEHOLDER


def write_state_doc(result: dict[str, Any], docs: Path) -> Path:
    """Write ``docs/state.md`` and its charts under ``docs/state/``; returns the page."""
    page = docs / "state.md"
    budget = _kept_budget(page.read_text()) if page.exists() else _BUDGET_PLACEHOLDER
    charts = _charts(result, docs / "state")
    cfg, ev, ver, learned = (
        result["config"],
        result["event_time"],
        result["verify"],
        result["learned"],
    )
    flat = result["flat"]
    once = "yes" if learned["exactly_once"] else "no"
    judged = [n for n, f in flat.items() if f is not None]
    not_flat = sorted(n for n, f in flat.items() if f is False)
    lines = [
        "# State over a simulated month",
        "",
        "Generated by `make month` (`python -m bench.month`) from `bench/results/month.json`; "
        'do not edit by hand except the "State budget" section.',
        "",
        f"A run of **{cfg['days']:g} simulated days** at {cfg['scale']:g}x (event time "
        f"{ev['start'][:19]} → {ev['end'][:19]} UTC in {result['wall_seconds'] / 60:.1f} wall "
        f"minutes), {cfg['customers']:,} customers, {cfg['merchants']:,} merchants, "
        f"{cfg['rate']:g} payments per wall second, outcomes for {cfg['outcome_share']:.0%} of "
        "payments arriving uniformly anywhere up to the label horizon "
        f"({result['settings']['label_horizon_s'] / 3600:g} h), status changes, corrections, "
        "refunds and deletes as usual. The pipeline with scoring (`learn serve`), the learner "
        "(`learn run`) and the drift scheduler (`drift run`) ran as separate processes on a "
        "database, connector, topics and Redis namespace of their own. Samples once per "
        "simulated day.",
        "",
        "A curve is **flat** when it grew at most "
        f"{cfg['tolerance']:.0%} over the last {cfg['last_days']:g} simulated days, judged only "
        "after it can settle (its longest window; plus the label horizon and grace for what "
        "waits on labels), on the samples taken while the writer ran, each end the median of "
        "three days (a curve that is the largest over entities: no new peak); a Postgres table may "
        "also rise by 1 MB (it moves in 8 KB pages as autovacuum reuses space) and retained "
        "WAL by 64 MB (16 MB segments). `redis.used_memory` is the whole Redis instance, "
        "shared with whatever else runs on it; `redis.namespace_bytes` is this run's keys "
        "alone.",
        "",
        "## Verdict",
        "",
        f"- curves judged: {len(judged)} of {len(flat)}; not flat: "
        + (", ".join(f"`{n}`" for n in not_flat) if not_flat else "none"),
        f"- `features verify` over every customer and merchant: {ver['entities_checked']:,} "
        f"entities, {ver['values_checked']:,} values, **{ver['mismatches']} mismatches** (read at "
        + ("the event-time watermark" if ver["event_time_read"] else "the wall clock's now")
        + ")",
        f"- outcomes: {learned['outcomes']:,} reported, {learned['outcomes_of_scored']:,} of "
        f"scored payments, {learned['learned_from_outcome']:,} learned from their outcome, "
        f"{learned['outcomes_not_learned']:,} not learned "
        f"({learned['outcomes_learned_as_horizon']:,} of them taken as horizon negatives "
        f"first); {learned['learned_from_horizon']:,} horizon negatives; payments scored twice: "
        f"{learned['scored_twice']}; **exactly once: {once}**",
        "",
        "## Charts",
        "",
        "The dashed line marks where the earliest curve of a chart can settle.",
        "",
    ]
    for file, title in charts:
        lines += [f"![{title}](state/{file}.png)", ""]
    lines += ["## Curves", "", *_table(result), "", BUDGET, "", budget, ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))
    return page


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
