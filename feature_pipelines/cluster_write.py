"""Redis Cluster, the write side: a partition's batch as a control step and entity steps.

docs/redis-cluster.md, "A batch". The planner is the single layout's, unchanged: it names row
states and entities by their single-layout keys, and this writer maps them to their cluster
keys (``cluster_keys.KeyLayout``) on the way in and out. For one partition's plan:

1. the **control step**, ``lua/apply.lua`` with no entity, in the partition's slot: row states
   (version-checked, expiry index), the partition's next offsets and watermark, and the
   journal entry ``q<seq>`` holding what every shard must apply. The journal is written as a
   row state is (version-checked), so a consumer that lost the partition writes nothing. This
   is the commit point.
2. the **entity steps**, ``lua/cluster_guard.lua`` + ``lua/apply.lua`` with no row state, one
   per shard the entry touches, in that shard's slot: the increments, freshness, sweeps, TTLs
   and idle index, and the entry's seq in the shard's ``applied`` hash, atomically; an entry
   the shard applied before writes nothing.
3. the entry is acknowledged (deleted by the next control step). Entries left by a crash are
   applied again first (``replay``), which the guard makes harmless.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
import redis

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.cluster_keys import KeyLayout, split_entity_key
from feature_pipelines.exceptions import BatchRejectedError
from feature_pipelines.lua import script
from feature_pipelines.planner import RowWrite, WritePlan, settle_spans, sweep_steps
from feature_pipelines.rejects import parse_rejection

__all__ = ["ClusterBatchWriter", "ShardRejectedError"]

_APPLY = script("int64") + script("apply")
_ENTITY = script("cluster_guard") + _APPLY
_READ = script("read_rows")
_TTL_REFRESH_MS = 60_000  # as store_write: an entity's PEXPIRE is renewed once per minute
_NEVER_US = 2**62  # the journal's ``exp``: it never leaves the partition's expiry index
_POP_LIMIT = 2000
# Shards no entity of a batch touches whose idle entities of the partition a batch sweeps as
# well, taken in turn, once the partition's watermark moved a sweep step (a quarter of the
# shortest window) since the last such visit: every shard's idle index is swept within
# shards / _IDLE_VISITS sweep steps of the partition's event time, whatever shards its entities
# fall in, at a cost of a few scripts per sweep step instead of per batch
_IDLE_VISITS = 4


class ShardRejectedError(BatchRejectedError):
    """An entity step refused a journal entry after its control step committed (an increment
    leaving int64, a key of another type): the entry stays in the journal; see
    docs/redis-cluster.md, "What a refusal means"."""


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return int(time.time() * 1000)


class ClusterBatchWriter:
    """Writes one partition's plans to a Redis Cluster (or, for tests, any Redis) with the
    consumer's offsets, exactly once per shard."""

    def __init__(self, client: Any, features: FeatureSet, keys: KeyLayout) -> None:
        self.client = client
        self.features = features
        self.keys = keys
        self._sweep_step_us = sweep_steps(features)
        self._settle_us = settle_spans(features)
        self._windows = {
            f.name: (f.window_seconds * 1_000_000, f.bucket_seconds * 1_000_000)
            for f in features
            if f.window is not None
        }
        lifetime = features.lifetime_entities()
        self._ttl_ms = {
            name: 0 if name in lifetime else features.max_window_seconds(name) * 1000
            for name in features.entities()
        }
        self._apply = client.register_script(_APPLY)
        self._entity = client.register_script(_ENTITY)
        self._read = client.register_script(_READ)
        # per partition: the journal's version as this writer last left it (None: read it)
        # and the entries applied to every shard, deleted by the next control step
        self._journal_ver: dict[int, str | None] = {}
        self._acked: dict[int, list[str]] = {}
        self._loaded = False
        # per partition: the shard its next batch starts looking from for idle sweeps of its own
        self._next_visit: dict[int, int] = {}
        self._visited_at: dict[int, int] = {}  # per partition: its watermark at the last visit
        steps = [step for step in self._sweep_step_us.values() if step > 0]
        self._visit_step_us = min(steps) if steps else 0

    # ---- names ---------------------------------------------------------------------------
    def row_name(self, single: str, partition: int) -> str:
        """The cluster key of a row state the planner names ``<ns>:r:{<table>:<pk>}``."""
        if not self.keys.cluster:
            return single
        inner = single[single.index(":r:{") + 4 : -1]
        table, _sep, pk = inner.partition(":")
        return self.keys.row(table, pk, partition)

    def entity_name(self, single: str) -> tuple[str, int]:
        """The cluster key and shard of an entity the planner names ``<ns>:e:{<e>:<key>}``."""
        entity, key = split_entity_key(single)
        return self.keys.entity(entity, key), self.keys.shard_of(entity, key)

    # ---- reads ---------------------------------------------------------------------------
    def read_rows(self, keys: Sequence[str], partition: int) -> dict[str, Mapping[str, str]]:
        """Row states of one partition by their planner names (one script, the partition's
        slot)."""
        if not keys:
            return {}
        names = [self.row_name(k, partition) for k in keys]
        out: dict[str, Mapping[str, str]] = {}
        for start in range(0, len(keys), 4000):
            reply = self._read(keys=names[start : start + 4000])
            for key, flat in zip(keys[start : start + 4000], reply, strict=True):
                it = iter(flat)
                out[key] = {_s(f): _s(v) for f, v in zip(it, it, strict=True)}
        return out

    def offsets(self, partition: int) -> dict[str, int]:
        raw = self.client.hgetall(self.keys.offsets(partition))
        return {_s(k): int(v) for k, v in raw.items()}

    def watermarks(self, partition: int) -> dict[int, tuple[int, int]]:
        raw = self.client.hgetall(self.keys.watermarks(partition))
        out: dict[int, tuple[int, int]] = {}
        for field, value in raw.items():
            newest, _sep, first = _s(value).partition(":")
            out[int(_s(field))] = (int(newest), int(first))
        return out

    def pending(self, partition: int) -> dict[int, bytes]:
        """Journal entries of the partition not acknowledged yet, by seq (and the journal's
        version, remembered for the next control step)."""
        raw = {_s(k): v for k, v in self.client.hgetall(self.keys.journal(partition)).items()}
        ver = raw.get("ver")
        self._journal_ver[partition] = None if ver is None else _s(ver)
        return {int(k[1:]): v for k, v in raw.items() if k.startswith("q")}

    # ---- writes --------------------------------------------------------------------------
    def replay(self, partition: int) -> int:
        """Apply the entries a crash (or a lost consumer) left in the journal, in seq order;
        returns how many. Call it when the partition is assigned, before any ``apply``."""
        entries = self.pending(partition)
        for seq in sorted(entries):
            self._entity_steps(partition, seq, orjson.loads(entries[seq]))
            self._acked.setdefault(partition, []).append(f"q{seq}")
        return len(entries)

    def apply(
        self, plan: WritePlan, partition: int, offsets: Mapping[str, int], *, crash: str = ""
    ) -> bool:
        """Write one partition's plan and its offsets; False (nothing written) if a row state
        or the journal changed since they were read (re-read, replay and re-plan then).
        ``crash`` (tests only): ``"after-control"`` stops after the commit point, as a kill -9
        there would."""
        if partition not in self._journal_ver:
            self.replay(partition)
        entry = self._entry(plan, partition)
        seq = int(self._journal_ver[partition] or 0) + 1
        acked = self._acked.get(partition, [])
        journal = RowWrite(
            self._journal_ver[partition],
            {"exp": str(_NEVER_US), f"q{seq}": orjson.dumps(entry).decode()},
            set(acked),
            partition,
            _NEVER_US,
        )
        keys, args = self._control_call(plan, partition, offsets, journal)
        reply = self._apply(keys=keys, args=args)
        if isinstance(reply, list):
            rejection = parse_rejection(reply)
            planned = {self.row_name(key, partition): key for key in plan.rows}
            if rejection.key in planned:  # a row state: named as the planner traced it
                rejection = replace(rejection, planned=planned[rejection.key])
            msg = f"the batch was not written: {rejection.describe()}"
            raise BatchRejectedError(msg, rejection)
        if int(reply) != 0:
            self._journal_ver.pop(partition, None)  # someone else wrote: read it again
            return False
        self._journal_ver[partition] = str(seq)
        self._acked[partition] = []
        if crash == "after-control":
            return True
        self._entity_steps(partition, seq, entry)
        self._acked[partition] = [f"q{seq}"]
        return True

    def _control_call(
        self, plan: WritePlan, partition: int, offsets: Mapping[str, int], journal: RowWrite
    ) -> tuple[list[str], list[Any]]:
        k = self.keys
        rows = {self.row_name(key, partition): write for key, write in plan.rows.items()}
        rows[k.journal(partition)] = journal
        keys: list[str] = [k.offsets(partition), k.watermarks(partition)]
        args: list[Any] = [_now_ms(), len(rows), 0, _TTL_REFRESH_MS, 0, "", 1, _POP_LIMIT]
        for key, write in rows.items():
            if write.partition != partition:
                msg = f"row {key} is of partition {write.partition}, not {partition}"
                raise ValueError(msg)
            keys.append(key)
            args.append(write.expected_ver or "")
            args.append("\0".join([x for pair in write.updates.items() for x in pair]))
            args.append("\0".join(write.deletes))
            args.append(1)
            args.append(write.expires_us)
        mark = plan.marks.get(partition)
        keys.append(k.expiry(partition))
        keys.append(k.control_idle(partition))
        args.append(mark[0] if mark else 0)
        args.append("\0".join(f"{name}\0{offset}" for name, offset in offsets.items()))
        args.append(f"{partition}\0{mark[0]}:{mark[1]}" if mark else "")
        return keys, args

    def _entry(self, plan: WritePlan, partition: int) -> dict[str, Any]:
        """What the entity steps of ``plan`` write, by shard (the journal entry)."""
        windows = self._windows
        below = "\0".join(
            f"{name}\0{lo}\0{windows[name][1]}\0{windows[name][0]}"
            for name, lo in plan.expired_below.items()
        )
        shards: dict[str, list[list[Any]]] = {}
        increments, commit_of, entity_of = plan.increments, plan.commit_ms, plan.entity_of
        for key in {**increments, **commit_of}:
            name, shard = self.entity_name(key)
            incr = increments.get(key)
            entity = entity_of.get(key, "")
            ttl = self._ttl_ms.get(entity, 0)
            shards.setdefault(str(shard), []).append(
                [
                    name,
                    "\0".join([f"{f}\0{n}" for f, n in incr.items()]) if incr else "",
                    commit_of.get(key, 0),
                    ttl + _TTL_REFRESH_MS if ttl else 0,
                    self._sweep_step_us.get(entity, 0) if plan.sweep_at_us else 0,
                    self._settle_us.get(entity, 0),
                ]
            )
        mark = plan.marks.get(partition)
        if mark and self._visit_step_us and self.keys.cluster:
            last = self._visited_at.get(partition)
            if last is None or mark[0] - last >= self._visit_step_us:
                self._visited_at[partition] = mark[0]
                self._visit_idle(partition, shards)
        return {
            "at": plan.sweep_at_us,
            "below": below,
            "mark": mark[0] if mark else 0,
            "shards": shards,
        }

    def _visit_idle(self, partition: int, shards: dict[str, list[list[Any]]]) -> None:
        """Add to ``shards`` (an entry's, by shard) up to ``_IDLE_VISITS`` shards it lacks, in
        turn from where the partition's last visit stopped, as steps with no entity: they sweep
        the partition's idle entities of that shard with its watermark. Otherwise an idle
        entity would wait for its partition's next write to its shard, which may not come (the
        payments stop, only outcomes to a few merchants' shards follow)."""
        count = self.keys.shards
        start = self._next_visit.get(partition, 0)
        added, at = 0, start
        for step in range(count):
            if added == _IDLE_VISITS:
                break
            at = (start + step) % count
            if str(at) not in shards:
                shards[str(at)] = []
                added += 1
        self._next_visit[partition] = (at + 1) % count

    def _entity_steps(self, partition: int, seq: int, entry: Mapping[str, Any]) -> None:
        """One script per shard of the entry, sent through a pipeline: a cluster client sends
        each node its scripts in one round trip."""
        k = self.keys
        field = k.applied_field(partition)
        calls = []
        for shard_text, entities in entry["shards"].items():
            shard = int(shard_text)
            applied = k.applied(shard)
            keys = [applied, applied, *(e[0] for e in entities)]
            keys.append(k.shard_noindex(partition, shard))
            keys.append(k.idle(partition, shard))
            args: list[Any] = [
                _now_ms(),
                0,
                len(entities),
                _TTL_REFRESH_MS,
                entry["at"],
                entry["below"],
                1,
                _POP_LIMIT,
            ]
            for e in entities:
                args.extend(e[1:])
            args.extend([entry["mark"], f"{field}\0{seq}", "", field, seq])
            calls.append((keys, args))
        if not calls:
            return
        if not self._loaded:
            self._load()
        replies = self._send(calls)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            self._load()  # a node restarted: the guard makes sending all of them again safe
            replies = self._send(calls)
        for (keys, _args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            if isinstance(reply, list):
                rejection = parse_rejection(reply)
                msg = (
                    f"journal entry {seq} of partition {partition} could not be applied to the "
                    f"shard of {keys[2]}: {rejection.describe()}; it stays in the journal "
                    "(docs/redis-cluster.md, What a refusal means)"
                )
                raise ShardRejectedError(msg, rejection)

    def _send(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._entity.sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))

    def _load(self) -> None:
        """The entity script on every primary (EVALSHA alone finds nothing on a fresh node)."""
        self.client.script_load(_ENTITY)  # a cluster client sends it to every primary
        self._loaded = True
