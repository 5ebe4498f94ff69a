"""Drive the pure core end to end in memory: envelopes -> decode -> plan -> MemoryStore -> read.

Shared by the contract, join, dedup and definition tests so that each test states only the
events it sends and the values it expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.decode import ChangeEvent, decode
from feature_pipelines.planner import Planner, WritePlan, entity_key
from feature_pipelines.readout import FeatureValue
from feature_pipelines.reference import MemoryStore, read_values
from tests.feature_pipelines.fixtures import envelope

NS = "t"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


class Log:
    """Debezium-shaped events for any table, with strictly increasing LSNs."""

    def __init__(self, lsn: int = 1000) -> None:
        self.lsn = lsn
        self.items: list[tuple[bytes, bytes]] = []

    def emit(
        self,
        table: str,
        op: str,
        key: dict[str, Any],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> tuple[bytes, bytes]:
        self.lsn += 8
        item = (orjson.dumps(key), envelope(table, op, before, after, self.lsn))
        self.items.append(item)
        return item


def decode_all(features: FeatureSet, items: Iterable[tuple[bytes, bytes]]) -> list[ChangeEvent]:
    out = []
    for key, value in items:
        event = decode(value, key, features)
        if event is not None:
            out.append(event)
    return out


class Pipeline:
    """A planner and an in-memory store, fed batch by batch like the shell does."""

    def __init__(self, features: FeatureSet, store: MemoryStore | None = None) -> None:
        self.features = features
        self.planner = Planner(features, NS)
        self.store = store if store is not None else MemoryStore()
        self.plans: list[WritePlan] = []

    def feed(self, items: Sequence[tuple[bytes, bytes]], batch: int = 1) -> WritePlan:
        """Apply the events in batches of ``batch``; returns the last plan."""
        events = decode_all(self.features, items)
        plan = WritePlan()
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            plan = self.planner.plan(chunk, self.store.read(self.planner.keys_needed(chunk)))
            assert self.store.apply(plan)
            self.plans.append(plan)
        return plan

    def hash(self, entity: str, key: Any) -> dict[str, str]:
        return self.store.hashes.get(entity_key(NS, entity, key), {})

    def values(self, entity: str, key: Any, t: datetime) -> dict[str, FeatureValue]:
        feats = self.features.for_entity(entity)
        return read_values(feats, self.hash(entity, key), micros(t))

    def feature_fields(self, entity: str, key: Any) -> dict[str, str]:
        """The entity's feature fields, without bookkeeping (``_commit_ms`` ...)."""
        return {k: v for k, v in self.hash(entity, key).items() if not k.startswith("_")}
