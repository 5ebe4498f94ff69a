"""Smoke test of the benchmark harness: every Freshloop-side scenario at a tiny size, through
the same ``main()`` that ``make bench`` runs, writing the JSON the report reads.

Speed is never asserted here: only that each scenario runs on the real stack and writes the
fields ``bench.report`` needs. The peers (Quix Streams, Feast) live in their own virtualenv and
are left out (``--no-quix``, ``--no-feast``); so is the batch SQL peer (it recomputes the whole
shared tables: tens of seconds), whose lag rule has a unit test below.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.peers.batch_sql import BatchRecompute
from bench.report import _under_floor
from feature_pipelines import SAMPLE_FEATURES
from freshloop.core.settings import Settings


def _run(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    out: Path,
    main: Callable[[], None],
    name: str,
    *args: str,
) -> dict[str, Any]:
    for var, value in {
        "BENCH_RESULTS_DIR": str(out),
        "FRESHLOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FRESHLOOP_REDIS_URL": settings.redis_url,
        "FRESHLOOP_POSTGRES_DSN": settings.postgres_dsn,
        "FRESHLOOP_POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
        "FRESHLOOP_CONNECT_URL": settings.connect_url,
        "FRESHLOOP_TOPIC_PREFIX": settings.topic_prefix,
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "argv", [name, *args])
    main()
    return json.loads((out / f"{name}.json").read_text())


def _positive(stat: dict[str, Any]) -> None:
    assert stat["median"] is not None and stat["median"] > 0
    assert stat["min"] <= stat["median"] <= stat["max"]


@pytest.mark.integration
def test_replay_reads_and_learning(
    pipeline: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import batch_script, learning, reads, replay, replay_peers

    run = lambda main, name, *args: _run(monkeypatch, pipeline, tmp_path, main, name, *args)  # noqa: E731
    mixed = run(replay.main, "replay", "--events", "1000", "--repeat", "1")
    assert mixed["events"] == 1000
    assert mixed["freshloop_pipeline_per_s"]["median"] > 0
    assert mixed["raw_consume_decode_per_s"]["median"] > 0
    assert mixed["machine"]["cores"] >= 1

    peers = run(replay_peers.main, "replay_peers", "--events", "1000", "--repeat", "1", "--no-quix")
    _positive(peers["freshloop_per_s"])
    _positive(peers["raw_consume_decode_per_s"])
    assert peers["quix_per_s"]["median"] is None
    assert peers["ratio_freshloop_to_quix"] is None
    assert "payment_count_10m" in peers["features"]

    read = run(
        reads.main,
        "reads",
        "--payments",
        "1000",
        "--reads",
        "30",
        "--batch-reads",
        "3",
        "--repeat",
        "1",
        "--no-feast",
    )
    assert read["freshloop_http_same_values"] is True
    for name in ("python_one", "python_batch100", "http_one", "http_batch100"):
        for q in ("p50", "p99"):
            assert read["latency"][name][q]["freshloop_ms"]["median"] > 0
            assert read["latency"][name][q]["feast_ms"]["median"] is None
    assert read["features_per_entity"] == 11

    script = run(batch_script.main, "batch_script", "--events", "1000", "--repeat", "1")
    assert script["events"] == 1000
    assert script["per_event"]["rows"] > 0 and script["per_event"]["entity_fields"] > 0
    whole = script["variants"]["whole script"]
    # the whole script runs every step, and a step's commands are part of its script's time
    assert whole["script_us"] > script["variants"]["call and arguments"]["script_us"]
    assert 0 < whole["commands_us"] < whole["script_us"]
    assert any("whole script" in line for line in batch_script.render(script))

    learn = run(learning.main, "learning", "--payments", "1000", "--repeat", "1")
    _positive(learn["freshloop_scored_learned_per_s"])
    _positive(learn["river_alone_per_s"])
    assert learn["ratio_freshloop_to_river"] > 0
    for phase in learning.PHASES:
        _positive(learn["phases_us"][phase])
    _positive(learn["river_alone_us"])


@pytest.mark.integration
@pytest.mark.slow  # writer and pipeline processes start on a busy stack: ~1 min, over the budget
def test_freshness_features_and_prediction(
    pipeline: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import freshness

    fresh = _run(
        monkeypatch,
        pipeline,
        tmp_path,
        freshness.main,
        "freshness",
        "--rates",
        "20",
        "--seconds",
        "2",
        "--repeat",
        "1",
        "--prediction-rate",
        "20",
        "--batch-rate",
        "0",
        "--max-rates",
        "",
        "--warmup-seconds",
        "1",
        "--customers",
        "20",
    )
    (row,) = fresh["results"]
    assert row["rate"] == 20
    assert row["runs"][0]["live_changes_applied"] > 0
    _positive(row["lag_ms"]["p99"])
    (predicted,) = fresh["predictions"]
    assert predicted["rate"] == 20
    prediction = predicted["runs"][0]
    assert prediction["payments_scored"] > 0
    assert prediction["commit_to_prediction_ms"]["p50"] > 0
    assert fresh["batch"] is None
    assert fresh["max_rate"]["rule"]


def test_batch_lag_is_the_end_of_the_first_recompute_started_after_the_commit() -> None:
    job = BatchRecompute("", "", SAMPLE_FEATURES, "ns")
    job.cycles = [(0.0, 400.0), (1000.0, 1500.0), (2000.0, 2300.0)]
    # committed before the first start -> its end; during a cycle -> the next one's end;
    # after the last start -> never covered, left out
    assert job.lags_ms([-50.0, 10.0, 1000.0, 1999.0, 2500.0]) == [450.0, 1490.0, 1300.0, 301.0]


def test_an_aim_below_the_round_trip_floor_says_so() -> None:
    def row(feast_p99: float) -> dict[str, Any]:
        return {"p99": {"feast_ms": {"median": feast_p99}}}

    ping = {"p99": {"median": 1.08}}
    assert "below a bare Redis PING's p99 of 1.08 ms" in _under_floor(row(1.5), ping)
    assert _under_floor(row(2.2), ping) == ""  # half of it, 1.1 ms, is above the floor
    assert _under_floor(row(1.5), None) == ""
