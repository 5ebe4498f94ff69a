-- The batch write of the pipeline (``store_write.RedisBatchWriter``), run after int64.lua.
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
local find, sub, byte = string.find, string.sub, string.byte
local tonumber, abs, floor, unpack = tonumber, math.abs, math.floor, unpack
local function split(s)
  local out = {}
  if s == '' then return out end
  local start, n = 1, 0
  while true do
    local i = find(s, '\0', start, true)
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
    local current
    if n + 2 <= 1000 then  -- the usual case: one HMGET, its reply as it is
      current = redis.pcall('HMGET', key, unpack(names))
      if current.err then return {'type', key, '', type_of(key), 'hash'} end
    else
      current = {}
      for s = 1, n + 2, 1000 do
        local part = redis.pcall('HMGET', key, unpack(names, s, math.min(s + 999, n + 2)))
        if part.err then return {'type', key, '', type_of(key), 'hash'} end
        for j = 1, #part do current[s + j - 1] = part[j] end
      end
    end
    local new = {}
    for j = 1, n do
      local inc, old = tonumber(flat[2 * j]), current[j]
      local o = 0
      if old then o = tonumber(old) end
      local sum = nil
      if inc and abs(inc) < LIMIT and o and o == floor(o) and abs(o) < LIMIT then
        sum = o + inc
        if abs(sum) >= LIMIT then sum = nil end
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
  if ARGV[b + 2] ~= '' then each('HDEL', key, split(ARGV[b + 2]), 1000) end
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
    -- plain finds, not a pattern with captures: this runs for every field of every entity swept
    local name, bound, bucket
    local at = find(field, '@', 1, true)
    if at then
      local hash = find(field, '#', 1, true)
      if not hash or hash > at then  -- '@' of a bucket, not inside a keyed kind's value
        local colon = find(field, ':', 1, true)
        name = sub(field, 1, (colon and colon < at and colon or at) - 1)
        bound = below[name]
        if bound then bucket = tonumber(sub(field, at + 1, (hash or 0) - 1)) end
        if not bucket then bound = nil end
      end
    end
    if bound and bucket <= bound then
      out[#out + 1] = field
    elseif byte(field) ~= 95 then  -- not '_': a feature field
      kept = kept + 1
      if bound then
        local leaves = bucket * width[name] + window[name]
        if not next_at or leaves < next_at then next_at = leaves end
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
  local span, commit_text = tonumber(ARGV[a + 4]), ARGV[a + 1]
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
    sets[#sets + 1] = commit_text  -- as text: a number argument costs Redis a printf
  end
  sets[#sets + 1] = '_written_ms'
  sets[#sets + 1] = written
  local due = step > 0 and sweep_at - (tonumber(current[n + 2] or '0') or 0) >= step
  if due then
    sets[#sets + 1] = '_swept'
    sets[#sets + 1] = ARGV[5]  -- sweep_at, as text
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
