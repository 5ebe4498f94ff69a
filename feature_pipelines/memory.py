"""An in-memory store that applies write plans exactly as the Redis store does (for tests)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.planner import WritePlan, settle_spans, sweep_steps
from feature_pipelines.windows import COMMIT_FIELD

__all__ = ["MemoryStore"]

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
