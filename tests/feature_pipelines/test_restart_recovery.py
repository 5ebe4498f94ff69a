"""A Redis restart noticed by any Redis call of the loss guard (its periodic sentinel check, not
only a batch write) leads to the recovery that re-reads positions, instead of retrying that
call forever (seen in the Redis kill -9 fault scenario: the scorer stopped applying)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline
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


def test_a_restart_found_by_the_sentinel_check_is_recovered(pipeline: FeaturePipeline) -> None:
    guard = pipeline.recovery
    guard.start()  # the sentinel, and the server's run_id
    epoch = guard.epoch
    guard.client.connection_pool.disconnect()
    guard.run_id = "a-server-before-its-restart"  # the next connection sees another run_id
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
    guard.client.connection_pool.disconnect()
    guard.run_id = "a-server-before-its-restart"  # the next connection sees another run_id
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
