"""A Redis restart noticed by any Redis call of the loss guard (its periodic sentinel check, not
only a batch write) leads to the recovery that re-reads positions, instead of retrying that
call forever (seen in the Redis kill -9 fault scenario: the scorer stopped applying). On a Redis
Cluster the watch is per primary: a restart of any one of them is found the same way."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline
from feature_pipelines.recovery import RedisLossGuard
from freshloop.core.settings import Settings
from tests.fixtures import drop_namespace

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(stack_settings: Settings) -> Iterator[FeaturePipeline]:
    tag = f"rr{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(update={"redis_namespace": tag, "metrics_port": 0})
    pipeline = FeaturePipeline(settings, SAMPLE_FEATURES)
    yield pipeline
    pipeline.stop.set()
    pipeline.consumer.close()
    drop_namespace(stack_settings, tag)


def _disconnect(guard: RedisLossGuard) -> None:
    """Close every connection of the writer's client (each primary's, on a cluster)."""
    pool = getattr(guard.client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
    else:
        guard.client.disconnect_connection_pools()  # type: ignore[attr-defined]


def _pretend_restarted(guard: RedisLossGuard, server: str | None = None) -> None:
    """Make ``server`` (default: every server seen) look restarted to its next connection."""
    assert guard.run_ids, "no connection of the writer recorded its server's run_id"
    for name in [server] if server else list(guard.run_ids):
        guard.run_ids[name] = "a-server-before-its-restart"
    _disconnect(guard)


def test_every_server_the_writer_uses_is_watched(pipeline: FeaturePipeline) -> None:
    """The run_id of each server the writer talks to is recorded: the one Redis, or every
    primary of a cluster (a batch's steps go to all of them)."""
    guard = pipeline.recovery
    guard.start()
    client = guard.client
    if hasattr(client, "get_primaries"):
        for node in client.get_primaries():  # a connection to each primary
            node.redis_connection.ping()
        primaries = {f"{node.host}:{node.port}" for node in client.get_primaries()}
        assert set(guard.run_ids) == primaries
    else:
        assert len(guard.run_ids) == 1
    assert all(guard.run_ids.values())


def test_a_restart_of_one_server_is_found_by_its_next_connection(
    pipeline: FeaturePipeline,
) -> None:
    """Only the restarted server's connection trips the watch; after the recovery its new
    run_id is the one expected, and the other servers' are kept."""
    guard = pipeline.recovery
    guard.start()
    client = guard.client
    nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
    for node in nodes:
        (node.redis_connection if node is not None else client).ping()
    before = dict(guard.run_ids)
    server = sorted(before)[-1]
    _pretend_restarted(guard, server)
    target = next(n for n in nodes if n is None or f"{n.host}:{n.port}" == server)
    with pytest.raises(redis.ConnectionError, match="restarted"):
        (target.redis_connection if target is not None else client).ping()
    assert guard.restarted is True
    guard._guarded(guard._check)  # the recovery: positions re-read, the sentinel checked
    (target.redis_connection if target is not None else client).ping()
    assert guard.restarted is False
    assert guard.run_ids == before  # the server's own run_id again, the others untouched


def test_a_restart_found_by_the_sentinel_check_is_recovered(pipeline: FeaturePipeline) -> None:
    guard = pipeline.recovery
    guard.start()  # the sentinel, and the server's run_id
    epoch = guard.epoch
    _pretend_restarted(guard)  # the next connection sees another run_id
    worker = threading.Thread(target=guard._guarded, args=(guard._check,), daemon=True)
    worker.start()
    worker.join(timeout=15)
    stuck = worker.is_alive()
    pipeline.stop.set()  # ends a loop that never recovers
    worker.join(timeout=5)
    assert not stuck, "the sentinel check retried a restarted Redis forever"
    assert guard.restarted is False
    assert guard.epoch == epoch  # nothing was lost: the same state, positions re-read


def test_a_restart_found_between_batches_is_recovered_not_raised(
    pipeline: FeaturePipeline,
) -> None:
    """The runner's timers (``on_tick``) follow the definitions ``apply`` recorded in Redis
    every 50 ms: a restart found there is recovered like one found by a batch, not raised out
    of the loop (seen in the Redis kill -9 fault scenario: the scorer's pipeline stopped)."""
    guard = pipeline.recovery
    guard.start()
    epoch = guard.epoch
    _pretend_restarted(guard)  # the next connection sees another run_id
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            pipeline.on_tick()
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
            errors.append(exc)

    worker = threading.Thread(target=tick, daemon=True)
    worker.start()
    worker.join(timeout=15)
    stuck = worker.is_alive()
    pipeline.stop.set()  # ends a loop that never recovers
    worker.join(timeout=5)
    assert not errors, f"the restart escaped the loop's timers: {errors[0]!r}"
    assert not stuck, "the restart found between batches was retried forever"
    assert guard.restarted is False
    assert guard.epoch == epoch  # nothing was lost: the same state, positions re-read
