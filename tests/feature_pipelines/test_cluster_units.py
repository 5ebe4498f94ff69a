"""The cluster layout's pure parts: a consumed batch split by partition, the writer chosen by
``redis_layout``, and the single layout's key names left as they were."""

from __future__ import annotations

import redis

from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_pipeline import batch_writer, split_by_partition
from feature_pipelines.store_write import RedisBatchWriter
from freshloop.core.settings import Settings


class _Msg:
    def __init__(self, partition: int | None, n: int) -> None:
        self._partition, self.n = partition, n

    def partition(self) -> int | None:
        return self._partition


def test_a_batch_splits_by_partition_in_order_of_first_appearance() -> None:
    msgs = [_Msg(2, 0), _Msg(0, 1), _Msg(2, 2), _Msg(None, 3), _Msg(1, 4)]
    parts = split_by_partition(msgs)
    assert [(p, [m.n for m in ms]) for p, ms in parts] == [(2, [0, 2]), (0, [1, 3]), (1, [4])]
    assert split_by_partition([]) == []


def test_the_single_layout_keeps_its_writer_and_key_names() -> None:
    client = redis.Redis()  # never connected: constructing a writer sends nothing
    writer = batch_writer(Settings(), client, SAMPLE_FEATURES, "ns", "g")
    assert isinstance(writer, RedisBatchWriter)
    assert writer.offsets_key == KeyLayout("ns", "g").offsets(0) == "ns:offsets:{g}"
    single = KeyLayout("ns", "g")
    assert single.entity("customer", 42) == "ns:e:{customer:42}"
    assert single.row("payments", 1001, 3) == "ns:r:{payments:1001}"
    assert single.expiry(3) == "ns:expiry:{g}:3"


def test_cluster_keys_carry_the_partition_or_the_shard_tag() -> None:
    keys = KeyLayout("ns", "g", "cluster", shards=64)
    shard = keys.shard_of("customer", 42)
    assert 0 <= shard < 64 and shard == KeyLayout("ns", "h", "cluster").shard_of("customer", 42)
    assert keys.entity("customer", 42) == f"ns:e:{{ns/s{shard}}}:customer:42"
    assert keys.row("payments", 1001, 3) == "ns:r:{ns/p3}:payments:1001"
    assert keys.offsets(3) == "ns:offsets:{ns/p3}:g"
    assert keys.journal(3) == "ns:journal:{ns/p3}:g"
