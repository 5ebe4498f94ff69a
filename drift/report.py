"""A drift report as people read it: a self-contained HTML page, or a terminal summary.

The page has no external script, style sheet or font (the machine may be offline; the page may
be mailed): charts are inline SVG drawn here. Every text that came from data is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_html", "render_terminal"]

_REF, _CUR = "#4e79a7", "#f28e2b"
_STATUS_COLOUR = {
    "ok": "#2e7d32",
    "warning": "#ef6c00",
    "drift": "#c62828",
    "insufficient_data": "#616161",
}

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:4px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#fafafa}.num{text-align:right;
font-variant-numeric:tabular-nums}.badge{display:inline-block;padding:2px 10px;border-radius:10px;
color:#fff;font-weight:600}.bad{color:#c62828;font-weight:600}.good{color:#2e7d32}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e0e0e0;border-radius:6px;
padding:8px}.card h3{font-size:13px;margin:0 0 4px}.muted{color:#777}.legend span{margin-right:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "unknown"
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def _short(value: Any) -> str:
    """An argument as text; long lists (the column set) shortened to a count."""
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} names]"
    return _fmt(value)


def _bars(
    labels: Sequence[str],
    ref: Sequence[float],
    cur: Sequence[float],
    width: int = 300,
    height: int = 120,
) -> str:
    """Grouped bars: reference and current proportion per bin."""
    n = max(len(ref), len(cur), 1)
    top = max([*ref, *cur, 1e-9])
    pad, base = 4, height - 16
    slot = (width - 2 * pad) / n
    bar = max(slot / 2 - 1, 1)
    parts = [f'<svg width="{width}" height="{height}" role="img" viewBox="0 0 {width} {height}">']
    for i in range(n):
        x = pad + i * slot
        for j, (values, colour) in enumerate(((ref, _REF), (cur, _CUR))):
            v = values[i] if i < len(values) else 0.0
            h = (base - 4) * v / top
            title = f"{labels[i] if i < len(labels) else i}: {'reference' if j == 0 else 'current'}"
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(title)} '
                f"{v:.3f}</title></rect>"
            )
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#999"/>')
    if labels:
        parts.append(
            f'<text x="{pad}" y="{height - 3}" font-size="10" fill="#777">{_e(labels[0])}</text>'
        )
        parts.append(
            f'<text x="{width - pad}" y="{height - 3}" font-size="10" fill="#777" '
            f'text-anchor="end">{_e(labels[-1])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _lines(
    xs: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    colours: Sequence[str],
    width: int = 520,
    height: int = 170,
) -> str:
    """Line chart of a few series over the reports (x: report order, labelled by id)."""
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not xs or not values:
        return '<p class="muted">no history yet</p>'
    lo, hi = min(0.0, min(values)), max(values)
    hi = hi if hi > lo else lo + 1.0
    left, right, top, bottom = 40, 10, 8, 22
    w, h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (w * i / (len(xs) - 1) if len(xs) > 1 else w / 2)

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg width="{width}" height="{height}" role="img" viewBox="0 0 {width} {height}">',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{left - 4}" y="{top + h}" font-size="10" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{left}" y="{height - 4}" font-size="10">#{_e(xs[0])}</text>',
        f'<text x="{left + w}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"#{_e(xs[-1])}</text>",
    ]
    for (name, s), colour in zip(series.items(), colours, strict=False):
        points = [(x(i), y(v)) for i, v in enumerate(s) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" '
                f'stroke-width="2"><title>{_e(name)}</title></polyline>'
            )
        for px, py in points:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>')
    parts.append("</svg>")
    legend = "".join(
        f'<span style="color:{c}">&#9632; {_e(n)}</span>'
        for n, c in zip(series, colours, strict=False)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def _bin_labels(drift: Mapping[str, Any]) -> list[str]:
    bins = drift.get("bins") or []
    if drift.get("kind") == "categorical":
        return [f"{b:g}" for b in bins]
    if not bins:
        return []
    return [
        f"< {bins[0]:.3g}",
        *[f"[{a:.3g}, {b:.3g})" for a, b in zip(bins, bins[1:], strict=False)],
        f">= {bins[-1]:.3g}",
    ]


def _card(name: str, d: Mapping[str, Any]) -> str:
    flag = (
        '<span class="bad">drifted</span>'
        if d.get("drifted")
        else '<span class="good">stable</span>'
    )
    stat = (
        f"{_e(d.get('method'))} {_fmt(d.get('statistic'))}"
        + (f", p={_fmt(d.get('p_value'), 3)}" if d.get("p_value") is not None else "")
        + f", PSI {_fmt(d.get('psi'), 3)}"
    )
    return (
        f'<div class="card"><h3>{_e(name)} &middot; {flag}</h3>'
        f'<div class="muted">{stat}; mean {_fmt(d.get("reference_mean"))} &rarr; '
        f"{_fmt(d.get('current_mean'))}</div>"
        f"{_bars(_bin_labels(d), d.get('reference_hist') or [], d.get('current_hist') or [])}"
        "</div>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], num: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _quality_section(q: Mapping[str, Any] | None) -> str:
    if not q:
        return '<p class="muted">not run: the current window is empty</p>'
    st = q.get("statistics") or {}
    verdict = (
        '<span class="good">passed</span>'
        if q.get("success")
        else '<span class="bad">failed</span>'
    )
    results = sorted(q.get("results") or [], key=lambda r: (r.get("success"), str(r.get("column"))))
    passed: list[list[str]] = []
    failed: list[list[str]] = []
    for r in results:
        observed = r.get("details") or r.get("observed_value")
        if observed is None and r.get("unexpected_count") is not None:
            share = _fmt(r.get("unexpected_percent"), 3)
            observed = f"{r['unexpected_count']} unexpected ({share}%)"
        ok = '<span class="good">ok</span>' if r.get("success") else '<span class="bad">FAIL</span>'
        kwargs = ", ".join(f"{k}={_short(v)}" for k, v in (r.get("kwargs") or {}).items())
        partial = r.get("partial_unexpected")
        sample = _e(_fmt(partial)) if partial and not r.get("success") else ""
        row = [
            ok,
            _e(r.get("expectation")),
            _e(r.get("column") or "(table)"),
            _e(kwargs),
            _e(_fmt(observed)),
            sample,
        ]
        (passed if r.get("success") else failed).append(row)
    headers = ["", "expectation", "column", "arguments", "observed", "unexpected"]
    return (
        f"<p>Great Expectations {_e(q.get('great_expectations_version'))}: {verdict}, "
        f"{_e(st.get('successful'))} of {_e(st.get('evaluated'))} expectations met over "
        f"{_e(q.get('n_rows'))} rows.</p>"
        + (_table(headers, failed) if failed else "")
        + f"<details><summary>{len(passed)} expectations met</summary>"
        + _table(headers, passed)
        + "</details>"
    )


def _skew_section(skew: Mapping[str, Any] | None) -> str:
    """Logged vectors against the row history (``drift.skew``): the verdict, then the inputs
    that differ beyond the tolerance, or none."""
    if not skew:
        return '<p class="muted">not run (FRESHLOOP_SKEW_SAMPLE=0)</p>'
    if skew.get("error"):
        return f'<p class="bad">the audit could not run: {_e(skew.get("error"))}</p>'
    status = str(skew.get("status"))
    ex = skew.get("examples") or {}
    verdict = (
        f"<span class='badge' style='background:{_STATUS_COLOUR.get(status, '#616161')}'>"
        f"{_e(status)}</span>"
    )
    head = (
        f"<p>{verdict} {_e(skew.get('compared'))} of {_e(skew.get('sampled'))} newest logged "
        f"examples compared with their vectors as of their commit ({_e(skew.get('no_history'))} "
        f"without history): {_e(ex.get('exact', 0))} exact, {_e(ex.get('tolerated', 0))} equal "
        f"within {_e(skew.get('tolerance_s'))} s of the commit, <b>{_e(ex.get('beyond', 0))}</b> "
        "beyond.</p>"
    )
    inputs = skew.get("inputs") or {}
    rows = [
        [
            _e(name),
            _e(s.get("compared")),
            _e(s.get("tolerated")),
            '<span class="bad">' + _e(s.get("beyond")) + "</span>" if s.get("beyond") else "0",
            _fmt(s.get("beyond_share"), 3),
            _e(
                ", ".join(
                    f"payment {d['payment_id']}: logged {_fmt(d['logged'])}, "
                    f"history {_fmt(d['recomputed'])}"
                    for d in (s.get("largest") or [])[:3]
                )
            ),
        ]
        for name, s in sorted(inputs.items(), key=lambda kv: (-(kv[1].get("beyond") or 0), kv[0]))
    ]
    return head + _table(
        ["input", "compared", "within tolerance", "beyond", "share beyond", "largest differences"],
        rows,
        num=(1, 2, 3, 4),
    )


def render_html(
    report: Mapping[str, Any], summary: Mapping[str, Any], decision: Mapping[str, Any]
) -> str:
    """The whole page of one report (``report`` as stored in ``drift_reports.report``)."""
    status = str(report.get("status"))
    colour = _STATUS_COLOUR.get(status, "#616161")
    champion = report.get("champion") or {}
    ref, cur = report.get("reference") or {}, report.get("current") or {}
    head = (
        f"<h1>Drift report #{_e(report.get('report_id'))} &middot; namespace "
        f"{_e(report.get('namespace'))}</h1><p><span class='badge' style='background:"
        f"{colour}'>{_e(status)}</span> at {_e(report.get('created_at'))}; champion "
        f"{_e(champion.get('version', 'none'))}</p><p class='muted'>reference ("
        f"{_e(ref.get('kind'))}): {_e(ref.get('n'))} rows labelled {_e(ref.get('start'))} "
        f"&rarr; {_e(ref.get('end'))}<br>current: {_e(cur.get('n'))} rows labelled "
        f"{_e(cur.get('start'))} &rarr; {_e(cur.get('end'))}</p>"
    )
    reasons = decision.get("reasons") or []
    dec = (
        f"<h2>Decision</h2><p><b>{_e(decision.get('action', 'none'))}</b>"
        + (f": {_e('; '.join(map(str, reasons)))}" if reasons else ": no trigger fired")
        + (f"<br>blocked: {_e(decision.get('blocked'))}" if decision.get("blocked") else "")
        + "</p>"
    )
    headline = "<h2>Headline</h2>" + _table(
        ["measure", "value"], [[_e(k), _e(_fmt(v))] for k, v in summary.items()]
    )
    history = list(report.get("history") or [])
    now_point = {"report_id": report.get("report_id"), **summary}
    points = [*history, now_point]
    xs = [str(p.get("report_id")) for p in points]
    over_time = (
        "<h2>Over time</h2><div class='grid'><div class='card'><h3>drift scores</h3>"
        + _lines(
            xs,
            {
                "dataset drift share": [p.get("dataset_drift_share") for p in points],
                "score PSI": [p.get("score_drift") for p in points],
            },
            ["#c62828", "#6a1b9a"],
        )
        + "</div><div class='card'><h3>ROC AUC</h3>"
        + _lines(
            xs,
            {
                "current window": [p.get("auc") for p in points],
                "baseline": [p.get("baseline_auc") for p in points],
            },
            [_CUR, _REF],
        )
        + "</div></div>"
    )
    feats = report.get("features") or {}
    order = sorted(feats, key=lambda n: (not feats[n].get("drifted"), n))
    legend = (
        f"<div class='legend'><span style='color:{_REF}'>&#9632; reference</span>"
        f"<span style='color:{_CUR}'>&#9632; current</span></div>"
    )
    perf = report.get("performance") or {}
    outputs = (
        "<h2>Scores, labels and performance</h2>"
        + legend
        + "<div class='grid'>"
        + _card("score", report.get("score") or {})
        + _card("label (fraud rate)", report.get("label") or {})
        + "</div>"
        + _table(
            [
                "",
                "current window",
                "baseline (" + _e(perf.get("baseline_source")) + ")",
                "learner (rolling)",
            ],
            [
                [
                    "ROC AUC",
                    _fmt(perf.get("auc")),
                    _fmt(perf.get("baseline_auc")),
                    _fmt((perf.get("learner") or {}).get("rolling_roc_auc")),
                ],
                [
                    "log loss",
                    _fmt(perf.get("log_loss")),
                    _fmt(perf.get("baseline_log_loss")),
                    _fmt((perf.get("learner") or {}).get("rolling_log_loss")),
                ],
            ],
            num=(1, 2, 3),
        )
    )
    concept = report.get("concept") or {}
    new = concept.get("new_alarms") or []
    concept_html = (
        f"<h2>Concept drift (learner's ADWIN)</h2><p>{len(new)} new alarm(s) since "
        "the previous report"
        + (f" (at learned examples {_e(_fmt(new))})" if new else "")
        + f"; {_e(concept.get('alarms_total', 0))} in the learner's history.</p>"
    )
    fresh = report.get("freshness") or {}
    lag, stale = fresh.get("lag") or {}, fresh.get("stale") or {}
    consumers = [
        [
            _e(c.get("consumer_id")),
            _fmt(c.get("events_per_s")),
            _fmt(c.get("lag_p50_ms")),
            _fmt(c.get("lag_p99_ms")),
            _fmt(c.get("applied_total")),
        ]
        for c in lag.get("consumers") or []
    ]
    fresh_html = (
        f"<h2>Freshness</h2><p>commit &rarr; visible lag p99: "
        f"<b>{_e(_fmt(lag.get('p99_ms')))}</b> ms"
        + (f" ({_e(lag.get('error'))})" if lag.get("error") else "")
        + f"<br>stale entities: <b>{_e(_fmt(stale.get('stale')))}</b> of "
        f"{_e(stale.get('checked', 0))} recently active customers checked against the "
        "SQL oracle"
        + (f" ({_e(stale.get('error'))})" if stale.get("error") else "")
        + (f": {_e(_fmt(stale.get('entities')))}" if stale.get("entities") else "")
        + "</p>"
        + (
            _table(
                ["consumer", "events/s", "lag p50 ms", "lag p99 ms", "applied"],
                consumers,
                num=(1, 2, 3, 4),
            )
            if consumers
            else ""
        )
    )
    feature_rows = [
        [
            _e(n),
            _e(feats[n].get("kind")),
            _e(feats[n].get("method")),
            _fmt(feats[n].get("statistic")),
            _fmt(feats[n].get("p_value"), 3),
            _fmt(feats[n].get("psi"), 3),
            '<span class="bad">yes</span>' if feats[n].get("drifted") else "no",
        ]
        for n in order
    ]
    feature_html = (
        f"<h2>Features ({_e(len(summary.get('drifted_features') or []))} of "
        f"{_e(len(feats))} drifted)</h2>"
        + _table(
            ["feature", "kind", "test", "statistic", "p", "PSI", "drifted"],
            feature_rows,
            num=(3, 4, 5),
        )
        + legend
        + "<div class='grid'>"
        + "".join(_card(n, feats[n]) for n in order)
        + "</div>"
    )
    quality_html = "<h2>Data quality</h2>" + _quality_section(report.get("quality"))
    quality_html += "<h2>Online/offline skew</h2>" + _skew_section(report.get("skew"))
    unjudged = (report.get("warmup") or {}).get("unjudged") or {}
    if unjudged:
        feature_html += (
            "<h3>Not judged (still filling up, or growing by construction)</h3>"
            + _table(["input", "why"], [[_e(n), _e(why)] for n, why in sorted(unjudged.items())])
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Drift report "
        f"#{_e(report.get('report_id'))} ({_e(status)})</title><style>{_CSS}</style></head>"
        f"<body>{head}{dec}{headline}{over_time}{outputs}{concept_html}{fresh_html}"
        f"{quality_html}{feature_html}</body></html>"
    )


def render_terminal(
    report: Mapping[str, Any],
    summary: Mapping[str, Any],
    decision: Mapping[str, Any],
    console: Any = None,
) -> None:
    """Print a short summary of one report with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    status = str(report.get("status"))
    style = {"ok": "green", "warning": "yellow", "drift": "bold red"}.get(status, "dim")
    champion = (report.get("champion") or {}).get("version", "none")
    console.print(
        f"drift report #{report.get('report_id')} of {report.get('namespace')!r} at "
        f"{report.get('created_at')}: [{style}]{status}[/] (champion {champion})"
    )
    ref, cur = report.get("reference") or {}, report.get("current") or {}
    console.print(
        f"reference ({ref.get('kind')}): {ref.get('n')} rows {ref.get('start')} -> {ref.get('end')}"
    )
    console.print(f"current: {cur.get('n')} rows {cur.get('start')} -> {cur.get('end')}")
    table = Table("measure", "value", show_header=True)
    for key, value in summary.items():
        table.add_row(key, _fmt(value))
    console.print(table)
    reasons = "; ".join(map(str, decision.get("reasons") or [])) or "no trigger fired"
    blocked = f" (blocked: {decision['blocked']})" if decision.get("blocked") else ""
    console.print(f"decision: [bold]{decision.get('action', 'none')}[/] - {reasons}{blocked}")
    skew = report.get("skew") or {}
    if skew:
        console.print(
            f"skew {skew.get('status')}: {skew.get('error') or ''}"
            + ", ".join(f"{k} {v}" for k, v in (skew.get("examples") or {}).items())
            + (
                f"; beyond the tolerance: {_fmt(skew.get('skewed_inputs'))}"
                if skew.get("skewed_inputs")
                else ""
            )
        )
    q = report.get("quality") or {}
    failed = [r for r in q.get("results") or [] if not r.get("success")]
    for r in failed[:10]:
        seen = r.get("details") or r.get("observed_value")
        if seen is None:
            seen = f"{r.get('unexpected_count')} unexpected values"
        console.print(
            f"  quality FAIL {r.get('expectation')} {r.get('column') or ''}: observed {_fmt(seen)}"
        )
