"""An in-memory store that applies write plans exactly as the Redis store does (for tests)."""

from __future__ import annotations

from collections.abc import Mapping

from feature_pipelines.planner import WritePlan
from feature_pipelines.windows import COMMIT_FIELD

__all__ = ["MemoryStore"]


class MemoryStore:
    """Hashes in dicts; ``apply`` is all-or-nothing like the Redis script."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}

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
        return True
