"""Outages of the learner's Postgres, through the whole system (``make faults``): each ends with
the features equal to the SQL oracle and every outcome of a scored payment learned exactly once.

- The learner's lock session killed while a second learner waits for it: the second one takes
  the namespace over at once, the first one writes nothing more, says so and exits non-zero.
- Postgres restarted while the learner drains a backlog: the learner retries, takes its lost
  lock session back (nobody else took over) and finishes the drain.

Both kill or restart Postgres sessions and the server: run them on a stack of their own.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from freshloop.core.settings import Settings
from tests.online_learning.test_fencing_learner import kill_session, lock_sessions
from tests.system.fixtures import (
    WORKLOAD,
    System,
    run_with_fault,
    stack_of,
    wait_for,
)
from tests.system.test_faults import _connector_running, _restart

# the lock-session scenario kills only its own learner's session: it runs in make test too
pytestmark = [pytest.mark.integration, pytest.mark.fault]


def _lock_key(settings: Settings) -> str:
    return f"freshloop learner {settings.namespace}"


def test_learner_lock_session_killed_while_a_second_learner_waits(system: System) -> None:
    system.start(serve=1)
    first = system.learner
    assert first is not None
    key = _lock_key(system.settings)

    def take_over() -> None:
        (owner,) = lock_sessions(system.settings, key, granted=True)
        second = system.spawn("learner", "learn", "run")
        system.learner = second  # the one the end checks and the fixture's stop look at
        system.retired.append(first)
        wait_for(
            lambda: bool(lock_sessions(system.settings, key, granted=False)),
            60,
            "the second learner to wait for the lock",
        )
        kill_session(system.settings, owner)
        wait_for(
            lambda: lock_sessions(system.settings, key, granted=True) not in ([], [owner]),
            30,
            "the second learner to take the lock",
        )

    report = run_with_fault(system, take_over, seconds=12, fault_at=4)
    wait_for(lambda: not first.alive(), 30, "the superseded learner to stop")
    assert first.popen.returncode not in (0, None), first.log()[-3000:]
    assert "learner_fenced" in first.log(), first.log()[-3000:]
    second = system.learner
    assert second is not None and second.alive(), second.log()[-3000:] if second else ""
    counts = system.check(report, wait_s=180)
    assert counts["learned"] > 0


@pytest.mark.slow
def test_postgres_restarted_while_the_learner_drains_a_backlog(system: System) -> None:
    stack = stack_of(system.settings)
    system.start(serve=1)
    learner = system.learner
    assert learner is not None
    assert learner.stop() == 0, learner.log()[-3000:]  # checkpointed and stopped
    system.retired.append(learner)
    report = run_with_fault(
        system, lambda: None, seconds=20, fault_at=0, config=replace(WORKLOAD, rate=80)
    )
    # the scorer has logged the backlog's predictions; the outcomes wait on their topic
    time.sleep(3)
    system.start_learner()  # restores the checkpoint and starts draining
    wait_for(
        lambda: bool(lock_sessions(system.settings, _lock_key(system.settings), granted=True)),
        30,
        "the learner's lock",
    )
    _restart(stack, "postgres")  # mid-drain
    _connector_running(system)
    counts = system.check(report, wait_s=300)
    assert counts["learned"] > 0
    drained = system.learner
    assert drained is not None
    log = drained.log()
    assert drained.alive(), log[-3000:]
    assert "lock_session_lost" in log and "lock_session_taken_back" in log, log[-3000:]
    assert "learner_fenced" not in log
