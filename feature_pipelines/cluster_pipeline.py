"""Redis Cluster in the consumer: the writer ``FeaturePipeline`` uses in either layout.

docs/redis-cluster.md, "A batch". ``batch_writer`` gives the single layout's
``store_write.RedisBatchWriter`` unchanged, or for ``redis_layout=cluster`` a
``ClusterPipelineWriter``: the same calls the consumer makes (``offsets``, ``watermarks``,
``set_offsets``, ``read_rows``, ``apply``) over ``cluster_write.ClusterBatchWriter``, which writes
one partition's plan at a time. The consumer therefore plans and writes a batch partition by
partition in this layout (``split``), and tells the writer which partition it is on
(``partition``) before it reads row states or writes; it does not hold batches back (the
overlapped write of ``FeaturePipeline.process`` is single-layout only).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import redis
from redis.cluster import RedisCluster

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import KeyLayout
from feature_pipelines.cluster_read import cluster_client, layout_client_when_up
from feature_pipelines.cluster_write import ClusterBatchWriter
from feature_pipelines.planner import WritePlan
from feature_pipelines.store_write import PendingApply, RedisBatchWriter
from freshloop.core.settings import Settings

__all__ = ["ClusterPipelineWriter", "batch_writer", "redis_client", "split_by_partition"]


class _Partitioned(Protocol):
    def partition(self) -> int | None: ...


M = TypeVar("M", bound=_Partitioned)


def split_by_partition(messages: Sequence[M]) -> list[tuple[int, list[M]]]:
    """``messages`` by Kafka partition number, in the order each partition first appears (the
    same partition of every change topic is one unit of the cluster layout)."""
    out: dict[int, list[M]] = {}
    for msg in messages:
        out.setdefault(msg.partition() or 0, []).append(msg)
    return list(out.items())


def _partition_of(name: str) -> int:
    """The partition number of an offsets field ``<topic>:<partition>``."""
    return int(name.rsplit(":", 1)[1])


class ClusterPipelineWriter:
    """``RedisBatchWriter``'s calls over the cluster layout's keys, one partition at a time.

    ``partitions``: how many partitions the change topics have (positions and watermarks are
    kept per partition slot, so reading all of them names each)."""

    def __init__(
        self,
        client: RedisCluster,
        features: FeatureSet,
        ns: str,
        group: str,
        *,
        shards: int,
        partitions: int,
    ) -> None:
        self.cluster = client
        # typed as a single Redis for the consumer's helpers (live stats, the source record,
        # the sentinel, the definitions): a cluster client answers their single-key commands
        # the same way, routed to the key's primary
        self.client = cast(redis.Redis, client)
        self.ns, self.group = ns, group
        self.keys = KeyLayout(ns, group, "cluster", shards)
        self.batch = ClusterBatchWriter(client, features, self.keys)
        self.partitions = partitions
        self.partition = 0  # the partition whose batch is being planned and written

    def _known(self) -> list[int]:
        return list(range(self.partitions))

    def offsets(self) -> dict[str, int]:
        """Next offsets of every partition (one HGETALL per partition slot, pipelined)."""
        pipe = self.cluster.pipeline(transaction=False)
        for p in self._known():
            pipe.hgetall(self.keys.offsets(p))
        out: dict[str, int] = {}
        for raw in pipe.execute():
            out.update({_s(k): int(v) for k, v in raw.items()})
        return out

    def watermarks(self) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for p in self._known():
            out.update(self.batch.watermarks(p))
        return out

    def set_offsets(self, offsets: Mapping[str, int]) -> None:
        """Positions set from outside a batch (tests, a rebuild's restart offsets)."""
        by: dict[int, dict[Any, Any]] = {}
        for name, offset in offsets.items():
            by.setdefault(_partition_of(name), {})[name] = str(offset)
        for p, mapping in by.items():
            self.cluster.hset(self.keys.offsets(p), mapping=mapping)

    def read_rows(self, keys: Sequence[str]) -> dict[str, Mapping[str, str]]:
        """Row states of the current partition (``partition``) by their planner names."""
        return self.batch.read_rows(keys, self.partition)

    def replay(self, partitions: Sequence[int]) -> int:
        """Apply what a crash or a lost owner left in these partitions' journals (at
        assignment, before any batch of theirs)."""
        return sum(self.batch.replay(p) for p in partitions)

    def forget(self) -> None:
        """Positions are re-read: the journals' versions are read again before the next
        write, and what they hold is applied first."""
        self.batch = ClusterBatchWriter(self.client, self.batch.features, self.keys)

    def read_then_apply(
        self, keys: Sequence[str], plan: WritePlan, offsets: Mapping[str, int]
    ) -> tuple[dict[str, Mapping[str, str]], PendingApply]:
        """Not in this layout: the consumer holds no batch back here (``process``)."""
        msg = "the cluster layout writes each batch at once; nothing is held back"
        raise NotImplementedError(msg)

    def apply(self, plan: WritePlan, offsets: Mapping[str, int]) -> bool:
        """Write the current partition's plan with its next offsets (False: a row state or
        the journal moved since they were read; nothing written)."""
        for name in offsets:
            if _partition_of(name) != self.partition:
                msg = f"offsets {name} are not of partition {self.partition}"
                raise ValueError(msg)
        return self.batch.apply(plan, self.partition, offsets)


def batch_writer(
    settings: Settings, client: Any, features: FeatureSet, ns: str, group: str
) -> RedisBatchWriter | ClusterPipelineWriter:
    """The consumer's writer for ``settings.redis_layout`` on ``client`` (``redis_client``)."""
    if settings.redis_layout == "cluster":
        return ClusterPipelineWriter(
            client,
            features,
            ns,
            group,
            shards=settings.redis_cluster_shards,
            partitions=settings.topic_partitions,
        )
    return RedisBatchWriter(client, features, ns, group)


def redis_client(settings: Settings, stop: threading.Event | None = None) -> Any:
    """The writer user's client of ``settings.redis_layout``: ``redis.Redis`` or a
    ``RedisCluster``; with ``stop``, a cluster's is made once a node answers (the pipeline
    started before its cluster waits: ``cluster_read.layout_client_when_up``)."""
    if settings.redis_layout == "cluster":
        url = settings.redis_conninfo()
        if stop is None:
            return cluster_client(url)
        return layout_client_when_up(
            settings, "writer", stop, "pipeline", make=lambda: cluster_client(url)
        )
    return redis.Redis.from_url(settings.redis_conninfo())


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
