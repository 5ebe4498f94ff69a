-- The switch of an apply (feature_pipelines/backfill.py): in each entity hash, the fields of a
-- changed feature's shadow name (backfilled and kept by the stream) replace its own, and the
-- fields of removed features go; one hash at a time, atomically, while the pipelines wait.
-- KEYS: entity hashes (a key of another type is left alone).
-- ARGV: the shadow suffix, the number of changed features, their names, then removed names.
-- Returns the fields of the old definitions and of removed features deleted.
local suffix = ARGV[1]
local n = tonumber(ARGV[2])
local changed, removed = {}, {}
for i = 3, 2 + n do changed[ARGV[i]] = true end
for i = 3 + n, #ARGV do removed[ARGV[i]] = true end
local cut = #suffix
local gone = 0
for _, key in ipairs(KEYS) do
  local flat = redis.pcall('HGETALL', key)
  if not flat.err then
    local renamed, sets, olds, dels = {}, {}, {}, {}
    for i = 1, #flat, 2 do
      local field = flat[i]
      local name, rest = string.match(field, '^([%w_]+)(.*)$')
      if name then
        if removed[name] or changed[name] then
          olds[#olds + 1] = field
        elseif #name > cut and string.sub(name, -cut) == suffix
            and changed[string.sub(name, 1, #name - cut)] then
          local to = string.sub(name, 1, #name - cut) .. rest
          renamed[to] = true
          sets[#sets + 1] = to
          sets[#sets + 1] = flat[i + 1]
          dels[#dels + 1] = field
        end
      end
    end
    for _, field in ipairs(olds) do
      if not renamed[field] then dels[#dels + 1] = field end
    end
    gone = gone + #olds
    -- set first: a hash emptied on the way would lose its expiry
    for s = 1, #sets, 1000 do
      redis.call('HSET', key, unpack(sets, s, math.min(s + 999, #sets)))
    end
    for s = 1, #dels, 1000 do
      redis.call('HDEL', key, unpack(dels, s, math.min(s + 999, #dels)))
    end
  end
end
return gone
