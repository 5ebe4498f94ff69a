"""Reference implementations the runtime does not run: the tests check the runtime against them.

Each is the plain, one-feature-at-a-time statement of what a fast path computes:
``contribution`` what a row adds to its entity's hash (the runtime runs
``windows.compile_group``), ``read_values`` what a read gives (the runtime folds with
``fold.FoldRead``), ``expired_fields`` which bucket fields no read counts again (the write script
drops them) and ``MemoryStore`` how a write plan is applied (the runtime runs ``lua/apply.lua``).
Nothing under ``feature_pipelines`` imports this module outside the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from feature_pipelines.aggregations import Kind, kind_of
from feature_pipelines.catalog import FeatureSet
from feature_pipelines.planner import WritePlan, settle_spans, sweep_steps
from feature_pipelines.readout import FeatureValue, Fields, ReadPlan
from feature_pipelines.spec import Feature
from feature_pipelines.windows import (
    COMMIT_FIELD,
    bucket_range,
    event_micros,
    parse_field,
    scaled,
)

__all__ = [
    "Contributor",
    "MemoryStore",
    "contribution",
    "expired_fields",
    "read_values",
]


class Contributor:
    """One feature's write, its definition's attributes as plain locals (the reference of
    ``windows.compile_group``, which writes a table's features in one generated function).

    ``pairs(row, memo)`` is ``contribution``; ``memo`` holds values decoding already parsed
    (event times by column, scaled amounts by ``(column, scale)``) and is filled as it goes.
    """

    __slots__ = (
        "bucket_us",
        "columns",
        "event_time",
        "feature",
        "kind",
        "name",
        "scale",
        "value",
        "where",
    )

    def __init__(self, feature: Feature) -> None:
        self.feature = feature
        self.name = feature.name
        self.kind: Kind = kind_of(feature.agg)
        self.bucket_us = feature.bucket_seconds * 1_000_000  # 0: lifetime
        self.event_time = feature.event_time
        self.value = feature.value
        self.scale = feature.scale
        self.where = tuple((c.column, c.equals) for c in feature.where)
        self.columns = frozenset(feature.columns())

    def pairs(self, row: dict[str, Any], memo: dict[Any, int]) -> list[tuple[str, int]]:
        for column, equals in self.where:
            if row[column] != equals:
                return []
        suffix = ""
        if self.bucket_us:
            micros = memo.get(self.event_time)
            if micros is None:
                raw = row[self.event_time]
                if raw is None:
                    return []  # no event time: in no window, as in SQL
                micros = memo[self.event_time] = event_micros(raw, self.event_time)
            suffix = f"@{micros // self.bucket_us}"
        value = None if self.value is None else row[self.value]
        units = None
        if value is not None and self.kind.decimal:  # NULLs are no value, as in SQL
            memo_key = (self.value, self.scale)
            units = memo.get(memo_key)
            if units is None:
                units = memo[memo_key] = scaled(value, self.scale, self.value or "")
        return self.kind.pairs(self.feature, suffix, value, units)


_COMPILED: dict[Feature, Contributor] = {}


def _contributor(feature: Feature) -> Contributor:
    """The ``Contributor`` of a feature, built once."""
    found = _COMPILED.get(feature)
    if found is None:
        found = _COMPILED[feature] = Contributor(feature)
    return found


def contribution(
    feature: Feature, row: dict[str, Any] | None, memo: dict[Any, int] | None = None
) -> list[tuple[str, int]]:
    """The (field, increment) pairs one row adds to its entity's hash for this feature.

    ``memo`` caches parsed times and scaled amounts across the features of one row.
    """
    if row is None:
        return []
    return _contributor(feature).pairs(row, {} if memo is None else memo)


def read_values(
    features: Iterable[Feature], fields: Fields, t_micros: int
) -> dict[str, FeatureValue]:
    """Every given feature's value at ``t`` (an entity with no state reads 0 / None)."""
    return ReadPlan(features, t_micros).values(fields)


def expired_fields(
    features: Iterable[Feature], fields: Iterable[str] | Iterable[bytes], t_micros: int
) -> list[str]:
    """Bucket fields no read at or after ``t`` counts again (zeroed fields are deleted on write)."""
    by_name = {f.name: f for f in features}
    out = []
    for raw in fields:
        name = raw.decode() if isinstance(raw, bytes) else raw
        ref = parse_field(name)
        if ref is None or ref.name not in by_name or ref.bucket is None:
            continue
        lo, _hi = bucket_range(by_name[ref.name], t_micros)
        if ref.bucket <= lo:
            out.append(name)
    return out


# a bucket field: "name[:part]@bucket[#value]", as the write script matches it
_BUCKET = re.compile(r"^([A-Za-z0-9_]+)[^@#]*@(-?\d+)")


class MemoryStore:
    """Hashes in dicts; ``apply`` is all-or-nothing like the Redis script. Given the feature
    set, it also expires in event time as the script does: bucket fields as entities are
    written, row states and idle entities through per-partition indexes."""

    def __init__(self, features: FeatureSet | None = None) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.index: dict[int, dict[str, int]] = {}  # partition -> row key -> exp
        self.idle: dict[int, dict[str, int]] = {}  # partition -> entity key -> settled at
        self.sweep_steps = sweep_steps(features) if features is not None else {}
        self.settle_spans = settle_spans(features) if features is not None else {}
        self.windows = {
            f.name: (f.window_seconds * 1_000_000, f.bucket_seconds * 1_000_000)
            for f in (features or ())
            if f.window is not None
        }

    def read(self, keys: list[str]) -> dict[str, Mapping[str, str]]:
        return {k: dict(self.hashes.get(k, {})) for k in keys}

    def apply(self, plan: WritePlan) -> bool:
        """False (and nothing written) when a row state changed since it was read."""
        for key, write in plan.rows.items():
            if self.hashes.get(key, {}).get("ver") != write.expected_ver:
                return False
        for key, write in plan.rows.items():
            row = self.hashes.setdefault(key, {})
            row.update(write.updates)
            for name in write.deletes:
                row.pop(name, None)
            row["ver"] = str(int(row.get("ver", "0")) + 1)
            self.index.setdefault(write.partition, {})[key] = write.expires_us
        for key, incr in plan.increments.items():
            entity = self.hashes.setdefault(key, {})
            for name, amount in incr.items():
                value = int(entity.get(name, "0")) + amount
                if value:
                    entity[name] = str(value)
                else:
                    entity.pop(name, None)
        for key, commit in plan.commit_ms.items():
            entity = self.hashes.setdefault(key, {})
            if commit > int(entity.get(COMMIT_FIELD, "0")):
                entity[COMMIT_FIELD] = str(commit)
        partitions = sorted({w.partition for w in plan.rows.values()} | set(plan.marks))
        for key in {**plan.increments, **plan.commit_ms}:
            name = plan.entity_of.get(key, "")
            step = self.sweep_steps.get(name, 0) if plan.sweep_at_us else 0
            entity = self.hashes[key]
            if step and plan.sweep_at_us - int(entity.get("_swept", "0")) >= step:
                entity["_swept"] = str(plan.sweep_at_us)
                self._drop_stale(key, plan)
            if step and partitions:
                idle = self.idle.setdefault(partitions[0], {})
                idle[key] = plan.sweep_at_us + self.settle_spans.get(name, 0)
        for partition in partitions:
            newest = plan.marks[partition][0] if partition in plan.marks else 0
            index = self.index.get(partition, {})
            for key in [k for k, exp in index.items() if exp <= newest]:
                del index[key]
                if int(self.hashes.get(key, {}).get("exp", "0")) <= newest:
                    self.hashes.pop(key, None)
            idle = self.idle.get(partition, {})
            for key in [k for k, at in idle.items() if at <= newest]:
                del idle[key]
                if key not in self.hashes:
                    continue
                kept, next_at = self._drop_stale(key, plan)
                if not kept:
                    del self.hashes[key]
                elif next_at is not None:
                    idle[key] = max(next_at, newest + 1)
        return True

    def _drop_stale(self, key: str, plan: WritePlan) -> tuple[int, int | None]:
        """Drop the bucket fields no read at or after the plan's watermark counts; returns how
        many feature fields stay and when the first windowed one of them expires."""
        entity = self.hashes[key]
        kept, next_at = 0, None
        for field in list(entity):
            found = _BUCKET.match(field)
            bound = None if found is None else plan.expired_below.get(found.group(1))
            if found is not None and bound is not None and int(found.group(2)) <= bound:
                del entity[field]
            elif not field.startswith("_"):
                kept += 1
                if found is not None and bound is not None:
                    window, width = self.windows[found.group(1)]
                    at = int(found.group(2)) * width + window
                    next_at = at if next_at is None else min(next_at, at)
        return kept, next_at
