"""Redis killed -9 inside a batch script, under load, and started again from its append-only
file: nothing of a batch is half-applied, the scorer goes on from the positions Redis kept, and
the features equal the SQL oracle with every outcome learned once.

Kills and restarts Redis: run it on a stack of its own (``make faults``), never a shared one.

Why no batch can be half-persisted: Redis runs a script to its end before it serves anything
else, and writes what it did to the append-only file only afterwards, as one MULTI/EXEC block
(effects replication) with one write() of the file (before it sleeps again). A kill -9 either
comes before that write (the batch is lost whole, and its offsets with it: the scorer replays
it) or after (the page cache keeps it, fsync or not: ``appendfsync everysec`` only matters if
the machine itself goes down, and then a MULTI without its EXEC at the file's end is dropped
whole on load). The scenario also checks Redis's own log for a truncated file, and that every
position Redis held before a kill is there after the restart: Redis 7.0 re-checks the ACL of
the ``default`` user at each EXEC it loads from the file, so with that user allowed no command
every batch in the file is dropped on load, whole but silently (redis/redis#14541), and the
pipeline then replays from older positions (the scenario's features still match: the topics
hold that history; a longer-lived namespace's would not).

On a Redis Cluster run the primary killed is the first one (``redis``, the one ``redis_url``
names): its scripts are the batches of the partitions and shards whose slots it holds.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest

from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig
from freshloop.stack import Stack
from tests.redis_layout import client_for, key_layout
from tests.system.fixtures import WORKLOAD, System, redis_stack, run_with_fault, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

# Busier than the other scenarios: a scorer catching up after a pause writes batches of
# a thousand changes and more, each one script of tens of milliseconds
_LOAD = WorkloadConfig(**{**WORKLOAD.__dict__, "rate": 150, "seed": 41})
_BUSY_S = 0.010  # Redis silent this long: inside a script (only a batch script takes this long)
_PAUSE_S = 4.0  # the scorer stopped (SIGSTOP) this long before each kill: a backlog to catch up


def kill_inside_a_script(stack: Stack, settings: Settings, wait_s: float = 30.0) -> bool:
    """kill -9 Redis (a cluster's first primary: the one ``redis_url`` names) at a moment it does
    not answer a PING for ``_BUSY_S`` (it is running a script), or after ``wait_s`` anyway; True
    if it was caught busy."""
    url = urlsplit(settings.redis_url)
    deadline = time.monotonic() + wait_s
    busy = False
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 2) as sock:
        while time.monotonic() < deadline and not busy:
            sock.sendall(b"PING\r\n")  # any answer will do (+PONG, or -NOAUTH under ACLs)
            ready, _w, _x = select.select([sock], [], [], _BUSY_S)
            if not ready:
                busy = True
            elif not sock.recv(4096):
                break  # the server closed the connection: kill it all the same
            else:
                time.sleep(0.001)
        stack.kill("redis")
    return busy


def _aof_warnings(stack: Stack, since: int) -> list[str]:
    """What Redis's log says, after byte ``since``, of an append-only file it could not load
    whole: a truncated file, or a MULTI/EXEC block it refused while loading (Redis 7.0 checks
    the ``default`` user's ACL at each EXEC of the file: with that user allowed no command,
    every batch in the file is dropped on load, silently but for this line)."""
    with stack.log_path("redis").open("rb") as fh:
        fh.seek(since)
        text = fh.read().decode(errors="replace")
    words = ("truncated", "short read", "unexpected end", "aof-loading-client")
    return [line for line in text.splitlines() if any(w in line.lower() for w in words)]


def test_redis_killed_inside_batch_scripts_keeps_every_batch_whole(system: System) -> None:
    stack = redis_stack(system)
    log_at = stack.log_path("redis").stat().st_size
    system.start(serve=1)
    caught: list[bool] = []
    kept: list[bool] = []  # every position Redis held before a kill, there after its restart
    scorer = system.serving[0]
    client = client_for(system.settings, "writer")  # one Redis or a Redis Cluster
    s = system.settings
    keys = key_layout(s, group=f"{s.namespace}-features")
    # one hash of every partition's position (single), or one per partition (cluster)
    offsets_keys = sorted({keys.offsets(p) for p in range(s.topic_partitions)})

    def positions() -> dict[tuple[str, bytes], int]:
        return {
            (key, field): int(v) for key in offsets_keys for field, v in client.hgetall(key).items()
        }

    def outage() -> None:
        wait_for(lambda: "assigned partitions" in scorer.log(), 60, "the scorer's partitions")
        for _ in range(3):
            os.kill(scorer.pid, signal.SIGSTOP)  # a backlog builds up while it is stopped...
            time.sleep(_PAUSE_S)
            held = positions()  # applied before the kill: the file must keep them
            os.kill(scorer.pid, signal.SIGCONT)  # ...which it writes in large batches
            caught.append(kill_inside_a_script(stack, system.settings, wait_s=10))
            time.sleep(0.5)
            stack.up(["redis"])  # from its append-only file
            after = positions()
            kept.append(bool(held) and all(after.get(k, -1) >= v for k, v in held.items()))
            time.sleep(2)

    report = run_with_fault(system, outage, seconds=30, fault_at=1, config=_LOAD)
    counts = system.check(report, wait_s=240)
    logs = system.logs()
    dropped = scorer.log().count("batch dropped, positions re-read")
    print(
        f"kills inside a script: {sum(caught)} of {len(caught)}; writes cut: {dropped}; "
        f"positions kept over the restarts: {kept}; {counts}"
    )
    client.close()
    assert kept == [True] * len(caught), "Redis came back with positions it had already passed"
    assert sum(caught) >= 1, "no kill found Redis inside a script: the scenario tested nothing"
    assert dropped >= 1, "no kill cut a batch write: the scenario tested nothing"
    assert "redis_recovered" in scorer.log(), scorer.log()[-3000:]
    assert "redis_state_lost" not in logs  # the append-only file kept everything applied
    assert _aof_warnings(stack, log_at) == []
    assert all(proc.alive() for proc in system.serving), logs[-3000:]
