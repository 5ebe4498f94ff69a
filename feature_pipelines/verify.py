"""``freshloop features verify``: compare online values with the SQL oracle at one instant."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.oracle import oracle_query, state_from_row
from feature_pipelines.readout import FeatureValue, State, finalize
from feature_pipelines.store_read import FeatureStore

__all__ = ["Mismatch", "VerifyReport", "verify", "verify_until_clean"]


@dataclass(frozen=True)
class Mismatch:
    entity: str
    key: str
    feature: str
    online: FeatureValue
    oracle: FeatureValue


@dataclass(frozen=True)
class VerifyReport:
    at: datetime
    entities_checked: int
    values_checked: int
    mismatches: list[Mismatch]
    # entities checked of each kind the feature set defines (a sample takes N of each)
    by_entity: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _oracle(
    conn: psycopg.Connection,
    features: FeatureSet,
    entity: str,
    t_us: int,
    keys: Sequence[Any] | None = None,
) -> dict[str, dict[str, FeatureValue]]:
    states: dict[str, dict[str, State]] = {}
    feats = features.for_entity(entity)
    for f in feats:
        query, params = oracle_query(f, t_us, keys)
        for key, n, total, values in conn.execute(query, params):
            states.setdefault(key, {})[f.name] = state_from_row(f, n, total, values)
    return {
        key: {f.name: finalize(f, by.get(f.name, State())) for f in feats}
        for key, by in states.items()
    }


def verify(
    conninfo: str,
    store: FeatureStore,
    sample: int | None = None,
    seed: int = 0,
    only: Mapping[str, Sequence[Any]] | None = None,
    at: datetime | None = None,
) -> VerifyReport:
    """Every entity the database has state for (or a random sample of ``sample`` entities of
    each kind the feature set defines), compared at one instant.

    Entities that only Redis knows are found by scanning and compared against zeros too.
    ``only`` restricts the check to the given keys per entity (e.g. the entities one run wrote).
    ``at``: the instant (default now, whole seconds). Online values are exact at or after the
    event-time watermark; before it, buckets already past every window may be gone.
    """
    t = (at or datetime.now(UTC)).replace(microsecond=0)
    t_us = int(t.timestamp()) * 1_000_000
    mismatches: list[Mismatch] = []
    checked = values = 0
    by_entity: dict[str, int] = {}
    with psycopg.connect(conninfo) as conn:
        for entity in store.entities():
            if only is not None:
                wanted = [str(k) for k in only.get(entity, ())]
                expected = _oracle(conn, store.features, entity, t_us, wanted)
                keys = set(wanted)
            else:
                expected = _oracle(conn, store.features, entity, t_us)
                keys = set(expected) | set(store.scan_keys(entity))
            chosen = sorted(keys)
            if sample is not None and sample < len(chosen):
                chosen = sorted(random.Random(seed).sample(chosen, sample))  # noqa: S311
            feats = store.features.for_entity(entity)
            zeros = {f.name: finalize(f, State()) for f in feats}
            for online in store.get_many(entity, chosen, at=t):
                want = expected.get(online.key, zeros)
                for name, value in online.values.items():
                    values += 1
                    if value != want[name]:
                        mismatches.append(Mismatch(entity, online.key, name, value, want[name]))
            checked += len(chosen)
            by_entity[entity] = len(chosen)
    return VerifyReport(t, checked, values, mismatches, by_entity)


def verify_until_clean(
    conninfo: str,
    store: FeatureStore,
    *,
    wait_s: float = 10.0,
    sample: int | None = None,
    only: Mapping[str, Sequence[Any]] | None = None,
    at: datetime | None = None,
) -> VerifyReport:
    """Verify, retrying for up to ``wait_s`` while the pipeline catches up with the database."""
    deadline = time.monotonic() + wait_s
    while True:
        report = verify(conninfo, store, sample, only=only, at=at)
        if report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(0.5)
