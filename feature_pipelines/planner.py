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
- ``exp``: when the state may go, in event time (microseconds): the partition's watermark at
  the row's last change plus the longest window and ``row_grace`` (a deleted row: ``row_grace``
  alone). The write script keeps an index per partition (a sorted set by ``exp``) and deletes
  the states whose ``exp`` the partition's watermark has passed, in the same atomic step.

Event time. Every partition has a watermark: the newest event time its changes carried (the
event-time columns of the features reading the table; commit time for a table without one),
never more than ``max_ahead`` past the change's commit time, so one wrong clock cannot expire
everything. A replay of the same topics moves the same watermarks. Once a partition's watermark
is ``row_grace`` past its first one, row states of that partition may have expired: a change
to a row without state is then taken as a change to a counted row whose state expired, and its
``before`` image (REPLICA IDENTITY FULL) is retracted; a snapshot read of such a row is a
re-snapshot of a counted row and is dropped. Before that (a new namespace, or a rebuild after
Redis lost everything) a row without state has never been counted: its old image is not
retracted and a snapshot read counts it. So ``row_grace`` must exceed how late Connect can
re-send a change and how late a row can arrive after the row it looks up (an outcome after its
payment's last change).

An update counts as "retract the old image, add the new one" (Debezium's ``before`` and
``after`` with REPLICA IDENTITY FULL), so rows moving in or out of a filter, to another entity or
to another event time are exact; a delete retracts; a primary-key change arrives as delete plus
create and needs nothing special.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.decode import ChangeEvent, format_position, parse_position
from feature_pipelines.spec import Feature
from feature_pipelines.windows import GroupFn, compile_group, event_micros

if TYPE_CHECKING:
    from feature_pipelines.registry import Hidden
    from feature_pipelines.rejects import Trace

__all__ = [
    "Planner",
    "RowWrite",
    "Watermarks",
    "WritePlan",
    "entity_key",
    "row_after",
    "row_key",
    "settle_spans",
    "sweep_steps",
]

RowState = Mapping[str, str]


def entity_key(ns: str, entity: str, key: Any) -> str:
    """Redis key of one entity's features; the braces keep it in one Redis Cluster slot."""
    return f"{ns}:e:{{{entity}:{key}}}"


def row_key(ns: str, table: str, pk: str) -> str:
    return f"{ns}:r:{{{table}:{pk}}}"


@dataclass(slots=True)
class RowWrite:
    """Changes to one row-state hash, guarded by the version it had when it was read; the
    partition whose expiry index holds it and when it may go (``exp``, event-time micros)."""

    expected_ver: str | None
    updates: dict[str, str] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    partition: int = 0
    expires_us: int = 0


DAY_US = 86_400_000_000


def sweep_steps(features: FeatureSet) -> dict[str, int]:
    """Per entity, how far (micros) the watermark moves between two expiry sweeps of one
    entity's hash: a quarter of its shortest window (0: no windowed feature, no sweep). So a
    hash holds at most a quarter more buckets of that feature than a read counts, plus one,
    and fewer of longer windows."""
    out = {}
    for name in features.entities():
        windows = [f.window_seconds for f in features.for_entity(name) if f.window is not None]
        out[name] = min(windows) * 1_000_000 // 4 if windows else 0
    return out


def settle_spans(features: FeatureSet) -> dict[str, int]:
    """Per entity, how long (micros of watermark) after a write the newest fields of its
    shortest window leave it: that window plus its bucket (0: none windowed). An entity idle
    that long is swept by the owner of the partition that wrote it last, then again each time
    its next windowed field expires, and deleted when no feature field (a lifetime one) is
    left: an idle entity keeps no bucket long past its window."""
    out = {}
    for name in features.entities():
        spans = [
            f.window_seconds + f.bucket_seconds
            for f in features.for_entity(name)
            if f.window is not None
        ]
        out[name] = min(spans) * 1_000_000 if spans else 0
    return out


class Watermarks:
    """Event-time watermarks per partition: the newest event time seen, and the first one
    (when this namespace started counting the partition, or restarted after losing Redis).

    Pure and monotone: ``advance`` only moves a watermark forward. The pipeline loads them from
    Redis when it is assigned partitions or re-reads positions; the batch script stores them
    with the batch that moved them (``WritePlan.marks``).
    """

    __slots__ = ("first", "newest")

    def __init__(self, stored: Mapping[int, tuple[int, int]] | None = None) -> None:
        self.newest: dict[int, int] = {}
        self.first: dict[int, int] = {}
        for partition, (newest, first) in (stored or {}).items():
            self.newest[partition] = newest
            self.first[partition] = first

    def advance(self, partition: int, t_us: int) -> None:
        if partition not in self.first:
            self.first[partition] = t_us
            self.newest[partition] = t_us
        elif t_us > self.newest[partition]:
            self.newest[partition] = t_us

    def of(self, partition: int) -> int:
        """The partition's watermark (0 before its first event)."""
        return self.newest.get(partition, 0)

    def may_have_expired(self, partition: int, grace_us: int) -> bool:
        """Whether a row state of this partition can have expired: the shortest time a state
        lives (``grace_us``) has passed since the partition's first event."""
        first = self.first.get(partition)
        return first is not None and self.newest[partition] - first >= grace_us

    def copy(self) -> Watermarks:
        out = Watermarks()
        out.newest, out.first = dict(self.newest), dict(self.first)
        return out

    def stored(self) -> dict[int, tuple[int, int]]:
        return {p: (self.newest[p], self.first[p]) for p in self.newest}


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
    # event time: the watermarks of the partitions this batch moved (partition -> (newest,
    # first)), stored with it; the newest of all (``sweep_at_us``), at which entities written
    # by the batch drop their expired buckets: per windowed feature, bucket fields at or below
    # ``expired_below[name]``; and each partition's watermark for its row-state expiry index
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)
    sweep_at_us: int = 0
    expired_below: dict[str, int] = field(default_factory=dict)


# Features of one table that read one entity key column: (entity, key column, their compiled
# contribution function, see ``windows.compile_group``).
_Group = tuple[str, str, GroupFn]


class _Batch:
    """Working state while planning: row states as read (text), overlaid with this batch's
    changes; entity increments summed per key and field."""

    __slots__ = (
        "_bounds",
        "commit_us",
        "deleted",
        "floor_us",
        "incr",
        "index",
        "ns",
        "overlay",
        "partition",
        "plan",
        "read",
        "trace",
        "watermark",
        "windows",
    )

    def __init__(
        self,
        ns: str,
        states: Mapping[str, RowState],
        windows: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.ns = ns
        self.read = states
        self.overlay: dict[str, dict[str, str | None]] = {}
        self.plan = WritePlan()
        self.incr: dict[str, defaultdict[str, int]] = {}
        self.partition = 0  # of the event being planned: rows it writes go to its index
        self.deleted: dict[str, bool] = {}  # own row key -> its last change was a delete
        self.commit_us: dict[str, int] = {}  # own row key -> its last change's commit (micros)
        # Of the event being planned: its partition's watermark, and the event time at or
        # below which an image may fall in buckets no read at or after it counts (the
        # watermark less the shortest window; 0: none can). Such contributions are not
        # written: they would only leave fields for the next sweep.
        self.watermark = 0
        self.floor_us = 0
        self.windows = windows or {}  # windowed feature -> (window, bucket) micros
        self._bounds: dict[int, dict[str, int]] = {}  # watermark -> ``lo`` of ``contribute``
        # which event (``index`` in the batch) writes what, when asked (``Planner.plan``)
        self.trace: Trace | None = None
        self.index = 0

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
            over["\0p"] = str(self.partition)  # taken out again in ``finish``
        over[name] = value
        if self.trace is not None:
            self.trace.setdefault((key, ""), []).append((self.index, 0))

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
        floor = self.floor_us
        if not floor:
            pairs = contribute(row, memo)
        else:  # an image as old as ``floor`` writes no bucket no read counts (``_dead``)
            known = len(memo)
            lo = self._dead() if _older(memo, floor) else None
            pairs = contribute(row, memo, lo)
            if lo is None and len(memo) != known and _older(memo, floor):
                pairs = contribute(row, memo, self._dead())  # times it parsed itself
        if not pairs:
            return
        ekey = f"{self.ns}:e:{{{entity}:{key}}}"
        incr = self.incr.get(ekey)
        plan = self.plan
        if incr is None:
            incr = self.incr[ekey] = defaultdict(int)
            plan.entity_of[ekey] = entity
        if sign > 0:
            for name, amount in pairs:
                incr[name] += amount
        else:
            for name, amount in pairs:
                incr[name] -= amount
        if commit_ms > plan.commit_ms.get(ekey, 0):
            plan.commit_ms[ekey] = commit_ms
        trace = self.trace
        if trace is not None:
            trace.setdefault((ekey, ""), []).append((self.index, 0))
            for name, amount in pairs:
                trace.setdefault((ekey, name), []).append((self.index, sign * amount))

    def _dead(self) -> dict[str, int]:
        """Per windowed feature, the highest bucket no read at or after the watermark counts
        (the ``lo`` of a group's ``contribute``); made once per watermark and batch."""
        at = self.watermark
        bounds = self._bounds.get(at)
        if bounds is None:
            bounds = self._bounds[at] = {
                name: (at - w) // b for name, (w, b) in self.windows.items()
            }
        return bounds

    def finish(self, marks: Watermarks, live_us: int, deleted_us: int) -> WritePlan:
        """The plan; each row written expires ``live_us`` (``deleted_us`` after a delete) past
        its partition's watermark as this batch leaves it, or past the row's last commit if
        that is later (by at most ``deleted_us``)."""
        plan = self.plan
        for ekey, incr in self.incr.items():
            nonzero = {name: n for name, n in incr.items() if n}
            if nonzero:
                plan.increments[ekey] = nonzero
        deleted = self.deleted
        for key, changes in self.overlay.items():
            state = self.read.get(key)
            partition = int(changes.pop("\0p") or 0)
            # from the watermark, or from the row's last commit when the watermark lags it (a
            # change's event time can be far older than its commit): a re-sent copy of the
            # change then still finds the state; never more than one grace ahead
            mark = marks.of(partition)
            since = max(mark, min(self.commit_us.get(key, 0), mark + deleted_us))
            expires = since + (deleted_us if deleted.get(key) else live_us)
            updates: dict[str, str] = {"exp": str(expires)}
            deletes: set[str] = set()
            for name, value in changes.items():
                if value is None:
                    deletes.add(name)
                else:
                    updates[name] = value
            plan.rows[key] = RowWrite(
                None if state is None else state.get("ver"), updates, deletes, partition, expires
            )
        return plan


def _older(memo: Mapping[Any, int], floor: int) -> bool:
    """Whether an event time (keyed by column; amounts are keyed by tuples) in ``memo`` is at
    or below ``floor``."""
    for name, value in memo.items():
        if value <= floor and type(name) is str:
            return True
    return False


def _groups(features: Iterable[Feature]) -> tuple[_Group, ...]:
    by_entity: dict[tuple[str, str], list[Feature]] = defaultdict(list)
    for f in features:
        by_entity[(f.entity.name, f.entity.key)].append(f)
    return tuple((name, key, compile_group(tuple(fs))) for (name, key), fs in by_entity.items())


class Planner:
    """Plans batches for one feature set under one key namespace.

    ``row_grace``: how long past the longest window a row's state outlives its last change
    (a deleted row's: ``row_grace`` alone); ``max_ahead``: how far past its commit time an event
    time may move a watermark. Both are durations in microseconds. The planner keeps the
    partitions' watermarks (``marks``) and moves them as it plans; the pipeline replaces them
    with Redis's whenever it re-reads positions.
    """

    def __init__(
        self,
        features: FeatureSet,
        ns: str,
        *,
        row_grace_us: int = 2 * DAY_US,
        max_ahead_us: int = DAY_US // 24,
    ) -> None:
        self.features = features
        self.ns = ns
        tables = features.tables()
        self.marks = Watermarks()
        self.row_grace_us = row_grace_us
        self.max_ahead_us = max_ahead_us
        longest = max((f.window_seconds + f.bucket_seconds for f in features), default=0)
        self.row_ttl_us = longest * 1_000_000 + row_grace_us
        self._times = {
            t: tuple(dict.fromkeys(f.event_time for f in features.for_table(t))) for t in tables
        }
        self._windowed = tuple(f for f in features if f.window is not None)
        self._windows = {
            f.name: (f.window_seconds * 1_000_000, f.bucket_seconds * 1_000_000)
            for f in self._windowed
        }
        self._shortest_us = min((w for w, _b in self._windows.values()), default=0)
        direct = {t: [f for f in features.for_table(t) if f.lookup is None] for t in tables}
        self._direct = {t: _groups(fs) for t, fs in direct.items()}
        self._direct_features = direct
        self._columns = {t: tuple(sorted(features.needed_columns(t))) for t in tables}
        # (changed columns of an update) -> the groups of features reading one of them
        self._affected: dict[tuple[str, frozenset[str]], tuple[_Group, ...]] = {}
        # features a backfill counts for the changes of transactions its snapshot sees
        # (``registry``: set by ``freshloop features apply``); skipped for those changes here
        self.hidden: Hidden = ()
        self._hiding: dict[
            tuple[str, frozenset[str], frozenset[str] | None], tuple[_Group, ...]
        ] = {}
        consumers = {t: tuple(f for f in features.for_table(t) if f.lookup) for t in tables}
        self._lookups = {t: _group_lookups(consumers[t]) for t in tables}
        self._lookup_refs = {
            t: tuple(dict.fromkeys((table, column) for (table, column, _p), _f in groups))
            for t, groups in self._lookups.items()
        }
        self._one = {f.name: compile_group((f,)) for f in features}  # lookups' own groups
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

    def _hidden_of(self, ev: ChangeEvent) -> frozenset[str]:
        """Features a backfill counted this change for (its snapshot sees the transaction);
        a snapshot read, without a transaction of its own, is never hidden."""
        txid = ev.txid
        if txid is None or ev.op == "r":
            return frozenset()
        out: frozenset[str] = frozenset()
        for snapshot, names in self.hidden:
            if snapshot.visible(txid):
                out |= names
        return out

    def _groups_hiding(
        self,
        table: str,
        hide: frozenset[str],
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> tuple[_Group, ...]:
        """The groups of ``table``'s direct features but ``hide`` (of an update: those reading
        a changed column)."""
        changed = None
        if before is not None and after is not None:
            changed = frozenset(c for c in self._columns[table] if before[c] != after[c])
        slot = (table, hide, changed)
        found = self._hiding.get(slot)
        if found is None:
            feats = [
                f
                for f in self._direct_features.get(table, ())
                if f.name not in hide and (changed is None or not changed.isdisjoint(f.columns()))
            ]
            found = self._hiding[slot] = _groups(feats)
        return found

    def event_time(self, ev: ChangeEvent) -> int:
        """What ``ev`` says of event time (micros): its newest event-time column, or its commit
        time for a table without one; never more than ``max_ahead`` past its commit."""
        commit_us = ev.commit_ms * 1000
        row, parsed = (
            (ev.after, ev.after_parsed)
            if ev.after is not None
            else (
                ev.before,
                ev.before_parsed,
            )
        )
        newest = None
        if row is not None:
            for column in self._times.get(ev.table, ()):
                t = parsed.get(column)
                if t is None:
                    raw = row.get(column)
                    if raw is None:
                        continue
                    t = event_micros(raw, column)
                if newest is None or t > newest:
                    newest = t
        if newest is None:
            return commit_us
        return min(newest, commit_us + self.max_ahead_us)

    def plan(
        self,
        events: Sequence[ChangeEvent],
        states: Mapping[str, RowState],
        trace: Trace | None = None,
    ) -> WritePlan:
        """``states``: the row-state hashes of ``keys_needed(events)``, as text. ``trace``, if
        given, is filled with what each event writes where (``rejects.Trace``): how the shell
        finds the events behind a field the batch script refused."""
        batch = _Batch(self.ns, states, self._windows)
        batch.trace = trace
        ns = self.ns
        plan = batch.plan
        shortest = self._shortest_us
        direct_of = self._direct
        marks, grace = self.marks, self.row_grace_us
        # whether a row without state in a partition is one whose state expired: decided on the
        # watermarks as the previous batch left them (what the write script expired by)
        expiring: dict[int, bool] = {}
        moved: set[int] = set()
        for index, ev in enumerate(events):
            batch.index = index
            partition = ev.partition
            aged = expiring.get(partition)
            if aged is None:
                aged = expiring[partition] = marks.may_have_expired(partition, grace)
            marks.advance(partition, self.event_time(ev))
            moved.add(partition)
            batch.partition = partition
            if shortest:
                batch.watermark = mark = marks.of(partition)
                batch.floor_us = mark - shortest
            table = ev.table
            rkey = f"{ns}:r:{{{table}:{ev.key}}}"
            stored = parse_position(batch.get(rkey, "pos"))
            if stored is not None and (ev.op == "r" or ev.position <= stored):
                plan.duplicates += 1
                continue
            if stored is None and aged and ev.op == "r":
                plan.duplicates += 1  # a re-snapshot of a counted row whose state expired
                continue
            batch.put(rkey, "pos", format_position(ev.position))
            batch.deleted[rkey] = ev.op == "d"
            batch.commit_us[rkey] = ev.commit_ms * 1000
            # A row with no stored position was either counted and its state expired (``aged``:
            # its old image, from REPLICA IDENTITY FULL, is retracted), or has never been
            # counted (a new namespace, a rebuild): nothing to retract, which also keeps a
            # consumer that starts mid-history (topic retention) from going negative.
            before = ev.before if stored is not None or aged else None
            after = ev.after
            groups = direct_of.get(table, ())
            hide = self._hidden_of(ev) if self.hidden else None
            if hide:
                groups = self._groups_hiding(table, hide, before, after)
            elif groups and before is not None and after is not None:
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
        plan = batch.finish(marks, self.row_ttl_us, grace)
        stored_marks = marks.stored()
        plan.marks = {p: stored_marks[p] for p in moved}
        plan.sweep_at_us = max((marks.of(p) for p in moved), default=0)
        if plan.sweep_at_us:
            at = plan.sweep_at_us
            plan.expired_below = {
                f.name: (at - f.window_seconds * 1_000_000) // (f.bucket_seconds * 1_000_000)
                for f in self._windowed
            }
        return plan

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
                            self._one[f.name],
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
                    self._one[f.name],
                    after,
                    ev.after_parsed,
                    1,
                    ev.commit_ms,
                )
            batch.put(pkey, slot, parked)

    def _provide(self, batch: _Batch, ev: ChangeEvent, rkey: str) -> None:
        """A row other rows look up (a payment): keep its value, move its consumers' counts."""
        after = ev.after
        for provides, feats in self._provided[ev.table]:
            field = "p:" + provides
            old = batch.get(rkey, field)
            new_raw = after[provides] if after else None
            new = None if new_raw is None else str(new_raw)
            if old == new:
                continue
            batch.put(rkey, field, new)
            for slot, image in batch.fields(rkey, "j:").items():
                consumer_table = slot.split(":", 2)[1]
                row = orjson.loads(image)
                for f in feats:
                    if f.table == consumer_table:
                        c = self._one[f.name]
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
