"""Turn a batch of change events into one atomic write (pure: state in, plan out).

The shell reads the row states a batch needs (``keys_needed``) in one round trip, the planner
decides, and the shell writes the plan in one atomic step, which also checks that no row state
changed in between (each row state carries a version ``ver``; the write is refused if any
differs, and the shell re-reads and re-plans).

Row state, one hash per source row, ``<ns>:r:{<table>:<pk>}``:
- ``pos``: the source position of the newest change applied to the row. A change whose position
  is not newer is a duplicate (Debezium and Kafka deliver at least once) and is dropped. A
  snapshot read (``op=r``) applies only when the row has no position yet: it counts once, and
  again only after the state was lost (a re-snapshot rebuilds it).
- ``p:<column>``: for a table that provides a lookup (payments -> merchant_id), the current
  provided value.
- ``j:<table>:<pk>``: rows of other tables that look this row up (a payment's outcome), as the
  image that was counted. An outcome that arrives before its payment waits here, counted once
  the payment provides the merchant; a payment that changes merchant moves its outcomes' counts.
- ``ver``: incremented by every write, for the optimistic check above.

An update counts as "retract the old image, add the new one" (Debezium's ``before`` and
``after`` with REPLICA IDENTITY FULL), so rows moving in or out of a filter, to another entity or
to another event time are exact; a delete retracts; a primary-key change arrives as delete plus
create and needs nothing special.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.decode import ChangeEvent, format_position, parse_position
from feature_pipelines.spec import Feature
from feature_pipelines.windows import contribution

__all__ = ["Planner", "RowWrite", "WritePlan", "entity_key", "row_key"]

RowState = Mapping[str, str]


def entity_key(ns: str, entity: str, key: Any) -> str:
    """Redis key of one entity's features; the braces keep it in one Redis Cluster slot."""
    return f"{ns}:e:{{{entity}:{key}}}"


def row_key(ns: str, table: str, pk: str) -> str:
    return f"{ns}:r:{{{table}:{pk}}}"


@dataclass
class RowWrite:
    """Changes to one row-state hash, guarded by the version it had when it was read."""

    expected_ver: str | None
    updates: dict[str, str] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)


@dataclass
class WritePlan:
    """Everything one batch writes: entity increments, row states, freshness; and counts."""

    increments: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, RowWrite] = field(default_factory=dict)
    commit_ms: dict[str, int] = field(default_factory=dict)  # entity key -> newest commit
    entity_of: dict[str, str] = field(default_factory=dict)  # entity key -> entity name
    applied: int = 0
    duplicates: int = 0
    applied_commit_ms: list[int] = field(default_factory=list)
    applied_events: list[ChangeEvent] = field(default_factory=list)  # for on_applied hooks


class _Batch:
    """Working state while planning: row states as read, overlaid with this batch's changes."""

    def __init__(self, ns: str, states: Mapping[str, RowState]) -> None:
        self.ns = ns
        self.read = states
        self.overlay: dict[str, dict[str, str | None]] = {}
        self.plan = WritePlan()
        self._incr: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))

    def get(self, key: str, name: str) -> str | None:
        over = self.overlay.get(key, {})
        if name in over:
            return over[name]
        value = self.read.get(key, {}).get(name)
        return value if value is None or isinstance(value, str) else value.decode()

    def fields(self, key: str, prefix: str) -> dict[str, str]:
        out = {
            (k if isinstance(k, str) else k.decode()): (v if isinstance(v, str) else v.decode())
            for k, v in self.read.get(key, {}).items()
        }
        for k, v in self.overlay.get(key, {}).items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return {k: v for k, v in out.items() if k.startswith(prefix)}

    def put(self, key: str, name: str, value: str | None) -> None:
        self.overlay.setdefault(key, {})[name] = value

    def add(
        self,
        feature: Feature,
        row: dict[str, Any] | None,
        sign: int,
        key: Any,
        commit_ms: int,
        memo: dict[Any, int] | None = None,
    ) -> None:
        if row is None or key is None:
            return
        pairs = contribution(feature, row, memo)
        if not pairs:
            return
        ekey = entity_key(self.ns, feature.entity.name, key)
        incr = self._incr[ekey]
        for name, amount in pairs:
            incr[name] += sign * amount
        self.plan.entity_of[ekey] = feature.entity.name
        self.plan.commit_ms[ekey] = max(self.plan.commit_ms.get(ekey, 0), commit_ms)

    def finish(self) -> WritePlan:
        for ekey, incr in self._incr.items():
            nonzero = {name: n for name, n in incr.items() if n}
            if nonzero:
                self.plan.increments[ekey] = nonzero
        for key, changes in self.overlay.items():
            raw_ver = self.read.get(key, {}).get("ver")
            ver = raw_ver if raw_ver is None or isinstance(raw_ver, str) else raw_ver.decode()
            write = RowWrite(ver)
            for name, value in changes.items():
                if value is None:
                    write.deletes.add(name)
                else:
                    write.updates[name] = value
            self.plan.rows[key] = write
        return self.plan


class Planner:
    """Plans batches for one feature set under one key namespace."""

    def __init__(self, features: FeatureSet, ns: str) -> None:
        self.features = features
        self.ns = ns
        self._direct = {
            t: tuple((f, tuple(f.columns())) for f in features.for_table(t) if f.lookup is None)
            for t in features.tables()
        }
        self._consumers = {
            t: tuple(f for f in features.for_table(t) if f.lookup) for t in features.tables()
        }
        self._provided = {t: features.lookups_from(t) for t in features.tables()}
        self._lookups = {t: _group_lookups(self._consumers[t]) for t in features.tables()}

    def keys_needed(self, events: Iterable[ChangeEvent]) -> list[str]:
        """Row-state keys to read before planning these events."""
        keys: dict[str, None] = {}
        for ev in events:
            keys[row_key(self.ns, ev.table, ev.key)] = None
            for f in self._consumers.get(ev.table, ()):
                assert f.lookup is not None  # noqa: S101
                for row in (ev.before, ev.after):
                    if row is not None and row[f.lookup.column] is not None:
                        keys[row_key(self.ns, f.lookup.table, str(row[f.lookup.column]))] = None
        return list(keys)

    def plan(self, events: Sequence[ChangeEvent], states: Mapping[str, RowState]) -> WritePlan:
        batch = _Batch(self.ns, states)
        for ev in events:
            rkey = row_key(self.ns, ev.table, ev.key)
            stored = parse_position(batch.get(rkey, "pos"))
            if stored is not None and (ev.op == "r" or ev.position <= stored):
                batch.plan.duplicates += 1
                continue
            batch.put(rkey, "pos", format_position(ev.position))
            # A row with no stored position has never been counted (positions are written with
            # the counts), so there is nothing of its old image to retract: this keeps a
            # consumer that starts mid-history (topic retention) from going negative.
            before = ev.before if stored is not None else None
            after = ev.after
            old_memo: dict[Any, int] = {}
            new_memo: dict[Any, int] = {}
            for f, columns in self._direct.get(ev.table, ()):
                if (
                    before is not None
                    and after is not None
                    and all(before[c] == after[c] for c in columns)
                ):
                    continue  # this change does not touch the feature
                if before is not None:
                    batch.add(f, before, -1, before[f.entity.key], ev.commit_ms, old_memo)
                if after is not None:
                    batch.add(f, after, +1, after[f.entity.key], ev.commit_ms, new_memo)
            self._consume(batch, ev)
            self._provide(batch, ev, rkey)
            batch.plan.applied += 1
            batch.plan.applied_commit_ms.append(ev.commit_ms)
            batch.plan.applied_events.append(ev)
        return batch.finish()

    def _consume(self, batch: _Batch, ev: ChangeEvent) -> None:
        """A row whose entity key comes through a lookup (an outcome -> its payment's merchant).

        The counted image is parked once per referenced row and shared by every lookup of this
        table, so all lookups retract before any re-counts and re-parks it.
        """
        lookups = self._lookups.get(ev.table, ())
        if not lookups:
            return
        slot = f"j:{ev.table}:{ev.key}"
        cleared: set[str] = set()
        for (table, column, provides), feats in lookups:
            refs = {row[column] for row in (ev.before, ev.after) if row and row[column] is not None}
            for ref in refs:  # retract what was counted, wherever it was parked
                pkey = row_key(self.ns, table, str(ref))
                counted = batch.get(pkey, slot)
                if counted is not None:
                    provided = batch.get(pkey, f"p:{provides}")
                    image = orjson.loads(counted)
                    for f in feats:
                        batch.add(f, image, -1, provided, ev.commit_ms)
                    cleared.add(pkey)
        for pkey in cleared:
            batch.put(pkey, slot, None)
        if ev.after is None:
            return
        parked = orjson.dumps(ev.after).decode()
        for (table, column, provides), feats in lookups:
            if ev.after[column] is None:
                continue
            pkey = row_key(self.ns, table, str(ev.after[column]))
            provided = batch.get(pkey, f"p:{provides}")
            for f in feats:
                batch.add(f, ev.after, +1, provided, ev.commit_ms)
            batch.put(pkey, slot, parked)

    def _provide(self, batch: _Batch, ev: ChangeEvent, rkey: str) -> None:
        """A row other rows look up (a payment): keep its value, move its consumers' counts."""
        by_provides: dict[str, list[Feature]] = defaultdict(list)
        for f in self._provided.get(ev.table, ()):
            assert f.lookup is not None  # noqa: S101
            by_provides[f.lookup.provides].append(f)
        for provides, feats in by_provides.items():
            old = batch.get(rkey, f"p:{provides}")
            new_raw = ev.after[provides] if ev.after else None
            new = None if new_raw is None else str(new_raw)
            if old == new:
                continue
            batch.put(rkey, f"p:{provides}", new)
            for slot, image in batch.fields(rkey, "j:").items():
                consumer_table = slot.split(":", 2)[1]
                row = orjson.loads(image)
                for f in feats:
                    if f.table == consumer_table:
                        batch.add(f, row, -1, old, ev.commit_ms)
                        batch.add(f, row, +1, new, ev.commit_ms)


def _group_lookups(
    features: Iterable[Feature],
) -> tuple[tuple[tuple[str, str, str], tuple[Feature, ...]], ...]:
    """Consumer features grouped by (provider table, lookup column, provided column)."""
    groups: dict[tuple[str, str, str], list[Feature]] = defaultdict(list)
    for f in features:
        assert f.lookup is not None  # noqa: S101 - only lookup features are consumers
        groups[(f.lookup.table, f.lookup.column, f.lookup.provides)].append(f)
    return tuple((k, tuple(v)) for k, v in groups.items())
