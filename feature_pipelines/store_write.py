"""Redis, the write side: the atomic batch write of the pipeline (``RedisBatchWriter``).

One Lua call per batch writes everything a batch produced: row states (positions, lookup values,
parked lookup rows), entity increments, freshness fields, expiry of entities whose features are
all windowed, and the consumer's next offsets; and, in event time, what no read needs any more:
an entity it writes drops its expired bucket fields (at most every quarter of its shortest
window of watermark), and row states whose partition's watermark passed their ``exp`` are
deleted through a sorted-set index per partition (``<ns>:expiry:{<group>}:<partition>``), with
the partitions' watermarks (``<ns>:watermarks:{<group>}``). Nothing scans the keyspace: expiry
work follows the writes. Before writing, the script checks that every row
state still has the version the planner read; if one changed (another consumer touched the same
row during a rebalance) nothing is written and the shell re-reads and re-plans. Scripts run
atomically, so a crash (even kill -9) leaves either the whole batch or none of it; and since
Redis does not undo what a script wrote before one of its commands failed, the script checks
everything that could fail (keys of another type, fields that are no integer, sums leaving
int64) before its first write, and answers what it refused without writing anything
(``BatchRejectedError``: the shell dead-letters the events behind it, ``rejects``).

Keys are hash-tagged per entity and per source row (``{customer:42}``, ``{payments:1001}``) so
that each lives in one Redis Cluster slot; the batch script itself needs every key on one node
(a single Redis, or a cluster with one primary) — splitting a batch by slot is future work.
The scripts are ``lua/int64.lua`` + ``lua/apply.lua`` (the write) and ``lua/read_rows.lua`` (the
planner's read of row states). The feature reads are ``store_read``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from hiredis import pack_command

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import BatchRejectedError
from feature_pipelines.lua import script
from feature_pipelines.planner import WritePlan, settle_spans, sweep_steps
from feature_pipelines.rejects import parse_rejection

__all__ = ["PendingApply", "RedisBatchWriter"]

_INT64 = script("int64")  # int64_check, for the write's step 2 (and its tests)
_APPLY = _INT64 + script("apply")  # the int64 checks of step 2 first
_READ = script("read_rows")

# An entity's expiry is pushed out again only once it has run down by this much: one PEXPIRE
# per entity per minute instead of one per batch; the key still lives at least the full window
# after its last write.
_TTL_REFRESH_MS = 60_000


def _now_ms() -> int:
    return int(time.time() * 1000)


class RedisBatchWriter:
    """Reads row states for the planner and writes plans with the consumer's offsets."""

    # Row states whose partition's watermark passed their ``exp`` deleted per batch and
    # partition at most: a backlog goes over the next batches instead of in one long script.
    POP_LIMIT = 2000

    def __init__(self, client: redis.Redis, features: FeatureSet, ns: str, group: str) -> None:
        self.client = client
        self.ns = ns
        self.group = group
        self.offsets_key = f"{ns}:offsets:{{{group}}}"
        self.marks_key = f"{ns}:watermarks:{{{group}}}"
        # An entity drops its expired bucket fields when a write finds the watermark this far
        # past its last such sweep: a quarter of its shortest window, so a hash holds at most
        # ~1/4 more buckets of that feature than a read counts (fewer of longer windows).
        self._sweep_step_us = sweep_steps(features)
        self._settle_us = settle_spans(features)
        self._windows = {  # windowed feature -> (window, bucket width), micros
            f.name: (f.window_seconds * 1_000_000, f.bucket_seconds * 1_000_000)
            for f in features
            if f.window is not None
        }
        self._script = client.register_script(_APPLY)
        self._read = client.register_script(_READ)
        self._scripts_loaded = False  # EVALSHA is sent packed here, not through redis-py's Script
        # Entities whose features are all windowed expire as a whole once everything is old.
        lifetime = features.lifetime_entities()
        self._ttl_ms = {
            name: 0 if name in lifetime else features.max_window_seconds(name) * 1000
            for name in features.entities()
        }
        # per entity kind, the script's ttl, sweep step and settle span arguments (the sweep
        # step is 0 for a batch that moved no watermark)
        self._kinds = {
            name: (
                ttl + _TTL_REFRESH_MS if ttl else 0,
                self._sweep_step_us.get(name, 0),
                self._settle_us.get(name, 0),
            )
            for name, ttl in self._ttl_ms.items()
        }
        self._kinds_unswept = {name: (t, 0, s) for name, (t, _p, s) in self._kinds.items()}

    def read_rows(self, keys: Sequence[str]) -> dict[str, Mapping[str, str]]:
        if not keys:
            return {}
        out: dict[str, Mapping[str, str]] = {}
        for chunk in _chunks(keys):
            _take_rows(out, chunk, self._evalsha(self._read.sha, chunk, ()))
        return out

    def index_key(self, partition: int) -> str:
        """The expiry index of one partition's row states (a sorted set by ``exp``)."""
        return f"{self.ns}:expiry:{{{self.group}}}:{partition}"

    def entity_index_key(self, partition: int) -> str:
        """The entities a batch of this partition wrote last, by when they are all past every
        window (a sorted set): the partition's owner sweeps them once they are idle that long."""
        return f"{self.ns}:idle:{{{self.group}}}:{partition}"

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """Partition -> (newest, first) event time, as last written with a batch."""
        raw = self.client.hgetall(self.marks_key)
        out: dict[int, tuple[int, int]] = {}
        for field, value in raw.items():
            newest, _sep, first = _s(value).partition(":")
            out[int(_s(field))] = (int(newest), int(first))
        return out

    def offsets(self) -> dict[str, int]:
        """``topic:partition`` -> next offset, as last written with a batch."""
        raw = self.client.hgetall(self.offsets_key)
        return {_s(k): int(v) for k, v in raw.items()}

    def set_offsets(self, offsets: Mapping[str, int]) -> None:
        """Set where the group starts (``topic:partition`` -> offset), e.g. at the topics' end."""
        if offsets:
            self.client.hset(self.offsets_key, mapping={k: str(v) for k, v in offsets.items()})

    def apply(self, plan: WritePlan, offsets: Mapping[str, int]) -> bool:
        """Write the plan and offsets atomically; False if a row state changed meanwhile.
        Raises ``BatchRejectedError`` (nothing written) if some of it cannot be applied."""
        keys, args = self._script_call(plan, offsets)
        return _answer(self._evalsha(self._script.sha, keys, args))

    def _evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a loaded script (loaded again if the server lost it); its reply."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        if not self._scripts_loaded:
            self._load_scripts()
        reply = self._call(command)
        if isinstance(reply, redis.exceptions.NoScriptError):  # a restarted server
            self._load_scripts()
            reply = self._call(command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _call(self, command: tuple[Any, ...]) -> Any:
        """One command's reply (an error reply returned, not raised), packed by hiredis in one
        C call: redis-py's own packing encodes each of a batch's ~10 arguments per change event
        in Python, a tenth of the pipeline's CPU."""
        packed = pack_command(command)
        pool = self.client.connection_pool
        conn = pool.get_connection()

        def send() -> Any:
            conn.send_packed_command([packed])
            return _reply(conn)

        try:  # retried on a broken connection as redis-py's own commands are
            return conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def read_then_apply(
        self, keys: Sequence[str], plan: WritePlan, offsets: Mapping[str, int]
    ) -> tuple[dict[str, Mapping[str, str]], PendingApply]:
        """Send a read of ``keys`` and then ``plan``'s write in one round trip; return the rows
        read as soon as they arrive, and a handle to wait for the write.

        Redis runs the read first, so the rows are as they were before the write, and it runs
        the write while the caller works on what it read (the planning of the next batch
        overlaps the write of this one). Only rows the write does not touch are meaningful to
        read this way; the caller takes the others from the plan (``row_after``).
        """
        if not self._scripts_loaded:  # EVALSHA alone would find nothing on a fresh server
            self._load_scripts()
        chunks = _chunks(keys)
        write_keys, write_args = self._script_call(plan, offsets)
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", self._read.sha, len(chunk), *chunk) for chunk in chunks
        ]
        commands.append(("EVALSHA", self._script.sha, len(write_keys), *write_keys, *write_args))
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([pack_command(c) for c in commands])
            replies = [_reply(conn) for _ in chunks]
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        pending = PendingApply(pool, conn)
        out: dict[str, Mapping[str, str]] = {}
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            pending.wait()  # keep the connection in step (the write may or may not have run)
            self._load_scripts()
            return self.read_rows(keys), pending
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, Exception):
                pending.wait()
                raise reply
            _take_rows(out, chunk, reply)
        return out, pending

    def _load_scripts(self) -> None:
        self.client.script_load(_APPLY)
        self.client.script_load(_READ)
        self._scripts_loaded = True

    def _script_call(
        self, plan: WritePlan, offsets: Mapping[str, int]
    ) -> tuple[list[str], list[Any]]:
        keys = [self.offsets_key, self.marks_key]
        partitions = sorted({write.partition for write in plan.rows.values()} | set(plan.marks))
        slot_of = {p: n for n, p in enumerate(partitions, 1)}
        windows = self._windows
        below = "\0".join(
            f"{name}\0{lo}\0{windows[name][1]}\0{windows[name][0]}"
            for name, lo in plan.expired_below.items()
        )
        args: list[Any] = [
            _now_ms(),
            len(plan.rows),
            0,
            _TTL_REFRESH_MS,
            plan.sweep_at_us,
            below,
            len(partitions),
            self.POP_LIMIT,
        ]
        for key, write in plan.rows.items():
            keys.append(key)
            args.append(write.expected_ver or "")
            args.append("\0".join([x for pair in write.updates.items() for x in pair]))
            args.append("\0".join(write.deletes))
            args.append(slot_of[write.partition])
            args.append(write.expires_us)
        commit_of, entity_of = plan.commit_ms, plan.entity_of
        # per entity kind: its ttl, sweep step and settle span arguments (made once)
        kinds = self._kinds if plan.sweep_at_us else self._kinds_unswept
        increments = plan.increments
        n_entities = 0
        for key in {**increments, **commit_of}:
            incr = increments.get(key)
            keys.append(key)
            args.append(
                "\0".join([f"{name}\0{amount}" for name, amount in incr.items()]) if incr else ""
            )
            args.append(commit_of.get(key, 0))
            args.extend(kinds.get(entity_of.get(key, ""), (0, 0, 0)))
            n_entities += 1
        args[2] = n_entities
        marks = plan.marks
        for partition in partitions:
            keys.append(self.index_key(partition))
            args.append(marks[partition][0] if partition in marks else 0)
        keys.extend(self.entity_index_key(partition) for partition in partitions)
        args.append("\0".join(f"{name}\0{offset}" for name, offset in offsets.items()))
        args.append("\0".join(f"{p}\0{newest}:{first}" for p, (newest, first) in marks.items()))
        return keys, args


def _s(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _chunks(keys: Sequence[str], size: int = 4000) -> list[list[str]]:
    """Keys in groups of ``size``: one bounded read-script call each."""
    return [list(keys[start : start + size]) for start in range(0, len(keys), size)]


def _take_rows(out: dict[str, Mapping[str, str]], keys: list[str], reply: Any) -> None:
    """The read script's answer (a flat field/value list per key) into ``out``, as text."""
    for key, flat in zip(keys, reply, strict=True):
        it = iter(flat)
        out[key] = {_s(k): _s(v) for k, v in zip(it, it, strict=True)}


def _reply(conn: Any) -> Any:
    """The next reply on ``conn``; an error reply is returned, not raised, so the replies after
    it are still read (the connection stays in step)."""
    try:
        return conn.read_response()
    except redis.exceptions.ResponseError as exc:
        return exc


class PendingApply:
    """A batch write sent by ``read_then_apply`` whose answer has not been read yet."""

    def __init__(self, pool: Any, conn: Any) -> None:
        self._pool = pool
        self._conn: Any = conn
        self.failed = False  # the write was refused or did not run (then the batch is re-planned)
        self.unloaded = False  # it did not run: the server had lost the scripts (a restart)

    def abandon(self) -> None:
        """Give the connection up without reading the answer (it may or may not be applied):
        closed, since a reply left unread would put it out of step."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)

    def wait(self) -> bool:
        """True once the write is applied; False if it was refused (a row state changed) or did
        not run. Raises ``redis.ConnectionError`` if the connection broke: nothing is known of
        the write then, as with any lost reply, and the caller re-reads positions from Redis."""
        conn, self._conn = self._conn, None
        if conn is None:
            return not self.failed
        try:
            reply = _reply(conn)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)
        if isinstance(reply, redis.exceptions.NoScriptError):
            self.failed = self.unloaded = True
        elif isinstance(reply, Exception):
            raise reply
        else:
            self.failed = True  # until the answer says written (a refusal raises)
            self.failed = not _answer(reply)
        return not self.failed


def _answer(reply: Any) -> bool:
    """The batch script's answer: True once written, False if a row state changed; a refusal
    of what cannot be applied (nothing written) raises ``BatchRejectedError``."""
    if isinstance(reply, list):
        rejection = parse_rejection(reply)
        msg = f"the batch was not written: {rejection.describe()}"
        raise BatchRejectedError(msg, rejection)
    return int(reply) == 0
