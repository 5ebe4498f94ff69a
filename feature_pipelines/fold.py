"""Server-side read: fold an entity's stored fields into feature states inside Redis.

A windowed feature keeps one field per bucket (and per distinct value), so an entity hash holds
tens of fields; folding them in Python costs about a microsecond each. ``FOLD`` does the same
fold as ``readout.ReadPlan.states`` in one Lua call per batch of entities and returns two numbers
per feature, so a batch read moves little data and little Python work. ``ReadPlan`` stays the
reference (and the path for Redis Cluster, where one script cannot touch keys of many slots);
a test checks both agree on random hashes.

Numbers travel as decimal strings; Lua keeps them as doubles, exact below 2**53 (a sum of
amounts in cents up to about 90 trillion).
"""

from __future__ import annotations

from collections.abc import Sequence

from feature_pipelines.readout import FeatureValue, ReadPlan, State, finalize
from feature_pipelines.windows import COMMIT_FIELD, WRITTEN_FIELD

__all__ = ["FOLD", "fold_args", "unfold"]

_AGG = {"count": "c", "sum": "s", "mean": "m", "distinct": "d"}

# ARGV: n_features, then per feature: name, agg code, windowed (1|0), lo, hi.
# Returns per key: {commit, written, a1, b1, a2, b2, ...} as integers (Redis turns a Lua number
# into an integer reply): a = count (or distinct values with a positive count), b = scaled
# total; commit/written are -1 when absent. Integers spare the client a parse per number.
FOLD = """
local nf = tonumber(ARGV[1])
local spec = {}
for i = 0, nf - 1 do
  local base = 2 + i * 5
  spec[ARGV[base]] = {i + 1, ARGV[base + 1], ARGV[base + 2] == '1',
                      tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])}
end
-- What a field name means for this read: false (not counted) or {slot, kind, distinct value};
-- kind 1 = count, 2 = total. Entities share most field names (feature@bucket), so each name
-- is parsed once per call.
local meaning = {}
local function parse(f)
  local head, dval = f, nil
  local p = string.find(head, '#', 1, true)
  if p then dval = string.sub(head, p + 1); head = string.sub(head, 1, p - 1) end
  local bucket = nil
  p = string.find(head, '@', 1, true)
  if p then bucket = tonumber(string.sub(head, p + 1)); head = string.sub(head, 1, p - 1) end
  local part = ''
  p = string.find(head, ':', 1, true)
  if p then part = string.sub(head, p + 1); head = string.sub(head, 1, p - 1) end
  local s = spec[head]
  if s and ((not s[3]) or (bucket and bucket > s[4] and bucket <= s[5])) then
    local kind = 2
    if s[2] == 'c' or part == 'n' then kind = 1 end
    return {s[1], kind, dval}
  end
  return false
end
local out = {}
for k = 1, #KEYS do
  local flat = redis.call('HGETALL', KEYS[k])
  local counts, totals, distinct = {}, {}, {}
  for i = 1, nf do counts[i] = 0; totals[i] = 0 end
  local commit, written = '', ''
  for j = 1, #flat, 2 do
    local f = flat[j]
    if string.byte(f, 1) == 95 then
      if f == '@COMMIT@' then commit = flat[j + 1]
      elseif f == '@WRITTEN@' then written = flat[j + 1] end
    else
      local m = meaning[f]
      if m == nil then m = parse(f); meaning[f] = m end
      if m then
        local slot, v, dval = m[1], tonumber(flat[j + 1]), m[3]
        if dval then
          local d = distinct[slot]
          if not d then d = {}; distinct[slot] = d end
          d[dval] = (d[dval] or 0) + v
        elseif m[2] == 1 then
          counts[slot] = counts[slot] + v
        else
          totals[slot] = totals[slot] + v
        end
      end
    end
  end
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
""".replace("@COMMIT@", COMMIT_FIELD).replace("@WRITTEN@", WRITTEN_FIELD)


def fold_args(plan: ReadPlan) -> list[str]:
    """The script's ARGV for a read plan (features and the buckets a read counts)."""
    args = [str(len(plan.features))]
    for f in plan.features:
        _feature, lo, hi = plan.wanted[f.name]
        windowed = "1" if f.window is not None else "0"
        args += [f.name, _AGG[f.agg], windowed, str(lo), str(hi)]
    return args


def unfold(
    plan: ReadPlan, row: Sequence[int]
) -> tuple[dict[str, FeatureValue], int | None, int | None]:
    """One key's script answer -> (values, commit_ms, written_ms)."""
    commit, written = row[0], row[1]
    values: dict[str, FeatureValue] = {}
    for i, f in enumerate(plan.features):
        a = row[2 + 2 * i]
        if f.agg == "distinct":
            values[f.name] = a
        else:
            values[f.name] = finalize(f, State(count=a, total=row[3 + 2 * i]))
    return values, (commit if commit >= 0 else None), (written if written >= 0 else None)
