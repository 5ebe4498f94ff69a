"""The many-consumers replay (``python -m bench.replay --processes``) and the CPU sampling of
``bench.freshness --load-rates``: they run on the real stack and write what the report reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.cpu import CpuWindow, process_cpu_s, tree_cpu_s
from bench.load_shares import render as load_lines
from bench.scaling import LayoutUnavailable, check_layout
from bench.scaling import render as scaling_lines
from freshloop.core.settings import Settings


def test_an_unknown_layout_stops_with_a_sentence() -> None:
    with pytest.raises(LayoutUnavailable, match="choose one of single, cluster"):
        check_layout(Settings(), "sharded")


@pytest.mark.integration
def test_cluster_asked_of_one_redis_measures_single_and_says_why(pipeline: Settings) -> None:
    assert check_layout(pipeline, "single") == ("single", None)
    layout, note = check_layout(pipeline, "cluster")
    assert layout == "single"
    assert note is not None and "not a cluster node" in note


def test_cpu_window_counts_this_process_and_the_rest_of_the_machine() -> None:
    sampler = CpuWindow(procs={"me": [os.getpid()]}).start()
    spent = 0
    while process_cpu_s(os.getpid()) < 0.3 + sampler._start["me"]:  # burn ~0.3 s of CPU
        spent += sum(range(10_000))
    out = sampler.stop()
    assert 0.25 <= out["cpu_s"]["me"] <= out["wall_s"] * out["cores"] + 0.05
    assert set(out["share_of_cores"]) == {"me", "other"}
    assert tree_cpu_s(os.getpid()) >= out["cpu_s"]["me"]


@pytest.mark.integration
def test_replay_with_one_and_two_processes(
    pipeline: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import replay

    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    argv = ["replay", "--events", "4000", "--processes", "1,2", "--redis-layout", "cluster"]
    monkeypatch.setattr(sys, "argv", argv)
    replay.main()
    # one Redis in the stack here: the bench measures a Redis Cluster of three primaries it
    # starts for the run (and stops), beside the stack's Kafka
    result = json.loads((tmp_path / "replay_scaling_cluster.json").read_text())
    assert not (tmp_path / "replay_scaling_single.json").exists()
    assert result["redis_layout"] == "cluster" and result["layout_note"] is None
    one, two = result["runs"]
    assert result["partitions_per_topic"] % 2 == 0
    for run in (one, two):
        assert run["complete"] and run["events_per_s"] > 0
        assert run["exit_codes"] == [0] * run["processes"]
        assert len(run["process_cpu_us_per_event"]) == run["processes"]
        assert run["redis_cpu_us_per_event"] is not None
    assert two["assigned_partitions"] == [result["partitions_per_topic"]] * 2
    assert two["same_values"]["values_checked"] > 0
    assert two["same_values"]["mismatch_count"] == 0, two["same_values"]["mismatches"]
    text = "\n".join(scaling_lines(result))
    assert "| 2 |" in text and "layout `cluster`" in text and "summed over the primaries" in text


def test_load_report_names_every_component() -> None:
    cpu = {
        "cores": 2,
        "machine_busy_share": 0.9,
        "share_of_cores": {"writers": 0.1, "pipeline": 0.05, "learner": 0.02, "other": 0.3},
    }
    probe = {
        "rate": 200.0,
        "met": True,
        "features": {"lag_ms": {"p99": 40.0}, "cpu": cpu},
        "predictions": {
            "commit_to_prediction_ms": {"p99": 80.0},
            "achieved_payments_per_s": 199.0,
            "cpu": cpu,
        },
    }
    text = "\n".join(
        load_lines(
            {
                "rule": "r",
                "seconds": 10,
                "at_highest": probe,
                "probes": [probe],
                "highest_rate": 200,
            }
        )
    )
    for name in ("writers", "postgres", "connect", "broker", "redis", "pipeline", "learner"):
        assert f"| {name} |" in text
    assert "200 payments/s target (199/s achieved)" in text
    # moving parts with a share here: learner (2 %) and pipeline (5 %)
    assert "ranks 2 of the 2 moving parts, smallest first" in text


def test_the_report_shows_each_layout_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import report

    run = {
        "processes": 1,
        "events_per_s": 1000.0,
        "speedup_vs_first": 1.0,
        "process_cpu_us_per_event": [60.0],
        "processes_cpu_us_per_event": 60.0,
        "redis_cpu_us_per_event": 38.0,
        "redis_cpu_us_per_event_net": 37.0,
        "redis_busy_share": 0.04,
        "machine_busy_share": 0.5,
        "load_1m": 1.0,
    }
    result = {
        "at": "2026-12-06T00:00:00Z",
        "redis_layout": "single",
        "layout_note": "Redis Cluster not measured: why",
        "cores": 2,
        "partitions_per_topic": 4,
        "events": 1000,
        "runs": [run],
    }
    (tmp_path / "replay_scaling_single.json").write_text(json.dumps(result))
    monkeypatch.setattr(report, "versions", lambda _settings: {})
    text = report.render(tmp_path, Settings())
    assert "### Many consumers, Redis layout `single`" in text
    assert "*Redis Cluster not measured: why.*" in text
    assert "| 1 | 1,000 | 1.00 | 60.0 (60.0) | 38.0 (37.0) | 0.04 | 50% (1.0) | reference |" in text
