"""``run_check`` against the real Postgres and Redis: a stable world reads ok, a shifted one
drift, too few rows insufficient_data; the row, its summary and its HTML page are stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from drift import load_report, run_check
from drift.check import SUMMARY_KEYS
from tests.drift.check_fixtures import CheckWorld, check_world, vectors

__all__ = ["check_world"]

pytestmark = pytest.mark.integration


def _fill(world: CheckWorld, *, shifted: bool, now: datetime) -> None:
    world.add(vectors(1, 400, shifted=False), start=now - timedelta(minutes=50))
    world.add(vectors(2, 400, shifted=shifted), start=now - timedelta(minutes=12))


def test_stable_features_with_a_concept_alarm_then_ok(check_world: CheckWorld) -> None:
    now = datetime.now(UTC)
    _fill(check_world, shifted=False, now=now)
    check_world.checkpoint([120, 380])
    check_world.pipeline_stats(p99_ms=87.5)
    report = run_check(check_world.settings, now=now)

    s = report.summary
    assert set(SUMMARY_KEYS) <= set(s)
    assert (s["n_reference"], s["n_current"]) == (400, 400)
    assert s["drifted_features"] == [] and s["dataset_drift_share"] == 0.0
    assert s["score_drifted"] is False and s["label_rate_drifted"] is False
    assert s["quality_success"] is True
    assert s["freshness_p99_ms"] == 87.5
    assert s["stale_entities"] == 0
    assert s["concept_alarms"] == 2  # first report: every alarm is new
    assert s["auc"] > 0.9 and s["auc_drop"] < 0.05
    assert report.decision["action"] == "none"
    assert report.decision["drift"] is True  # the policy's alarm trigger fired (not acted on)
    assert report.status == "drift"  # concept drift, with stable features
    assert report.report["reference"]["kind"] == "first"

    stored = load_report(check_world.engine, check_world.ns)
    assert stored.report_id == report.report_id
    assert stored.summary == s and stored.status == "drift"
    assert stored.report["report_id"] == report.report_id
    page = stored.html
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "payment_count_1h" in page and "expect_column_values_to_not_be_null" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page

    # the same alarms are not new to the next report
    again = run_check(check_world.settings, now=now + timedelta(seconds=1))
    assert again.summary["concept_alarms"] == 0
    assert again.decision["drift"] is False and again.status == "ok"
    assert [h["report_id"] for h in again.report["history"]] == [report.report_id]


def test_shifted_world_is_drift_and_the_policy_decides(check_world: CheckWorld) -> None:
    now = datetime.now(UTC)
    _fill(check_world, shifted=True, now=now)
    seen: list[dict[str, Any]] = []

    def decide(summary: dict[str, Any]) -> dict[str, Any]:
        seen.append(summary)
        return {"action": "retrain", "reasons": ["test policy"], "drift": True}

    report = run_check(check_world.settings, now=now, decide=decide)
    s = report.summary
    assert seen and seen[0]["n_current"] == 400
    assert report.status == "drift"
    assert s["dataset_drift_share"] >= 0.5
    assert {"amount", "channel_web", "payment_count_1h"} <= set(s["drifted_features"])
    assert "hour_sin" not in s["drifted_features"]
    assert s["label_rate_drifted"] is True and s["label_rate_drift"] > 0.1
    assert s["auc_drop"] > 0.3
    assert s["freshness_p99_ms"] is None  # no pipeline consumer: unknown
    with check_world.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, decision, report -> 'features' -> 'amount' "
                "AS amount FROM drift_reports WHERE report_id = :id"
            ),
            {"id": report.report_id},
        ).one()
    assert row.status == "drift" and row.decision["action"] == "retrain"
    assert row.amount["drifted"] is True and row.amount["method"] == "ks"
    assert "test policy" in report.html


def test_too_few_rows_is_insufficient_data(check_world: CheckWorld) -> None:
    now = datetime.now(UTC)
    check_world.add(vectors(3, 60, shifted=False), start=now - timedelta(minutes=5))
    report = run_check(check_world.settings, now=now)
    assert report.status == "insufficient_data"
    # a filling reference takes the first half, the current window the rest
    assert (report.summary["n_reference"], report.summary["n_current"]) == (30, 30)
    assert report.summary["dataset_drift_share"] is None and report.summary["auc"] is None
    assert report.summary["quality_success"] is False  # the row-count expectation
