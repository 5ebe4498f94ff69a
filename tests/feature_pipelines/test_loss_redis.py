"""Partial-loss detection on a real Redis: no alarm through a month of normal expiry or a quiet
spell, a row state or the group's positions deleted by hand found at the next check, and the
eviction-policy refusal (on a private Redis: the shared one's config is never changed)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from feature_pipelines import FeaturePipeline
from feature_pipelines.catalog import SAMPLE_FEATURES
from feature_pipelines.exceptions import RedisEvictionPolicyError
from feature_pipelines.loss import LossWatch
from feature_pipelines.planner import Planner
from freshloop.core.settings import Settings
from tests.feature_pipelines.test_expiry import PARTITIONS, Month, _events
from tests.feature_pipelines.test_expiry_redis import LayoutWriter
from tests.redis_layout import client_for, drop_keys, entity_key

pytestmark = pytest.mark.integration


@pytest.fixture
def ns(stack_settings: Settings) -> Iterator[tuple[Any, str]]:
    tag = f"loss{uuid.uuid4().hex[:8]}"
    client = client_for(stack_settings)
    yield client, tag
    drop_keys(client, f"{tag}:*")
    client.close()


def _watch(client: Any, settings: Settings, tag: str, samples: int = 64) -> LossWatch:
    """The group's watch in the settings' layout (on a cluster: over the slots of
    ``PARTITIONS`` partitions and the settings' shards)."""
    return LossWatch(
        client,
        tag,
        "g",
        samples=samples,
        shards=settings.redis_cluster_shards,
        partitions=PARTITIONS,
    )


def test_a_month_of_normal_expiry_raises_no_alarm_and_a_deleted_row_state_is_found(
    ns: tuple[Any, str], stack_settings: Settings
) -> None:
    client, tag = ns
    rng = random.Random(3)
    month = Month(rng)
    month.run(days=30)
    events = _events(month.db.log, rng)
    writer = LayoutWriter(stack_settings, client, SAMPLE_FEATURES, tag)
    planner = Planner(SAMPLE_FEATURES, tag)
    watch = _watch(client, stack_settings, tag)
    watch.check_policy()  # the suite's Redis runs noeviction: no refusal
    partitions = range(PARTITIONS)
    for start in range(0, len(events), 40):
        for partition, chunk in writer.units(events[start : start + 40]):
            plan = planner.plan(chunk, writer.read_rows(planner.keys_needed(chunk), partition))
            assert writer.apply(plan, partition, writer.position(partition, start))
        # every row state the script expired was due: none of them is a loss
        assert watch.check(partitions, "e1") is None
    for _ in range(20):  # a quiet spell: nothing written, nothing may look lost
        assert watch.check(partitions, "e1") is None
    # a row state still due to live, deleted by hand (as an eviction or a stray DEL would)
    marks = {p: newest for p, (newest, _first) in writer.watermarks().items()}
    alive = [
        (p, _s(key))
        for p in partitions
        for key, score in client.zrange(writer.index_key(p), 0, -1, withscores=True)
        if score > marks.get(p, 0) and ":r:" in _s(key)  # a row state (not a journal)
    ]
    assert alive, "some row states are still live at the month's end"
    partition, victim = alive[0]
    client.delete(victim)
    only_victim = _watch(client, stack_settings, tag, samples=10_000)  # draws every member
    finding = only_victim.check([partition], "e1")
    assert finding is not None and finding.kind == "row_state"
    assert finding.keys == [victim]


def test_the_group_positions_deleted_are_found_once_seen(
    ns: tuple[Any, str], stack_settings: Settings
) -> None:
    client, tag = ns
    writer = LayoutWriter(stack_settings, client, SAMPLE_FEATURES, tag)
    watch = _watch(client, stack_settings, tag)
    assert watch.check([0], "e1") is None  # a new group: nothing written yet, nothing lost
    writer.set_offsets({"t:0": 5})
    assert watch.check([0], "e1") is None
    client.delete(writer.offsets_key(0))
    finding = watch.check([0], "e1")
    assert finding is not None and finding.kind == "group_key"
    assert finding.keys == [writer.offsets_key(0)]
    assert watch.check([0], "e2") is None  # a new epoch (after the rebuild) starts afresh


def test_an_entity_expiring_by_its_ttl_is_no_loss(
    ns: tuple[Any, str], stack_settings: Settings
) -> None:
    """Entity hashes carry a wall-clock PEXPIRE backstop: their expiry is not an eviction."""
    client, tag = ns
    watch = _watch(client, stack_settings, tag)
    watch.check_policy()
    key = entity_key(stack_settings, "merchant", 1, tag)
    client.hset(key, mapping={"merchant_payment_count_1h@1": 1, "_written_ms": 1})
    client.pexpire(key, 50)
    time.sleep(0.2)
    assert client.exists(key) == 0
    assert watch.check([0], "e1") is None


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# ---- the eviction policy, on a Redis of the test's own ---------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (its config may be changed)."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_redis_is_refused_unless_allowed(private_redis: str, policy: str) -> None:
    client = redis.Redis.from_url(private_redis)
    client.config_set("maxmemory-policy", policy)
    with pytest.raises(RedisEvictionPolicyError, match="CONFIG SET maxmemory-policy noeviction"):
        LossWatch(client, "x", "g").check_policy()
    assert LossWatch(client, "x", "g", allow_eviction=True).check_policy() == policy
    client.config_set("maxmemory-policy", "noeviction")
    assert LossWatch(client, "x", "g").check_policy() == "noeviction"


def test_the_pipeline_refuses_to_start_on_an_evicting_redis(
    stack_settings: Settings, private_redis: str
) -> None:
    redis.Redis.from_url(private_redis).config_set("maxmemory-policy", "allkeys-lru")
    settings = stack_settings.model_copy(
        # a single Redis without users (whatever the suite's layout): its default user takes
        # any password
        update={
            "redis_layout": "single",
            "redis_url": private_redis,
            "redis_namespace": "refused",
            "metrics_port": 0,
            "redis_user": "default",
        }
    )
    pipeline = FeaturePipeline(settings)
    try:
        with pytest.raises(RedisEvictionPolicyError, match="maxmemory-policy is allkeys-lru"):
            pipeline.run()
    finally:
        pipeline.consumer.close()


def test_a_redis_that_hides_its_config_is_refused_unless_allowed(private_redis: str) -> None:
    """A managed Redis: CONFIG is not permitted to the pipeline's user."""
    admin = redis.Redis.from_url(private_redis)
    admin.acl_setuser(
        "pipeline",
        enabled=True,
        passwords=["+secret-for-test"],
        keys=["*"],
        commands=["+@all", "-config"],
    )
    limited = redis.Redis.from_url(private_redis, username="pipeline", password="secret-for-test")
    with pytest.raises(RedisEvictionPolicyError, match="cannot read Redis's maxmemory-policy"):
        LossWatch(limited, "x", "g").check_policy()
    assert LossWatch(limited, "x", "g", allow_eviction=True).check_policy() is None
