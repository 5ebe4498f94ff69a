"""The store's overlapped exchange against a real Redis: one round trip reads the next batch's
rows and then writes the held batch; the write is checked, refused or reloaded as a plain
``apply`` would be.

The overlapped exchange is the single layout's (``cluster_pipeline``: on a Redis Cluster a
batch is written at once, partition by partition, and nothing is held back), so these tests
run on one Redis only."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest
import redis

from feature_pipelines import SAMPLE_FEATURES, FeaturePipeline
from feature_pipelines.planner import Planner, row_after
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings
from tests.feature_pipelines.harness import decode_all
from tests.feature_pipelines.test_overlap import _history
from tests.fixtures import drop_namespace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.single_redis(
        "the overlapped exchange (read_then_apply, process(hold=True)) is the single layout's:"
        " a cluster writes each batch at once"
    ),
]


@pytest.fixture
def ns(stack_settings: Settings) -> Iterator[tuple[redis.Redis, str]]:
    tag = f"ovl{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack_settings.redis_conninfo())
    yield client, tag
    drop_namespace(stack_settings, tag)
    client.close()


def _text(raw: dict) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def test_rows_written_are_what_row_after_predicts(ns: tuple[redis.Redis, str]) -> None:
    client, tag = ns
    writer = RedisBatchWriter(client, SAMPLE_FEATURES, tag, "g")
    planner = Planner(SAMPLE_FEATURES, tag)
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(3), 60).items)
    compared, last = 0, 0
    for start in range(0, len(events), 7):
        chunk = events[start : start + 7]
        keys = planner.keys_needed(chunk)
        states = writer.read_rows(keys)
        plan = planner.plan(chunk, states)
        others = [f"{tag}:r:{{payments:{n}}}" for n in (90, 91)]
        client.hset(others[0], mapping={"pos": "1:2", "ver": "7"})
        last = start + 7
        read, pending = writer.read_then_apply(others, plan, {"t:0": last})
        assert read == {others[0]: {"pos": "1:2", "ver": "7"}, others[1]: {}}
        assert pending.wait() is True
        for key, write in plan.rows.items():
            assert _text(client.hgetall(key)) == row_after(states.get(key), write)
            compared += 1
    assert compared > 10
    assert writer.offsets() == {"t:0": last}


def test_a_row_changed_under_the_held_batch_refuses_the_whole_write(
    ns: tuple[redis.Redis, str],
) -> None:
    client, tag = ns
    writer = RedisBatchWriter(client, SAMPLE_FEATURES, tag, "g")
    planner = Planner(SAMPLE_FEATURES, tag)
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(5), 12).items)
    plan = planner.plan(events, writer.read_rows(planner.keys_needed(events)))
    assert plan.increments
    raced = next(iter(plan.rows))
    client.hset(raced, mapping={"ver": "41", "pos": "9:9"})  # another consumer got there first
    _read, pending = writer.read_then_apply([], plan, {"t:0": 12})
    assert pending.wait() is False
    assert all(not client.exists(k) for k in plan.increments)
    assert writer.offsets() == {}
    assert _text(client.hgetall(raced)) == {"ver": "41", "pos": "9:9"}


def test_scripts_lost_by_a_restart_are_loaded_again(ns: tuple[redis.Redis, str]) -> None:
    client, tag = ns
    writer = RedisBatchWriter(client, SAMPLE_FEATURES, tag, "g")
    planner = Planner(SAMPLE_FEATURES, tag)
    events = decode_all(SAMPLE_FEATURES, _history(random.Random(8), 10).items)
    plan = planner.plan(events, writer.read_rows(planner.keys_needed(events)))
    other = f"{tag}:r:{{payments:77}}"
    client.hset(other, mapping={"ver": "3"})
    writer._load_scripts()  # a running writer has loaded them once
    # what a restart without persistence of scripts leaves (SCRIPT FLUSH is the admin's)
    admin = redis.Redis.from_url(Settings().redis_conninfo("admin"))
    admin.script_flush()
    admin.close()
    read, pending = writer.read_then_apply([other], plan, {"t:0": 10})
    assert read == {other: {"ver": "3"}}  # read again once the scripts are back
    assert pending.wait() is False  # not written: the shell re-plans and writes it
    assert pending.unloaded
    assert writer.apply(plan, {"t:0": 10}) is True
    assert writer.offsets() == {"t:0": 10}


class _Message:
    """What the pipeline reads of a Kafka message."""

    def __init__(self, offset: int, key: bytes, value: bytes) -> None:
        self._offset, self._key, self._value = offset, key, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


def _entities(client: redis.Redis, tag: str) -> dict[str, dict[str, str]]:
    out = {}
    for key in client.scan_iter(f"{tag}:e:*"):
        fields = _text(client.hgetall(key))
        fields.pop("_written_ms")
        out[key.decode().removeprefix(tag)] = fields
    return out


def test_a_refused_write_in_flight_is_written_again_and_the_batch_held_over_it_replanned(
    stack_settings: Settings,
) -> None:
    """Batch A's write is sent with B's read and answered only after C is decoded. Another
    writer changed a row of A meanwhile: A is written again from fresh state, B (planned over
    A's plan) is planned again before it is sent, and the features equal those of batches
    written one at a time."""
    items = _history(random.Random(5), 90).items
    messages = [_Message(n, key, value) for n, (key, value) in enumerate(items)]
    batches = [messages[start : start + 30] for start in range(0, len(messages), 30)]
    tags = [f"ovl{uuid.uuid4().hex[:8]}" for _ in range(2)]
    client = redis.Redis.from_url(stack_settings.redis_conninfo())
    try:
        plain = FeaturePipeline(stack_settings, namespace=tags[0])
        for batch in batches:
            plain.process(batch)
        overlapped = FeaturePipeline(stack_settings, namespace=tags[1])
        overlapped.process(batches[0], hold=True)
        assert overlapped._held is not None
        client.hincrby(next(iter(overlapped._held.plan.rows)), "ver", 1)  # a zombie's write
        overlapped.process(batches[1], hold=True)  # sends A's write, plans B over it
        overlapped.process(batches[2], hold=True)  # A refused: written again, B planned again
        overlapped.flush_held()
        assert (overlapped.stats.refused, plain.stats.refused) == (1, 0)
        assert overlapped.stats.overlapped == 2
        expected = _entities(client, tags[0])
        assert len(expected) > 3
        assert _entities(client, tags[1]) == expected
        assert overlapped.writer.offsets() == plain.writer.offsets() == {"t:0": len(messages)}
    finally:
        for tag in tags:
            drop_namespace(stack_settings, tag)
        client.close()
