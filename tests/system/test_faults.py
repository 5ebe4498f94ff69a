"""Faults through the real stack. Each scenario writes the workload while one thing breaks,
then checks that the features equal the SQL oracle and every outcome of a scored payment was
learned exactly once. Scenarios that stop a service start it again and wait for its health,
so the tests after them find the stack as it was.

``make test`` runs the Redis wipe (the new recovery path); ``make faults`` runs them all. On a
Redis Cluster run (``FRESHLOOP_TEST_REDIS_LAYOUT=cluster``) what happens to "Redis" happens to
every primary of the cluster (``redis_stack``, ``wipe_namespace``).
"""

from __future__ import annotations

import random
import re
import time

import pytest

from connectors import ConnectClient
from freshloop.stack import Stack
from tests.system.fixtures import (
    System,
    redis_stack,
    run_with_fault,
    stack_of,
    wait_for,
    wipe_namespace,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _restart(stack: Stack, name: str, down_s: float = 2.0) -> None:
    stack.down([name])
    time.sleep(down_s)
    stack.up([name])


def _connector_running(system: System) -> None:
    with ConnectClient(system.settings.connect_url) as client:
        client.wait_running(system.settings.connector_name, wait_s=120)


def test_redis_wipe_is_detected_and_rebuilt(system: System) -> None:
    """Every key of the namespace deleted under a running scorer: detected, rebuilt by an
    incremental snapshot, logged with progress, and exact afterwards."""
    system.start(serve=1)
    deleted: list[int] = []
    report = run_with_fault(
        system, lambda: deleted.append(wipe_namespace(system.settings)), seconds=10
    )
    assert deleted[0] > 0
    # the snapshot re-reads every row of the tables: its length follows the database's size
    wait_for(lambda: "redis_rebuild_finished" in system.logs(), 900, "the rebuild to finish")
    system.check(report, wait_s=120)
    logs = system.logs()
    assert "redis_state_lost" in logs and "redis_rebuild_started" in logs, logs[-3000:]


@pytest.mark.slow
def test_kill_9_of_the_scorer_many_times(system: System) -> None:
    rng = random.Random(11)
    system.start(serve=1)
    kills = 0

    def chaos() -> None:
        nonlocal kills
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 2.0))
            system.retire_server(system.serving[0], kill=True)
            kills += 1
            system.add_server()

    report = run_with_fault(system, chaos, seconds=14, fault_at=1)
    system.check(report)
    assert kills == 6


@pytest.mark.slow
@pytest.mark.parametrize("service", ["connect", "kafka", "redis"])
def test_service_restarted_mid_stream(system: System, service: str) -> None:
    """Connect (Debezium sends events again), the broker, Redis (its append-only file keeps
    the features; the scorer re-reads its positions; on a cluster every primary restarts)."""
    stack = redis_stack(system) if service == "redis" else stack_of(system.settings)
    system.start(serve=1)
    report = run_with_fault(system, lambda: _restart(stack, service), seconds=12)
    _connector_running(system)
    system.check(report, wait_s=180)
    if service == "redis":
        logs = system.logs()
        assert "redis_recovered" in logs, logs[-3000:]
        assert "redis_state_lost" not in logs  # nothing was lost


@pytest.mark.slow
def test_postgres_restarted_between_writes(system: System) -> None:
    """The writer cannot write while Postgres is down: two workload runs around the restart."""
    stack = stack_of(system.settings)
    system.start(serve=1)
    first = run_with_fault(system, lambda: None, seconds=5, fault_at=0)
    _restart(stack, "postgres")
    _connector_running(system)
    second = run_with_fault(system, lambda: None, seconds=5, fault_at=0)
    for report in (first, second):
        system.check(report, wait_s=180)


@pytest.mark.slow
def test_redis_wiped_by_a_restart_without_its_files(system: System) -> None:
    """A new, empty Redis server (its append-only file gone; on a cluster every primary, each
    keeping its node file: the same slots, no data). Wipes EVERY namespace of the stack's Redis:
    run it on a stack of its own (``make faults``)."""
    stack = redis_stack(system)
    system.start(serve=1)
    roots = [svc.root.resolve() for svc in stack.select(["redis"])]

    def wipe() -> None:
        stack.down(["redis"])
        for root in roots:
            for path in root.glob("appendonlydir/*"):
                path.unlink()
        stack.up(["redis"])

    report = run_with_fault(system, wipe, seconds=12)
    # the loss is found once Redis answers again (a cluster's three primaries take longer)
    wait_for(lambda: "redis_rebuild_started" in system.logs(), 120, "the rebuild to start")
    logs = system.logs()
    assert "redis_state_lost" in logs and "redis_rebuild_started" in logs, logs[-3000:]
    # the rebuild re-reads every captured row: on a database grown by earlier runs that takes
    # minutes, so wait for its end (at no less than 1,000 rows/s) before comparing
    rows = max(int(n) for n in re.findall(r"rows_expected=(\d+)", logs))
    wait_for(
        lambda: "redis_rebuild_finished" in system.logs(),
        max(120.0, rows / 1000),
        "the rebuild's incremental snapshot to finish",
    )
    system.check(report, wait_s=120)


@pytest.mark.slow
def test_consumer_group_resized_2_1_3(system: System) -> None:
    system.start(serve=2)

    def resize() -> None:
        system.retire_server(system.serving[0])
        time.sleep(3)
        system.add_server()
        system.add_server()

    report = run_with_fault(system, resize, seconds=14, fault_at=3)
    system.check(report)
    assert len(system.serving) == 3 and all(p.alive() for p in system.serving)


@pytest.mark.slow
def test_connector_paused_during_writes_then_resumed(system: System) -> None:
    system.start(serve=1)
    name = system.settings.connector_name

    def pause() -> None:
        with ConnectClient(system.settings.connect_url) as client:
            client.pause(name)
            client.wait_state(name, "PAUSED")
            time.sleep(4)
            client.resume(name)

    report = run_with_fault(system, pause, seconds=10, fault_at=2)
    _connector_running(system)
    system.check(report)
    assert all(p.alive() for p in system.serving)
