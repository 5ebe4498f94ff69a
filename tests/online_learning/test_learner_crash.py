"""kill -9 of the learner process mid-stream, restarts: no example learned twice, none lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation
from tests.online_learning.stack import ScoringPipeline, learn_ns, wait_for

pytestmark = pytest.mark.integration

__all__ = ["learn_ns"]

WORKLOAD = WorkloadConfig(
    rate=60, customers=100, merchants=20, burst_share=0.03, label_delay_s=1.0, seed=21
)


def _spawn(settings: Settings) -> subprocess.Popen:
    env = {
        **os.environ,
        "FRESHLOOP_REDIS_NAMESPACE": settings.namespace,
        "FRESHLOOP_PREDICTIONS_TOPIC": settings.predictions_topic_name,
        "FRESHLOOP_LEARNER_START": "latest",
        "FRESHLOOP_LABEL_HORIZON": "3600",
        "FRESHLOOP_CHECKPOINT_EVERY_EXAMPLES": "25",
        "FRESHLOOP_CHECKPOINT_EVERY_S": "0.7",
        "FRESHLOOP_CHAMPION_POLL_S": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "freshloop.app.cli", "learn", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _latest(settings: Settings) -> dict[str, Any] | None:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT checkpoint_id, n_learned, status FROM learner_checkpoints "
            "WHERE namespace = %s ORDER BY checkpoint_id DESC LIMIT 1",
            (settings.namespace,),
        ).fetchone()
    return None if row is None else {"id": row[0], "n_learned": row[1], **row[2]}


def _example_ids(settings: Settings) -> list[int]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT payment_id FROM training_examples WHERE namespace = %s",
                (settings.namespace,),
            )
        ]


def test_kill_9_of_the_learner_loses_nothing_and_learns_nothing_twice(learn_ns: Settings) -> None:
    rng = random.Random(3)
    proc = _spawn(learn_ns)
    try:
        wait_for(lambda: _latest(learn_ns) is not None, 30, "the learner's first checkpoint")
    except AssertionError:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(proc.stderr.read() if proc.stderr else "") from None
    done = threading.Event()
    report: list[Any] = []
    kills = 0
    with ScoringPipeline(learn_ns):
        writer = threading.Thread(
            target=lambda: (report.append(run_simulation(learn_ns, WORKLOAD, 12)), done.set()),
            daemon=True,
        )
        writer.start()
        while not done.is_set():
            done.wait(rng.uniform(1.5, 3.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            proc = _spawn(learn_ns)
        with psycopg.connect(learn_ns.postgres_conninfo()) as conn:
            expected = {
                r[0]
                for r in conn.execute(
                    "SELECT payment_id FROM payment_outcomes WHERE payment_id = ANY(%s)",
                    (list(report[0].payment_ids),),
                )
            }
        try:
            wait_for(lambda: expected <= set(_example_ids(learn_ns)), 60, "every outcome learned")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert kills >= 3
    ids = _example_ids(learn_ns)
    status = _latest(learn_ns)
    assert status is not None
    # One state lineage: the restored model learned exactly the examples stored with it.
    assert status["n_learned"] == status["counts"]["learned"] == len(ids) == len(set(ids))
    assert status["service"]["restored_from"] > 0
    assert len(expected) == report[0].count("payment_outcomes", "c") > 0
    print(
        f"kills={kills} outcomes={len(expected)} examples={len(ids)} "
        f"checkpoints={status['service']['checkpoints']}"
    )
