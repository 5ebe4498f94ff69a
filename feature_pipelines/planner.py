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
from feature_pipelines.windows import GroupFn, compile_group

__all__ = ["Planner", "RowWrite", "WritePlan", "entity_key", "row_after", "row_key"]

RowState = Mapping[str, str]


def entity_key(ns: str, entity: str, key: Any) -> str:
    """Redis key of one entity's features; the braces keep it in one Redis Cluster slot."""
    return f"{ns}:e:{{{entity}:{key}}}"


def row_key(ns: str, table: str, pk: str) -> str:
    return f"{ns}:r:{{{table}:{pk}}}"


@dataclass(slots=True)
class RowWrite:
    """Changes to one row-state hash, guarded by the version it had when it was read."""

    expected_ver: str | None
    updates: dict[str, str] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)


def row_after(before: RowState | None, write: RowWrite) -> dict[str, str]:
    """A row state as the batch write leaves it (the store's script: sets, deletes, ``ver``+1)."""
    state = dict(before or {})
    for name in write.deletes:
        state.pop(name, None)
    state.update(write.updates)
    state["ver"] = str(int(write.expected_ver or 0) + 1)
    return state


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


# Features of one table that read one entity key column: (entity, key column, their compiled
# contribution function, see ``windows.compile_group``).
_Group = tuple[str, str, GroupFn]


class _Batch:
    """Working state while planning: row states as read (text), overlaid with this batch's
    changes; entity increments summed per key and field."""

    __slots__ = ("incr", "ns", "overlay", "plan", "read")

    def __init__(self, ns: str, states: Mapping[str, RowState]) -> None:
        self.ns = ns
        self.read = states
        self.overlay: dict[str, dict[str, str | None]] = {}
        self.plan = WritePlan()
        self.incr: dict[str, dict[str, int]] = {}

    def get(self, key: str, name: str) -> str | None:
        over = self.overlay.get(key)
        if over is not None and name in over:
            return over[name]
        state = self.read.get(key)
        return None if state is None else state.get(name)

    def fields(self, key: str, prefix: str) -> dict[str, str]:
        out = {k: v for k, v in self.read.get(key, {}).items() if k.startswith(prefix)}
        for k, v in self.overlay.get(key, {}).items():
            if not k.startswith(prefix):
                continue
            if v is None:
                out.pop(k, None)
            else:
                out[k] = v
        return out

    def put(self, key: str, name: str, value: str | None) -> None:
        over = self.overlay.get(key)
        if over is None:
            over = self.overlay[key] = {}
        over[name] = value

    def add(
        self,
        entity: str,
        key: Any,
        contribute: GroupFn,
        row: dict[str, Any],
        memo: dict[Any, int],
        sign: int,
        commit_ms: int,
    ) -> None:
        """Add (sign +1) or retract (-1) what ``row`` contributes to entity ``key``."""
        if key is None:
            return
        pairs = contribute(row, memo)
        if not pairs:
            return
        ekey = f"{self.ns}:e:{{{entity}:{key}}}"
        incr = self.incr.get(ekey)
        if incr is None:
            incr = self.incr[ekey] = {}
            self.plan.entity_of[ekey] = entity
        get = incr.get
        if sign > 0:
            for name, amount in pairs:
                incr[name] = get(name, 0) + amount
        else:
            for name, amount in pairs:
                incr[name] = get(name, 0) - amount
        if commit_ms > self.plan.commit_ms.get(ekey, 0):
            self.plan.commit_ms[ekey] = commit_ms

    def finish(self) -> WritePlan:
        plan = self.plan
        for ekey, incr in self.incr.items():
            nonzero = {name: n for name, n in incr.items() if n}
            if nonzero:
                plan.increments[ekey] = nonzero
        for key, changes in self.overlay.items():
            state = self.read.get(key)
            updates: dict[str, str] = {}
            deletes: set[str] = set()
            for name, value in changes.items():
                if value is None:
                    deletes.add(name)
                else:
                    updates[name] = value
            plan.rows[key] = RowWrite(None if state is None else state.get("ver"), updates, deletes)
        return plan


def _groups(features: Iterable[Feature]) -> tuple[_Group, ...]:
    by_entity: dict[tuple[str, str], list[Feature]] = defaultdict(list)
    for f in features:
        by_entity[(f.entity.name, f.entity.key)].append(f)
    return tuple((name, key, compile_group(tuple(fs))) for (name, key), fs in by_entity.items())


class Planner:
    """Plans batches for one feature set under one key namespace."""

    def __init__(self, features: FeatureSet, ns: str) -> None:
        self.features = features
        self.ns = ns
        tables = features.tables()
        direct = {t: [f for f in features.for_table(t) if f.lookup is None] for t in tables}
        self._direct = {t: _groups(fs) for t, fs in direct.items()}
        self._direct_features = direct
        self._columns = {t: tuple(sorted(features.needed_columns(t))) for t in tables}
        # (changed columns of an update) -> the groups of features reading one of them
        self._affected: dict[tuple[str, frozenset[str]], tuple[_Group, ...]] = {}
        consumers = {t: tuple(f for f in features.for_table(t) if f.lookup) for t in tables}
        self._lookups = {t: _group_lookups(consumers[t]) for t in tables}
        self._lookup_refs = {
            t: tuple(dict.fromkeys((table, column) for (table, column, _p), _f in groups))
            for t, groups in self._lookups.items()
        }
        self._provided: dict[str, tuple[tuple[str, tuple[Feature, ...]], ...]] = {}
        for t in tables:
            by_provides: dict[str, list[Feature]] = defaultdict(list)
            for f in features.lookups_from(t):
                assert f.lookup is not None  # noqa: S101 - lookups_from returns lookups only
                by_provides[f.lookup.provides].append(f)
            self._provided[t] = tuple((p, tuple(fs)) for p, fs in by_provides.items())

    def keys_needed(self, events: Iterable[ChangeEvent]) -> list[str]:
        """Row-state keys to read before planning these events."""
        return self.rows_needed(events)[0]

    def rows_needed(self, events: Iterable[ChangeEvent]) -> tuple[list[str], set[str]]:
        """``keys_needed``, and the row-state keys of the batch's inserts (op ``c``): rows a live
        stream has never seen, which a row cache may take as new instead of reading
        (``row_cache.RowCache.split``). Each event's key is made once for both."""
        ns = self.ns
        keys: dict[str, None] = {}
        inserted: set[str] = set()
        refs = self._lookup_refs
        for ev in events:
            own = f"{ns}:r:{{{ev.table}:{ev.key}}}"
            keys[own] = None
            if ev.op == "c":
                inserted.add(own)
            for table, column in refs.get(ev.table, ()):
                for row in (ev.before, ev.after):
                    if row is not None and row[column] is not None:
                        keys[f"{ns}:r:{{{table}:{row[column]}}}"] = None
        return list(keys), inserted

    def _changed_groups(
        self, table: str, before: dict[str, Any], after: dict[str, Any]
    ) -> tuple[_Group, ...]:
        changed = frozenset(c for c in self._columns[table] if before[c] != after[c])
        found = self._affected.get((table, changed))
        if found is None:
            feats = [f for f in self._direct_features[table] if not changed.isdisjoint(f.columns())]
            found = self._affected[(table, changed)] = _groups(feats)
        return found

    def plan(self, events: Sequence[ChangeEvent], states: Mapping[str, RowState]) -> WritePlan:
        """``states``: the row-state hashes of ``keys_needed(events)``, as text."""
        batch = _Batch(self.ns, states)
        ns = self.ns
        plan = batch.plan
        direct_of = self._direct
        for ev in events:
            table = ev.table
            rkey = f"{ns}:r:{{{table}:{ev.key}}}"
            stored = parse_position(batch.get(rkey, "pos"))
            if stored is not None and (ev.op == "r" or ev.position <= stored):
                plan.duplicates += 1
                continue
            batch.put(rkey, "pos", format_position(ev.position))
            # A row with no stored position has never been counted (positions are written with
            # the counts), so there is nothing of its old image to retract: this keeps a
            # consumer that starts mid-history (topic retention) from going negative.
            before = ev.before if stored is not None else None
            after = ev.after
            groups = direct_of.get(table, ())
            if groups and before is not None and after is not None:
                groups = self._changed_groups(table, before, after)  # only what the change touches
            commit_ms = ev.commit_ms
            for entity, column, contribute in groups:
                if before is not None:
                    batch.add(
                        entity,
                        before[column],
                        contribute,
                        before,
                        ev.before_parsed,
                        -1,
                        commit_ms,
                    )
                if after is not None:
                    batch.add(
                        entity, after[column], contribute, after, ev.after_parsed, 1, commit_ms
                    )
            if self._lookups.get(table):
                self._consume(batch, ev)
            if self._provided.get(table):
                self._provide(batch, ev, rkey)
            plan.applied += 1
            plan.applied_commit_ms.append(commit_ms)
            plan.applied_events.append(ev)
        return batch.finish()

    def _consume(self, batch: _Batch, ev: ChangeEvent) -> None:
        """A row whose entity key comes through a lookup (an outcome -> its payment's merchant).

        The counted image is parked once per referenced row and shared by every lookup of this
        table, so all lookups retract before any re-counts and re-parks it.
        """
        lookups = self._lookups[ev.table]
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
                        batch.add(
                            f.entity.name,
                            provided,
                            compile_group((f,)),
                            image,
                            {},
                            -1,
                            ev.commit_ms,
                        )
                    cleared.add(pkey)
        for pkey in cleared:
            batch.put(pkey, slot, None)
        after = ev.after
        if after is None:
            return
        parked = orjson.dumps(after).decode()
        for (table, column, provides), feats in lookups:
            if after[column] is None:
                continue
            pkey = row_key(self.ns, table, str(after[column]))
            provided = batch.get(pkey, f"p:{provides}")
            for f in feats:
                batch.add(
                    f.entity.name,
                    provided,
                    compile_group((f,)),
                    after,
                    ev.after_parsed,
                    1,
                    ev.commit_ms,
                )
            batch.put(pkey, slot, parked)

    def _provide(self, batch: _Batch, ev: ChangeEvent, rkey: str) -> None:
        """A row other rows look up (a payment): keep its value, move its consumers' counts."""
        for provides, feats in self._provided[ev.table]:
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
                        c = compile_group((f,))
                        batch.add(f.entity.name, old, c, row, {}, -1, ev.commit_ms)
                        batch.add(f.entity.name, new, c, row, {}, 1, ev.commit_ms)


def _group_lookups(
    features: Iterable[Feature],
) -> tuple[tuple[tuple[str, str, str], tuple[Feature, ...]], ...]:
    """Consumer features grouped by (provider table, lookup column, provided column)."""
    groups: dict[tuple[str, str, str], list[Feature]] = defaultdict(list)
    for f in features:
        assert f.lookup is not None  # noqa: S101 - only lookup features are consumers
        groups[(f.lookup.table, f.lookup.column, f.lookup.provides)].append(f)
    return tuple((k, tuple(v)) for k, v in groups.items())
