"""The read fold: an entity's stored fields into feature states, in Redis or in the client.

A windowed feature keeps one field per bucket (and per distinct value), so an entity hash holds
tens of fields. For a read of many entities ``FOLD`` / ``FOLD_MANY`` do the fold of
``readout.ReadPlan.states`` in one Lua call and return two numbers per feature, so a batch read
moves little data and little Python work. For a read of a few entities, and on Redis Cluster
(where one script cannot touch keys of many slots), ``FoldRead.fold_fields`` does the same fold
in Python on each entity's HGETALL, looking every field up by name. ``ReadPlan`` stays the
reference; tests check all three agree with it on random hashes.

Numbers travel as decimal strings; Lua keeps them as doubles, exact below 2**53 (a sum of
amounts in cents up to about 90 trillion).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from feature_pipelines.readout import FeatureValue, Fields, ReadPlan, mean_value
from feature_pipelines.spec import Feature
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD

__all__ = ["FEW", "FOLD", "FOLD_MANY", "LOCAL", "MANY", "FoldRead"]

LOCAL, FEW, MANY = 0, 1, 2  # how a read folds: see ``FoldRead.way``

_AGG = {"count": "c", "sum": "s", "mean": "m", "distinct": "d"}

# Both fold scripts share the walk over each key's fields (the script in between decides what
# a field ``f`` adds to counts/totals/distinct of its feature slot, and picks up commit/written)
# and the reply: per key {commit, written, a1, b1, ...}.
_EACH_KEY = """
local out = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local counts, totals, distinct = {}, {}, {}
  for i = 1, nf do counts[i] = 0; totals[i] = 0 end
  local commit, written = '', ''
  for j = 1, #flat, 2 do
    local f = flat[j]
"""
_REPLY = """  end
  local row = {tonumber(commit) or -1, tonumber(written) or -1}
  for i = 1, nf do
    local c = counts[i]
    if distinct[i] then
      c = 0
      for _, n in pairs(distinct[i]) do if n > 0 then c = c + 1 end end
    end
    row[#row + 1] = c
    row[#row + 1] = totals[i]
  end
  out[k] = row
end
return out
"""


def _script(setup: str, per_field: str) -> str:
    """A fold script: ``setup`` (reads ARGV), the shared walk with ``per_field`` inside, the
    shared reply; bookkeeping field names filled in."""
    return (
        (setup + _EACH_KEY + per_field + _REPLY)
        .replace("@COMMIT@", COMMIT_FIELD)
        .replace("@WRITTEN@", WRITTEN_FIELD)
    )


# ARGV: n_features, then per feature: name, agg code, windowed (1|0), lo, hi.
# Returns per key: {commit, written, a1, b1, a2, b2, ...} as integers (Redis turns a Lua number
# into an integer reply): a = count (or distinct values with a positive count), b = scaled
# total; commit/written are -1 when absent. Integers spare the client a parse per number.
# A field is looked up by its head (the name before '@', or a lifetime field's whole name), so
# the usual field costs one find, two subs and a table lookup; only a distinct value is taken
# apart further (its value may hold '@' or '#').
FOLD = _script(
    """
local nf = tonumber(ARGV[1])
-- head -> {slot, kind, windowed, lo, hi, distinct}; kind 1 = count, 2 = total
local heads = {}
for i = 0, nf - 1 do
  local base = 2 + i * 5
  local name, agg, windowed = ARGV[base], ARGV[base + 1], ARGV[base + 2] == '1'
  local lo, hi = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  if agg == 'm' then
    heads[name .. ':n'] = {i + 1, 1, windowed, lo, hi, false}
    heads[name .. ':s'] = {i + 1, 2, windowed, lo, hi, false}
  else
    heads[name] = {i + 1, agg == 'c' and 1 or 2, windowed, lo, hi, agg == 'd'}
  end
end
local find, sub, byte = string.find, string.sub, string.byte
""",
    """    if byte(f, 1) == 95 then
      if f == '@COMMIT@' then commit = flat[j + 1]
      elseif f == '@WRITTEN@' then written = flat[j + 1] end
    else
      local p = find(f, '@', 1, true)
      local s, dval
      if p then
        s = heads[sub(f, 1, p - 1)]
        if s then
          local q
          if s[6] then
            q = find(f, '#', p + 1, true)
            if q then dval = sub(f, q + 1) else s = nil end
          end
          if s and s[3] then
            local bucket = tonumber(sub(f, p + 1, (q or 0) - 1))
            if not (bucket and bucket > s[4] and bucket <= s[5]) then s = nil end
          end
        end
      else
        s = heads[f]
        if s and s[6] then s = nil end  -- a distinct field always holds '#'
      end
      if not s then  -- 'name#value' of a lifetime distinct feature (the value may hold '@')
        local q = find(f, '#', 1, true)
        if q and (not p or q < p) then
          s = heads[sub(f, 1, q - 1)]
          if s and s[6] and not s[3] then dval = sub(f, q + 1) else s = nil end
        end
      end
      if s then
        local v = tonumber(flat[j + 1])
        if dval then
          local d = distinct[s[1]]
          if not d then d = {}; distinct[s[1]] = d end
          d[dval] = (d[dval] or 0) + v
        elseif s[2] == 1 then
          counts[s[1]] = counts[s[1]] + v
        else
          totals[s[1]] = totals[s[1]] + v
        end
      end
    end
""",
)


# The same fold, faster for reads of many keys: instead of taking each field name apart, it
# first writes down the name of every field the read counts (each windowed feature's buckets in
# the window, each lifetime feature's name) and looks fields up by name; only a field not found
# there (a distinct value, a bucket outside the window, bookkeeping) is looked at further. Writing
# the names costs about as much as taking apart a few entities' fields, so ``FoldRead.way``
# picks this script for reads of many keys and ``FOLD`` for a few. Same ARGV, same reply.
FOLD_MANY = _script(
    """
local nf = tonumber(ARGV[1])
local names = {}  -- field name -> {slot, kind}; kind 1 = count, 2 = total
local distinct_slot = {}  -- name (or name@bucket) before '#' -> slot of a distinct feature
for i = 0, nf - 1 do
  local base = 2 + i * 5
  local name, agg, windowed = ARGV[base], ARGV[base + 1], ARGV[base + 2] == '1'
  local lo, hi = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  local heads
  if agg == 'm' then heads = {{name .. ':n', 1}, {name .. ':s', 2}}
  elseif agg == 'c' then heads = {{name, 1}}
  else heads = {{name, 2}} end
  for _, head in ipairs(heads) do
    local entry = {i + 1, head[2]}
    local into = names
    if agg == 'd' then into = distinct_slot; entry = i + 1 end
    if windowed then
      for b = lo + 1, hi do into[head[1] .. '@' .. b] = entry end
    else
      into[head[1]] = entry
    end
  end
end
local find, sub, byte = string.find, string.sub, string.byte
""",
    """    local e = names[f]
    if e then
      if e[2] == 1 then counts[e[1]] = counts[e[1]] + tonumber(flat[j + 1])
      else totals[e[1]] = totals[e[1]] + tonumber(flat[j + 1]) end
    elseif byte(f, 1) == 95 then
      if f == '@COMMIT@' then commit = flat[j + 1]
      elseif f == '@WRITTEN@' then written = flat[j + 1] end
    else
      local q = find(f, '#', 1, true)
      if q then
        local slot = distinct_slot[sub(f, 1, q - 1)]
        if slot then
          local d = distinct[slot]
          if not d then d = {}; distinct[slot] = d end
          local dval = sub(f, q + 1)
          d[dval] = (d[dval] or 0) + tonumber(flat[j + 1])
        end
      end
    end
""",
)

# FOLD_MANY writes down this many names per key read at most (a name costs about what taking
# one field apart does; an entity has tens of fields, most shared with other entities). Below
# _MANY_FROM keys FOLD is cheaper. Server time per call on 2 cores, sample customers (~55 fields):
# FOLD takes 0.3x FOLD_MANY's for one key and 0.8x for 8; about even at 16; 1.3x at 64.
_NAMES_PER_KEY = 150
_MANY_FROM = 12


# Reads of fewer keys than this fold in the client: a plain HGETALL per key (pipelined) and a
# name lookup per field in Python cost less, client and server together, than a script call,
# whose Lua walk costs about 3 us per field. Sample customers (~55 fields), 2 cores, p50: one
# key 0.22-0.32 ms in Python against 0.43 ms by FOLD, 6 keys 0.79 against 1.08-1.17 ms, even at
# 8; from there one script reply beats many hash replies.
_LOCAL_BELOW = 8


class FoldRead:
    """A read plan made ready for the fold scripts, once: the scripts' ARGV, how many names
    FOLD_MANY would write down, and a converter per feature. A plan only changes when the read
    time crosses a bucket edge, so reads in between share one (``FeatureStore`` keeps them).

    ``fold_fields`` is the same fold done in Python on an entity hash (reads of one key, and
    every read on Redis Cluster); ``readout.ReadPlan.states`` stays the reference all three
    are tested against."""

    __slots__ = ("_lookups", "args", "convs", "n_names", "plan")

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self._lookups: dict[type, _Lookup] = {}
        self.args = [str(len(plan.features))]
        self.n_names = 0
        for f in plan.features:
            _feature, lo, hi = plan.wanted[f.name]
            windowed = "1" if f.window is not None else "0"
            self.args += [f.name, _AGG[f.agg], windowed, str(lo), str(hi)]
            if f.window is not None and f.agg != "distinct":
                self.n_names += (hi - lo) * (2 if f.agg == "mean" else 1)
        self.convs = [(f.name, _converter(f)) for f in plan.features]

    def way(self, n_keys: int) -> int:
        """How a read of ``n_keys`` keys is cheapest: ``LOCAL`` (HGETALL, fold in Python),
        ``FEW`` (the FOLD script) or ``MANY`` (FOLD_MANY)."""
        if n_keys < _LOCAL_BELOW:
            return LOCAL
        if n_keys >= _MANY_FROM and self.n_names <= _NAMES_PER_KEY * n_keys:
            return MANY
        return FEW

    def fold_fields(self, fields: Fields) -> list[int]:
        """One entity hash folded as the scripts fold it: ``[commit, written, a1, b1, ...]``."""
        if not fields:
            return self._empty()
        first = next(iter(fields))
        lookup = self._lookups.get(type(first))
        if lookup is None:
            lookup = self._lookups[type(first)] = _lookup(self.plan, type(first) is bytes)
        row = self._empty()
        slots, heads, commit, written, hash_sign = lookup
        distinct: dict[int, dict[Any, int]] | None = None
        for name, value in fields.items():
            at = slots.get(name)
            if at is not None:
                row[at] += int(value)
            elif name == commit:
                row[0] = int(value)
            elif name == written:
                row[1] = int(value)
            elif heads:
                head, sep, dval = name.partition(hash_sign)
                at = heads.get(head) if sep else None
                if at is not None:
                    if distinct is None:
                        distinct = {}
                    counts = distinct.setdefault(at, {})
                    counts[dval] = counts.get(dval, 0) + int(value)
        if distinct:
            for at, counts in distinct.items():
                row[at] = sum(1 for n in counts.values() if n > 0)
        return row

    def _empty(self) -> list[int]:
        return [-1, -1, *([0] * (2 * len(self.plan.features)))]

    def unfold(
        self, rows: Sequence[Sequence[int]]
    ) -> list[tuple[dict[str, FeatureValue], int | None, int | None]]:
        """Every key's script answer -> (values, commit_ms, written_ms), in order."""
        convs = self.convs
        out = []
        for row in rows:
            values = {
                name: conv(a, b)
                for (name, conv), a, b in zip(convs, row[2::2], row[3::2], strict=True)
            }
            commit, written = row[0], row[1]
            out.append((values, commit if commit >= 0 else None, written if written >= 0 else None))
        return out


class _Lookup(NamedTuple):
    """Field name -> where it counts in a fold row, for one key type (bytes or str)."""

    slots: dict[Any, int]  # a counted field -> its row index (count a_i, or total b_i)
    heads: dict[Any, int]  # name (or name@bucket) before '#' of a distinct feature -> a_i
    commit: Any
    written: Any
    hash_sign: Any  # '#' in the key type


def _lookup(plan: ReadPlan, as_bytes: bool) -> _Lookup:
    def key(text: str) -> Any:
        return text.encode() if as_bytes else text

    slots: dict[Any, int] = {}
    heads: dict[Any, int] = {}
    for i, f in enumerate(plan.features):
        _feature, lo, hi = plan.wanted[f.name]
        count_at, total_at = 2 + 2 * i, 3 + 2 * i
        if f.agg == "mean":
            parts = [(f"{f.name}:n", count_at), (f"{f.name}:s", total_at)]
        else:
            parts = [(f.name, count_at if f.agg in ("count", "distinct") else total_at)]
        into = heads if f.agg == "distinct" else slots
        for head, at in parts:
            if f.window is None:
                into[key(head)] = at
            else:
                for b in range(lo + 1, hi + 1):
                    into[key(f"{head}@{b}")] = at
    return _Lookup(slots, heads, key(COMMIT_FIELD), key(WRITTEN_FIELD), key("#"))


def _converter(feature: Feature) -> Callable[[int, int], FeatureValue]:
    """(count, scaled total) -> the value ``readout.finalize`` gives, without building a State."""
    agg, shift = feature.agg, -feature.scale
    if agg in ("count", "distinct"):
        return lambda a, _b: a
    if agg == "sum":
        return lambda _a, b: Decimal(b).scaleb(shift)
    scale = feature.scale
    return lambda a, b: mean_value(b, a, scale)
