"""Redis key names of a namespace in either layout (docs/redis-cluster.md, Keys and hash tags).

``single`` (one Redis): the names the pipeline has always used, unchanged. ``cluster``: every
key carries one of two hash tags so that each atomic step keeps its keys in one slot:
- a **partition tag** ``{<ns>/p<p>}``: row states, next offsets, watermarks, the row-state
  expiry index and the journal of one change-topic partition (the control step);
- a **shard tag** ``{<ns>/s<k>}``, ``k`` = CRC-32 of ``<entity>:<key>`` modulo ``shards``:
  entity hashes, the entries each shard applied, its idle-entity indexes (the entity steps).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["KeyLayout", "meta_pipeline", "split_entity_key"]


def meta_pipeline(client: Any) -> Any:
    """A pipeline for a few bookkeeping writes of different keys (live stats, the applied
    definitions): MULTI/EXEC on a single Redis; on a Redis Cluster, where a transaction must
    keep to one slot, a plain pipeline (each command applied on its own, grouped by node)."""
    from redis.cluster import RedisCluster

    return client.pipeline(transaction=not isinstance(client, RedisCluster))


def split_entity_key(name: str) -> tuple[str, str]:
    """``(entity, key)`` of a single-layout entity key ``<ns>:e:{<entity>:<key>}``."""
    inner = name[name.index(":e:{") + 4 : -1]
    entity, _sep, key = inner.partition(":")
    return entity, key


@dataclass(frozen=True)
class KeyLayout:
    """Key names of namespace ``ns`` and consumer group ``group``."""

    ns: str
    group: str
    layout: Literal["single", "cluster"] = "single"
    shards: int = 64

    @property
    def cluster(self) -> bool:
        return self.layout == "cluster"

    # ---- tags ------------------------------------------------------------------------
    def shard_of(self, entity: str, key: Any) -> int:
        """The virtual shard of one entity (stable across processes and versions)."""
        return zlib.crc32(f"{entity}:{key}".encode()) % self.shards

    def partition_tag(self, partition: int) -> str:
        return f"{{{self.ns}/p{partition}}}"

    def shard_tag(self, shard: int) -> str:
        return f"{{{self.ns}/s{shard}}}"

    # ---- entity side -----------------------------------------------------------------
    def entity(self, entity: str, key: Any) -> str:
        if not self.cluster:
            return f"{self.ns}:e:{{{entity}:{key}}}"
        return f"{self.ns}:e:{self.shard_tag(self.shard_of(entity, key))}:{entity}:{key}"

    def applied(self, shard: int) -> str:
        """The journal entries one shard applied (field ``<group>:<partition>`` -> seq)."""
        return f"{self.ns}:applied:{self.shard_tag(shard)}"

    def applied_field(self, partition: int) -> str:
        return f"{self.group}:{partition}"

    def idle(self, partition: int, shard: int | None = None) -> str:
        """Entities partition ``partition`` wrote last, by when they are idle (a sorted set)."""
        if not self.cluster:
            return f"{self.ns}:idle:{{{self.group}}}:{partition}"
        return f"{self.ns}:idle:{self.shard_tag(shard or 0)}:{self.group}:{partition}"

    def shard_noindex(self, partition: int, shard: int) -> str:
        """A row-state index the entity step names but never fills (it writes no row state)."""
        return f"{self.ns}:expiry:{self.shard_tag(shard)}:{self.group}:{partition}"

    def control_idle(self, partition: int) -> str:
        """An idle index the control step names but never fills (it writes no entity)."""
        if not self.cluster:
            return f"{self.ns}:idle:{{{self.group}}}:{partition}:control"
        return f"{self.ns}:idle:{self.partition_tag(partition)}:{self.group}"

    # ---- partition side --------------------------------------------------------------
    def row(self, table: str, pk: Any, partition: int) -> str:
        if not self.cluster:
            return f"{self.ns}:r:{{{table}:{pk}}}"
        return f"{self.ns}:r:{self.partition_tag(partition)}:{table}:{pk}"

    def offsets(self, partition: int) -> str:
        if not self.cluster:
            return f"{self.ns}:offsets:{{{self.group}}}"
        return f"{self.ns}:offsets:{self.partition_tag(partition)}:{self.group}"

    def watermarks(self, partition: int) -> str:
        if not self.cluster:
            return f"{self.ns}:watermarks:{{{self.group}}}"
        return f"{self.ns}:watermarks:{self.partition_tag(partition)}:{self.group}"

    def expiry(self, partition: int) -> str:
        if not self.cluster:
            return f"{self.ns}:expiry:{{{self.group}}}:{partition}"
        return f"{self.ns}:expiry:{self.partition_tag(partition)}:{self.group}"

    # ---- the epoch, per slot (cluster) -------------------------------------------------
    def sentinels(self, partitions: int) -> list[str]:
        """Cluster layout: the group's epoch mark in every partition slot of ``partitions``
        and every shard slot, so that a primary which lost its data is found whichever slots
        it held (``loss.LossWatch.slots_lost``); none in the single layout (its one sentinel
        ``<ns>:epoch:{<group>}`` covers the one Redis)."""
        if not self.cluster:
            return []
        tags = [self.partition_tag(p) for p in range(partitions)]
        tags += [self.shard_tag(k) for k in range(self.shards)]
        return [f"{self.ns}:epoch:{tag}:{self.group}" for tag in tags]

    def journal(self, partition: int) -> str:
        """The partition's entity steps not yet acknowledged (a hash ``q<seq>`` -> entry)."""
        if not self.cluster:
            return f"{self.ns}:journal:{{{self.group}}}:{partition}"
        return f"{self.ns}:journal:{self.partition_tag(partition)}:{self.group}"
