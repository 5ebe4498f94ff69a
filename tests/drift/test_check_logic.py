"""The pure parts of a drift check: windows, alarms, summary, status, HTML and terminal output."""

from __future__ import annotations

import doctest
import io
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest
from rich.console import Console

from drift import check, freshness, quality, report, stats, windows
from drift.check import build_summary, new_alarms, status_of
from drift.report import render_html, render_terminal
from drift.windows import Champion, current_spec, reference_spec

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("module", [stats, quality, windows, check, freshness])
def test_docstring_examples_run(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failed == 0


def test_reference_is_the_retrain_window_else_after_the_promotion() -> None:
    retrained = Champion("m3", T, retrain_start=T - timedelta(hours=2), retrain_end=T)
    spec = reference_spec(retrained, 500)
    assert (spec.kind, spec.start, spec.end, spec.newest) == (
        "retrain",
        T - timedelta(hours=2),
        T,
        True,
    )
    spec = reference_spec(Champion("m1", T), 500)
    assert (spec.kind, spec.start, spec.end, spec.newest, spec.limit) == (
        "promotion",
        T,
        None,
        False,
        500,
    )
    assert reference_spec(None, 9).kind == "first"


@pytest.mark.parametrize(
    ("available", "limit"),
    [(0, 1), (7, 3), (500, 250), (999, 499), (1000, 500), (5000, 500), (None, 500)],
)
def test_a_filling_reference_leaves_half_for_the_current_window(
    available: int | None, limit: int
) -> None:
    assert reference_spec(Champion("m1", T), 500, available).limit == limit
    assert reference_spec(None, 500, available).limit == limit
    retrained = Champion("m3", T, retrain_start=T, retrain_end=T)
    assert reference_spec(retrained, 500, available).limit == 500


def test_current_window_starts_after_the_reference() -> None:
    now = T + timedelta(hours=1)
    far = current_spec(now, 600, 100, reference_end=T)
    assert (far.start, far.start_open, far.end) == (now - timedelta(seconds=600), False, now)
    near = current_spec(now, 7200, 100, reference_end=T)
    assert (near.start, near.start_open) == (T, True)


def test_new_alarms_since_the_previous_report() -> None:
    assert new_alarms([3, 40], None) == [3, 40]
    assert new_alarms([3, 40], 40) == []
    assert new_alarms([3, 40, 77], 40) == [77]
    assert new_alarms([2], 40) == [2]  # the learner started over
    assert new_alarms([], 40) == []


def _summary(shift: float, n: int = 300) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    feats = {
        name: stats.feature_drift(name, rng.normal(0, 1, n), rng.normal(shift, 1, n))
        for name in ("a", "b")
    }
    score = stats.feature_drift("score", rng.random(n), rng.random(n), categorical=False)
    label = stats.feature_drift(
        "label", (rng.random(n) < 0.1) * 1.0, (rng.random(n) < 0.1) * 1.0, categorical=True
    )
    perf = {"auc": 0.7, "baseline_auc": 0.9, "auc_drop": 0.2, "log_loss": 0.4}
    return build_summary(
        feats, score, label, perf, [5], {"p99_ms": 12.0, "stale": 0}, {"success": True}, n, n
    )


def test_summary_carries_every_headline_key() -> None:
    s = _summary(2.0)
    assert set(check.SUMMARY_KEYS) <= set(s)
    assert s["dataset_drift_share"] == 1.0 and s["drifted_features"] == ["a", "b"]
    assert (s["concept_alarms"], s["auc_drop"], s["freshness_p99_ms"]) == (1, 0.2, 12.0)


def test_status_rule() -> None:
    calm = _summary(0.0)
    assert status_of(calm, {"drift": False}, 100) == "ok"
    assert status_of(calm, {"drift": True}, 100) == "drift"
    assert status_of({**calm, "quality_success": False}, {}, 100) == "warning"
    assert status_of({**calm, "stale_entities": 3}, {}, 100) == "warning"
    assert status_of(_summary(2.0), {"drift": False}, 100) == "warning"
    assert status_of({**calm, "n_current": 10}, {"drift": False}, 100) == "insufficient_data"
    assert status_of({**calm, "n_current": 10}, {"drift": True}, 100) == "drift"  # an alarm


def _report(name: str) -> dict:
    f = stats.feature_drift(name, [0.0, 1.0, 2.0] * 20, [5.0, 6.0] * 30).to_dict()
    return {
        "report_id": 7,
        "namespace": "ns<1>",
        "status": "drift",
        "created_at": T.isoformat(),
        "features": {name: f},
        "score": f,
        "label": f,
        "reference": {"n": 60},
        "current": {"n": 60},
        "performance": {},
        "concept": {"new_alarms": [4]},
        "freshness": {"lag": {"p99_ms": None, "consumers": []}, "stale": {"stale": 0}},
        "quality": {
            "success": False,
            "statistics": {"evaluated": 1, "successful": 0},
            "results": [
                {
                    "expectation": "expect_column_values_to_not_be_null",
                    "column": name,
                    "success": False,
                    "unexpected_count": 3,
                    "kwargs": {},
                }
            ],
        },
        "history": [
            {"report_id": 5, "dataset_drift_share": 0.1, "auc": 0.9},
            {"report_id": 6, "dataset_drift_share": 0.3, "auc": 0.8},
        ],
    }


def test_html_is_self_contained_and_escaped() -> None:
    evil = "<script>alert(1)</script>"
    page = render_html(
        _report(evil),
        {"dataset_drift_share": 1.0, "drifted_features": [evil]},
        {"action": "retrain", "reasons": ["share 1.00 >= 0.50"]},
    )
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "ns&lt;1&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count("<svg") >= 4  # 3 histograms + 2 over-time charts
    assert "polyline" in page  # history of 3 points draws lines
    assert "share 1.00 &gt;= 0.50" in page and "FAIL" in page


def test_terminal_summary() -> None:
    out = io.StringIO()
    render_terminal(
        _report("amount"),
        {"dataset_drift_share": 0.5, "auc": None},
        {"action": "none", "reasons": [], "blocked": None},
        console=Console(file=out, width=120),
    )
    text = out.getvalue()
    assert "drift report #7" in text and "dataset_drift_share" in text
    assert "unknown" in text  # a missing number reads as unknown, not None
    assert "decision: none - no trigger fired" in text
    assert "quality FAIL expect_column_values_to_not_be_null amount" in text


def test_report_module_has_no_external_assets() -> None:
    source = open(report.__file__, encoding="utf-8").read()
    assert "cdn" not in source.lower() and "<script" not in source
