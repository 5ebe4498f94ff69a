"""Redis: the atomic batch write of the pipeline, and the feature read API.

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
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.exceptions import BatchRejectedError
from feature_pipelines.fold import FOLD_MANY, MANY, FoldRead
from feature_pipelines.planner import WritePlan, entity_key, settle_spans, sweep_steps
from feature_pipelines.readout import FeatureValue, ReadPlan
from feature_pipelines.rejects import parse_rejection

__all__ = [
    "AsyncFeatureStore",
    "EntityFeatures",
    "FeatureStore",
    "PendingApply",
    "RedisBatchWriter",
]

# Signed 64-bit integers in Lua, whose numbers are doubles: a canonical integer's text taken as
# (high, low) = (its digits but the last nine, the last nine), both exact in a double, so bounds
# and sums are exact up to 2^63 and beyond. ``int64_check(old, inc)`` answers nil when HINCRBY
# can add the text ``inc`` to the field text ``old`` (false: absent), else why not: 'value'
# (``old`` is no int64 HINCRBY reads) or 'overflow' (the sum, or ``inc``, leaves int64).
_INT64 = """
local function int64_parts(s)
  if s == '0' then return 0, 0 end
  local sign, digits = string.match(s, '^(%-?)([1-9]%d*)$')
  if not digits or #digits > 19 then return nil end
  local hi, lo = tonumber(string.sub(digits, 1, -10)) or 0, tonumber(string.sub(digits, -9))
  if sign == '-' then return -hi, -lo end
  return hi, lo
end
local function int64_fits(hi, lo)  -- hi * 10^9 + lo in [-2^63, 2^63 - 1], |lo| < 2 * 10^9
  local carry = math.floor(lo / 1000000000)
  hi, lo = hi + carry, lo - carry * 1000000000
  if hi > 9223372036 or (hi == 9223372036 and lo > 854775807) then return false end
  return hi > -9223372037 or (hi == -9223372037 and lo >= 145224192)
end
local function int64_check(old, inc)
  local oh, ol = 0, 0
  if old then
    oh, ol = int64_parts(old)
    if not oh or not int64_fits(oh, ol) then return 'value' end
  end
  local ih, il = int64_parts(inc)
  if not ih or not int64_fits(ih, il) or not int64_fits(oh + ih, ol + il) then
    return 'overflow'
  end
  return nil
end
"""

_APPLY = """
-- Fields travel as NUL-separated strings (Postgres text cannot hold NUL): far fewer arguments
-- for the client to encode than one per field, and cheaper to take apart here than JSON (the
-- cjson bundled with Redis decodes a batch's megabyte several times slower).
-- KEYS: offsets, watermarks, rows..., entities..., row expiry indexes (one per partition)...,
-- entity expiry indexes (one per partition; the batch's entities go to the first's)...
-- ARGV: written_ms, n_rows, n_entities, refresh_ms, sweep_at, "feature\0lowest kept bucket
-- - 1\0...", n_indexes, pop_limit; per row: expected version, sets, deletes, index number,
-- exp; per entity: "field\0increment\0...", commit_ms, ttl_ms, sweep step, settle span; per
-- index: its
-- partition's watermark; then "topic:partition\0offset\0...", "partition\0newest\0first\0...".
-- Every write command a script runs costs a few microseconds (each is propagated to the AOF on
-- its own), so each row and each entity gets one HSET: entity fields are read with HMGET, added
-- here and written back (exact: integers below 2^53; anything larger goes through HINCRBY,
-- exact to 2^63 as before).
-- Redis does not undo the writes of a script that fails half-way, so nothing is written before
-- everything that could fail is checked (steps 1 and 2): a key of another type, a field that is
-- no integer, a sum leaving int64. Then the script writes nothing and answers what failed,
-- {kind, key, field, found, detail} (``rejects.Rejection``), and the shell dead-letters the
-- events behind it and writes the rest.
local LIMIT = 9007199254740992
local find, sub, match = string.find, string.sub, string.match
local function split(s)
  local out = {}
  if s == '' then return out end
  local start, n = 1, 0
  while true do
    local i = find(s, '\\0', start, true)
    n = n + 1
    if not i then
      out[n] = sub(s, start)
      return out
    end
    out[n] = sub(s, start, i - 1)
    start = i + 1
  end
end
local function each(cmd, key, list, step)
  local n = #list
  for s = 1, n, step do redis.call(cmd, key, unpack(list, s, math.min(s + step - 1, n))) end
end
local written, n_rows, n_ent = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local refresh, sweep_at = tonumber(ARGV[4]), tonumber(ARGV[5])
local below, width, window = {}, {}, {}
do
  local flat = split(ARGV[6])
  for j = 1, #flat, 4 do
    below[flat[j]] = tonumber(flat[j + 1])
    width[flat[j]] = tonumber(flat[j + 2])
    window[flat[j]] = tonumber(flat[j + 3])
  end
end
local n_idx, pop_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local first_idx = 2 + n_rows + n_ent
local function type_of(key) return redis.call('TYPE', key)['ok'] end
local function wrong(key, want)
  local found = type_of(key)
  if found ~= 'none' and found ~= want then return {'type', key, '', found, want} end
end
-- 1. every row state must still be as the planner read it (and be a hash)
for i = 1, n_rows do
  local key = KEYS[2 + i]
  local current = redis.pcall('HGET', key, 'ver')
  if type(current) == 'table' then return {'type', key, '', type_of(key), 'hash'} end
  if (current or '') ~= ARGV[4 + 5 * i] then return -i end
end
-- 2. read-only: what steps 3 to 6 write must be writable. Every entity's fields are read
-- here, and what each becomes decided: new value (nil: HINCRBY, past 2^53, exact to int64)
for k = 1, 2 do
  local bad = wrong(KEYS[k], 'hash')
  if bad then return bad end
end
for i = 1, 2 * n_idx do
  local bad = wrong(KEYS[first_idx + i], 'zset')
  if bad then return bad end
end
local ent_flat, ent_names, ent_current, ent_new = {}, {}, {}, {}
do
  local a = 9 + 5 * n_rows
  for i = 1, n_ent do
    local key = KEYS[2 + n_rows + i]
    local flat = split(ARGV[a])
    a = a + 5
    local names, n = {}, #flat / 2
    for j = 1, n do names[j] = flat[2 * j - 1] end
    names[n + 1] = '_commit_ms'
    names[n + 2] = '_swept'
    local current = {}
    for s = 1, n + 2, 1000 do
      local part = redis.pcall('HMGET', key, unpack(names, s, math.min(s + 999, n + 2)))
      if part.err then return {'type', key, '', type_of(key), 'hash'} end
      for j = 1, #part do current[s + j - 1] = part[j] end
    end
    local new = {}
    for j = 1, n do
      local inc, old = tonumber(flat[2 * j]), current[j]
      local o = 0
      if old then o = tonumber(old) end
      local sum = nil
      if inc and math.abs(inc) < LIMIT and o and o == math.floor(o) and math.abs(o) < LIMIT then
        sum = o + inc
        if math.abs(sum) >= LIMIT then sum = nil end
      end
      if sum == nil then
        local why = int64_check(old, flat[2 * j])
        if why then return {why, key, names[j], old or '', flat[2 * j]} end
      end
      new[j] = sum
    end
    ent_flat[i], ent_names[i], ent_current[i], ent_new[i] = flat, names, current, new
  end
end
-- 3. row states, each with its next version, indexed by when it may expire
local indexed = {}
for i = 1, n_rows do
  local key = KEYS[2 + i]
  local b = 4 + 5 * i
  local sets = split(ARGV[b + 1])
  sets[#sets + 1] = 'ver'
  sets[#sets + 1] = (tonumber(ARGV[b]) or 0) + 1
  each('HSET', key, sets, 1000)
  local dels = split(ARGV[b + 2])
  if #dels > 0 then each('HDEL', key, dels, 1000) end
  local slot = tonumber(ARGV[b + 3])
  local list = indexed[slot]
  if not list then list = {}; indexed[slot] = list end
  list[#list + 1] = ARGV[b + 4]
  list[#list + 1] = key
end
for slot, list in pairs(indexed) do each('ZADD', KEYS[first_idx + slot], list, 1000) end
-- 4. entity increments, freshness, expiry of buckets no read counts again
-- "name[:part]@bucket[#value]": a bucket at or below its feature's bound is never read again;
-- returns the stale fields, how many feature fields stay, and when the first windowed field
-- that stays leaves its window (bucket * width + window; nil: none windowed)
local function stale(key)
  local out, kept, next_at = {}, 0, nil
  local fields = redis.pcall('HKEYS', key)
  if fields.err then return out, 1, nil end  -- not the pipeline's: left alone
  for _, field in ipairs(fields) do
    local name, bucket = match(field, '^([%w_]+)[^@#]*@(%-?%d+)')
    local bound = name and below[name]
    if bound and tonumber(bucket) <= bound then
      out[#out + 1] = field
    elseif sub(field, 1, 1) ~= '_' then
      kept = kept + 1
      if bound then
        local at = tonumber(bucket) * width[name] + window[name]
        if not next_at or at < next_at then next_at = at end
      end
    end
  end
  return out, kept, next_at
end
local settle = {}  -- entities written, by when their newest fields of the shortest window expire
local a = 9 + 5 * n_rows
for i = 1, n_ent do
  local key = KEYS[2 + n_rows + i]
  local flat, names, current = ent_flat[i], ent_names[i], ent_current[i]
  local commit, ttl, step = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local span = tonumber(ARGV[a + 4])
  a = a + 5
  local n = #flat / 2
  local sets, dels = {}, {}
  for j = 1, n do
    local old, new = current[j], ent_new[i][j]
    if new == nil then  -- checked in step 2: HINCRBY cannot fail
      if redis.call('HINCRBY', key, names[j], flat[2 * j]) == 0 then dels[#dels + 1] = names[j] end
    elseif new == 0 then
      if old then dels[#dels + 1] = names[j] end
    else
      sets[#sets + 1] = names[j]
      sets[#sets + 1] = new
    end
  end
  if commit > (tonumber(current[n + 1] or '0') or 0) then
    sets[#sets + 1] = '_commit_ms'
    sets[#sets + 1] = commit
  end
  sets[#sets + 1] = '_written_ms'
  sets[#sets + 1] = written
  local due = step > 0 and sweep_at - (tonumber(current[n + 2] or '0') or 0) >= step
  if due then
    sets[#sets + 1] = '_swept'
    sets[#sets + 1] = sweep_at
  end
  each('HSET', key, sets, 1000)
  if due then
    for _, field in ipairs((stale(key))) do dels[#dels + 1] = field end
  end
  if #dels > 0 then each('HDEL', key, dels, 1000) end
  if ttl > 0 and redis.call('PTTL', key) < ttl - refresh then redis.call('PEXPIRE', key, ttl) end
  if step > 0 and n_idx > 0 then
    settle[#settle + 1] = sweep_at + span
    settle[#settle + 1] = key
  end
end
if #settle > 0 then each('ZADD', KEYS[first_idx + n_idx + 1], settle, 1000) end
-- 5. what the partitions' watermarks have passed, a bounded number per batch and partition:
-- row states past their exp; entities idle since all their windowed fields left every window
-- (swept; deleted when no feature field is left)
for i = 1, n_idx do
  local index, mark = KEYS[first_idx + i], ARGV[a]
  a = a + 1
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', mark, 'LIMIT', 0, pop_limit)
  if #due > 0 then
    local gone = {}
    for _, key in ipairs(due) do
      local exp = redis.pcall('HGET', key, 'exp')  -- an error: not the pipeline's, left alone
      if type(exp) ~= 'table' and (tonumber(exp or '0') or 0) <= tonumber(mark) then
        gone[#gone + 1] = key
      end
    end
    for s = 1, #gone, 1000 do redis.call('DEL', unpack(gone, s, math.min(s + 999, #gone))) end
    each('ZREM', index, due, 1000)
  end
  local entities = KEYS[first_idx + n_idx + i]
  local idle = redis.call('ZRANGEBYSCORE', entities, '-inf', mark, 'LIMIT', 0, pop_limit)
  if #idle > 0 then
    each('ZREM', entities, idle, 1000)
    local again = {}
    for _, key in ipairs(idle) do
      local fields, kept, next_at = stale(key)
      if kept == 0 then
        redis.call('DEL', key)
      elseif #fields > 0 then
        each('HDEL', key, fields, 1000)
      end
      if kept > 0 and next_at then  -- swept again when its next windowed field expires
        again[#again + 1] = math.max(next_at, tonumber(mark) + 1)
        again[#again + 1] = key
      end
    end
    if #again > 0 then each('ZADD', entities, again, 1000) end
  end
end
-- 6. the consumer's next offsets and the watermarks, in the same step
local offsets = split(ARGV[a])
if #offsets > 0 then each('HSET', KEYS[1], offsets, 1000) end
local marks = split(ARGV[a + 1])
if #marks > 0 then each('HSET', KEYS[2], marks, 1000) end
return 0
"""
_APPLY = _INT64 + _APPLY  # the int64 checks of step 2 first

# An entity's expiry is pushed out again only once it has run down by this much: one PEXPIRE
# per entity per minute instead of one per batch; the key still lives at least the full window
# after its last write.
_TTL_REFRESH_MS = 60_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# A key of another type reads as no state (not as an error that would stop the pipeline): the
# batch script then refuses to write it, and the events writing it are dead-lettered.
_READ = """
local out = {}
for i, key in ipairs(KEYS) do
  local found = redis.pcall('HGETALL', key)
  if found.err then found = {} end
  out[i] = found
end
return out
"""


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
        self._scripts_loaded = False  # by read_then_apply, which sends EVALSHA itself
        # Entities whose features are all windowed expire as a whole once everything is old.
        lifetime = features.lifetime_entities()
        self._ttl_ms = {
            name: 0 if name in lifetime else features.max_window_seconds(name) * 1000
            for name in features.entities()
        }

    def read_rows(self, keys: Sequence[str]) -> dict[str, Mapping[str, str]]:
        if not keys:
            return {}
        out: dict[str, Mapping[str, str]] = {}
        for chunk in _chunks(keys):
            _take_rows(out, chunk, self._read(keys=chunk))
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
        return _answer(self._script(keys=keys, args=args))

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
            conn.send_packed_command(conn.pack_commands(commands))
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
        ttl_of, commit_of, entity_of = self._ttl_ms, plan.commit_ms, plan.entity_of
        step_of = self._sweep_step_us
        increments = plan.increments
        n_entities = 0
        for key in {**increments, **commit_of}:
            incr = increments.get(key)
            entity = entity_of.get(key, "")
            ttl = ttl_of.get(entity, 0)
            keys.append(key)
            args.append(
                "\0".join([f"{name}\0{amount}" for name, amount in incr.items()]) if incr else ""
            )
            args.append(commit_of.get(key, 0))
            args.append(ttl + _TTL_REFRESH_MS if ttl else 0)
            args.append(step_of.get(entity, 0) if plan.sweep_at_us else 0)
            args.append(self._settle_us.get(entity, 0))
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


def _hashes(client: redis.Redis, names: Sequence[str]) -> list[Any]:
    """HGETALL of each name, in one round trip on one pooled connection: what a pipeline sends,
    without its bookkeeping per command (100 sample hashes: 4.5 against 7.2 ms), and with
    the client's retry on a broken connection, as a pipeline has (a read is safe to send again).
    Each hash comes as Redis sends it: a flat list on RESP2, a mapping on RESP3."""
    pool = client.connection_pool
    conn = pool.get_connection()
    packed = conn.pack_commands([("HGETALL", name) for name in names])

    def once() -> list[Any]:
        conn.send_packed_command(packed)
        return [conn.read_response() for _ in names]

    try:
        return conn.retry.call_with_retry(once, lambda _error: conn.disconnect())
    except BaseException:
        conn.disconnect()  # replies may be left unread: the connection is out of step
        raise
    finally:
        pool.release(conn)


async def _hashes_async(client: redis.asyncio.Redis, names: Sequence[str]) -> list[Any]:
    """``_hashes`` on an asyncio client."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    packed = conn.pack_commands([("HGETALL", name) for name in names])

    async def once() -> list[Any]:
        await conn.send_packed_command(packed)
        return [await conn.read_response() for _ in names]

    async def reset(_error: Exception) -> None:
        await conn.disconnect()

    try:
        return await conn.retry.call_with_retry(once, reset)
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


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


@dataclass(frozen=True)
class EntityFeatures:
    """Feature values of one entity as read, with how fresh they are."""

    entity: str
    key: str
    values: dict[str, FeatureValue]
    commit_ms: int | None  # commit time of the newest change applied
    written_ms: int | None  # when the pipeline last wrote this entity
    read_ms: int

    @property
    def found(self) -> bool:
        return self.written_ms is not None

    @property
    def age_ms(self) -> int | None:
        """Time since the newest change reflected here was committed."""
        return None if self.commit_ms is None else self.read_ms - self.commit_ms


class _Plans:
    """Read plans by entity and read time, each made ready for folding once.

    A windowed feature's bucket range at ``t`` depends only on ``t // width``, so every read in
    one granule (the greatest common divisor of the entity's bucket widths, 10 s for the sample
    features) shares a plan: a read builds nothing but its key names. An entity with lifetime
    features only has one plan (granule 0)."""

    _KEEP = 8  # plans kept (reads at explicit past times add theirs); each ~0.2 ms to make

    def __init__(self, features: FeatureSet) -> None:
        self.features = {e: features.for_entity(e) for e in features.entities()}
        self.granule: dict[str, int] = {
            e: math.gcd(*(f.bucket_seconds * 1_000_000 for f in fs if f.window is not None))
            for e, fs in self.features.items()
        }
        self._ready: dict[tuple[str, int], FoldRead] = {}

    def at(self, entity: str, t_us: int) -> FoldRead:
        granule = self.granule.get(entity)
        if granule is None:
            msg = f"unknown entity {entity!r}: choose from {', '.join(sorted(self.features))}"
            raise KeyError(msg)
        slot = (entity, t_us // granule if granule else 0)
        ready = self._ready.get(slot)
        if ready is None:
            if len(self._ready) >= self._KEEP:
                self._ready.clear()
            ready = self._ready[slot] = FoldRead(ReadPlan(self.features[entity], t_us))
        return ready


class _Read:
    """One read worked out before any I/O: the plan, the Redis keys and how to fold them.

    ``send`` issues the read on a sync or an asyncio client alike (for the latter it returns
    the awaitable), ``receive`` turns the answer into values: both stores share everything
    but the ``await``."""

    __slots__ = ("entity", "fold", "keys", "names", "read_ms", "server_fold", "unique")

    def __init__(
        self,
        plans: _Plans,
        ns: str,
        entity: str,
        keys: Sequence[Any],
        at: datetime | None,
        server_fold: bool,
    ) -> None:
        self.read_ms = _now_ms()
        t_us = self.read_ms * 1000 if at is None else (at - _EPOCH) // timedelta(microseconds=1)
        self.fold = plans.at(entity, t_us)
        self.entity = entity
        self.keys = keys
        self.names = [entity_key(ns, entity, key) for key in keys]
        # each entity is read once, however often it is asked for (a batch of payments names
        # a busy merchant many times)
        self.unique = list(dict.fromkeys(self.names))
        self.server_fold = server_fold and self.fold.way(len(self.unique)) == MANY

    def send(self, client: Any, script: Any) -> Any:
        """One HGETALL per key, all in one round trip (or FOLD_MANY, as registered on
        ``client``, when the read folds in Redis). On an asyncio client it returns the
        awaitable."""
        if self.server_fold:
            return script(keys=self.unique, args=self.fold.args)
        if isinstance(client, redis.Redis):  # also for one key: no reply callback (a dict)
            return _hashes(client, self.unique)
        if isinstance(client, redis.asyncio.Redis):
            return _hashes_async(client, self.unique)
        pipe = client.pipeline(transaction=False)  # Redis Cluster: the keys' own nodes
        for name in self.unique:
            pipe.hgetall(name)
        return pipe.execute()

    def receive(self, reply: Any) -> list[EntityFeatures]:
        if not self.server_fold:
            reply = self.fold.fold_hashes(reply)
        if len(self.unique) != len(self.names):  # one answer per key asked for, in order
            by_name = dict(zip(self.unique, reply, strict=True))
            reply = [by_name[name] for name in self.names]
        return self.from_fold(reply)

    def from_fold(self, rows: Sequence[Sequence[int]]) -> list[EntityFeatures]:
        """Fold rows (``[commit, written, a1, b1, ...]`` per key) as values."""
        entity, read_ms = self.entity, self.read_ms
        return [
            EntityFeatures(entity, str(key), values, commit, written, read_ms)
            for key, (values, commit, written) in zip(
                self.keys, self.fold.unfold(rows), strict=True
            )
        ]


class _Reads:
    """What both stores keep: the client, the fold script registered on it, the read plans."""

    def __init__(self, client: Any, features: FeatureSet, ns: str, server_fold: bool) -> None:
        self.client = client
        self.features = features
        self.ns = ns
        self.server_fold = server_fold
        self._script = client.register_script(FOLD_MANY)
        self._plans = _Plans(features)

    def _read(self, entity: str, keys: Sequence[Any], at: datetime | None) -> _Read:
        return _Read(self._plans, self.ns, entity, keys, at, self.server_fold)


class FeatureStore(_Reads):
    """Reads features: ``get(entity, key)`` and ``get_many(entity, keys)``, one round trip."""

    client: redis.Redis

    def __init__(
        self, client: redis.Redis, features: FeatureSet, ns: str, *, server_fold: bool = False
    ) -> None:
        """Every read takes each entity's hash (HGETALL, one round trip for all) and folds
        it in Python: Redis, one thread shared with the pipeline's writes, does the least it
        can. ``server_fold``: reads of 64 keys or more fold inside Redis instead (one script
        call, two numbers per feature back; needs every key on one primary), for clients far
        from Redis. Hashes parse fastest from a RESP2 connection (``connect`` opens one)."""
        super().__init__(client, features, ns, server_fold)

    @classmethod
    def connect(cls, redis_url: str, features: FeatureSet, ns: str) -> FeatureStore:
        return cls(redis.Redis.from_url(redis_url, protocol=2), features, ns)

    def entities(self) -> list[str]:
        return sorted(self.features.entities())

    def scan_keys(self, entity: str) -> list[str]:
        """Keys of every entity of this kind that has state in Redis (SCAN: no blocking)."""
        prefix = f"{self.ns}:e:{{{entity}:"
        return [
            _s(k)[len(prefix) : -1] for k in self.client.scan_iter(match=f"{prefix}*", count=1000)
        ]

    def get(self, entity: str, key: Any, at: datetime | None = None) -> EntityFeatures:
        return self.get_many(entity, [key], at)[0]

    def get_many(
        self, entity: str, keys: Sequence[Any], at: datetime | None = None
    ) -> list[EntityFeatures]:
        read = self._read(entity, keys, at)
        return read.receive(read.send(self.client, self._script)) if read.names else []


class AsyncFeatureStore(_Reads):
    """``FeatureStore``'s reads for asyncio code (the API): same scripts, same answers, with a
    ``redis.asyncio`` client, so a read waits on Redis without a thread of its own."""

    client: redis.asyncio.Redis

    def __init__(
        self,
        client: redis.asyncio.Redis,
        features: FeatureSet,
        ns: str,
        *,
        server_fold: bool = False,
    ) -> None:
        super().__init__(client, features, ns, server_fold)

    async def get(self, entity: str, key: Any, at: datetime | None = None) -> EntityFeatures:
        return (await self.get_many(entity, [key], at))[0]

    async def get_many(
        self, entity: str, keys: Sequence[Any], at: datetime | None = None
    ) -> list[EntityFeatures]:
        read = self._read(entity, keys, at)
        return read.receive(await read.send(self.client, self._script)) if read.names else []
