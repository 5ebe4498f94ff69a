"""The dashboard's pure parts and the error classification, without services."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
import redis
from sqlalchemy.exc import OperationalError, ProgrammingError

from freshloop.app.api.backends import dependency_error
from freshloop.app.api.summary import STALE_AFTER_S, History, aggregate_pipeline, drift_series
from freshloop.core.settings import Settings


def _row(consumer: str, updated_at: float, **fields: float | None) -> dict:
    base = {
        "consumer_id": consumer,
        "updated_at": updated_at,
        "events_per_s": 0.0,
        "applied_total": 0,
        "dead_lettered_total": 0,
        "lag_p50_ms": None,
        "lag_p95_ms": None,
        "lag_p99_ms": None,
    }
    return {**base, **fields}


def test_rates_add_up_over_live_consumers_and_lags_take_the_worst() -> None:
    now = 1000.0
    rows = [
        _row("a", now - 1, events_per_s=100.0, applied_total=10, lag_p50_ms=5.0, lag_p99_ms=9.0),
        _row("b", now - 2, events_per_s=50.0, applied_total=20, lag_p50_ms=7.0, lag_p99_ms=None),
        _row(
            "gone",
            now - STALE_AFTER_S - 1,
            events_per_s=999.0,
            applied_total=5,
            dead_lettered_total=3,
            lag_p99_ms=500.0,
        ),
    ]
    total = aggregate_pipeline(rows, now)
    assert (total["live"], total["stale"]) == (2, 1)
    assert total["events_per_s"] == 150.0  # a stale consumer's last rate is not current
    assert total["applied_total"] == 35 and total["dead_lettered_total"] == 3  # counters all
    assert (total["lag_p50_ms"], total["lag_p99_ms"]) == (7.0, 9.0)
    assert total["updated_age_s"] == 1.0


def test_no_consumers_is_an_empty_pipeline_not_an_error() -> None:
    total = aggregate_pipeline([], 5.0)
    assert total["live"] == 0 and total["events_per_s"] == 0
    assert total["lag_p99_ms"] is None and total["updated_age_s"] is None


def test_history_is_bounded_and_throttled() -> None:
    history = History(maxlen=3, min_interval_s=1.0)
    kept = [history.add(t, {"v": t}) for t in (0.0, 0.4, 1.0, 2.5, 3.5, 4.5)]
    assert kept == [True, False, True, True, True, True]
    assert [p["v"] for p in history.points()] == [2.5, 3.5, 4.5]


def test_drift_series_is_oldest_first_and_tolerates_missing_numbers() -> None:
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    newest_first = [
        {
            "report_id": 9,
            "created_at": t1,
            "status": "drift",
            "summary": {"dataset_drift_share": 0.75, "roc_auc": 0.7},
        },
        {
            "report_id": 8,
            "created_at": t0,
            "status": "insufficient_data",
            "summary": {"dataset_drift_share": "n/a"},
        },
    ]
    series = drift_series(newest_first)
    assert [p["report_id"] for p in series] == [8, 9]
    assert series[0]["drift_share"] is None and series[1]["drift_share"] == 0.75
    assert series[1]["roc_auc"] == 0.7 and series[0]["t"] == t0.timestamp()


def test_failures_are_attributed_to_their_dependency() -> None:
    s = Settings(redis_url="redis://:pw-xyz@10.0.0.9:6390/2")
    down = dependency_error(s, redis.ConnectionError("Error 111 connecting"))
    assert down is not None and down.dependency == "redis"
    assert "10.0.0.9:6390/2" in str(down) and "pw-xyz" not in str(down)
    pg = dependency_error(s, OperationalError("SELECT 1", {}, psycopg.OperationalError("refused")))
    assert pg is not None and pg.dependency == "postgres" and "refused" in str(pg)
    schema = dependency_error(
        s, ProgrammingError("SELECT", {}, psycopg.errors.UndefinedTable("no drift_reports"))
    )
    assert schema is not None and "freshloop db init" in str(schema)
    assert dependency_error(s, ValueError("a bug")) is None
    syntax = ProgrammingError("SELECT", {}, psycopg.errors.SyntaxError("bad"))
    assert dependency_error(s, syntax) is None  # our bug, not an outage: stays a 500


@pytest.mark.parametrize("path", ["/features/{entity}/{key}", "/healthz"])
def test_routes_exist_without_any_service(path: str) -> None:
    from freshloop.app.api import create_app

    app = create_app(Settings(redis_namespace="unit"))
    assert path in app.openapi()["paths"]
