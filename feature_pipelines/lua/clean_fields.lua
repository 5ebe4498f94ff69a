-- Delete the fields of some features from entity hashes (feature_pipelines/backfill.py):
-- every field whose feature name (what precedes its first ':', '@' or '#') is an ARGV.
-- KEYS: entity hashes. A key of another type is left alone. Returns the fields deleted.
local names = {}
for _, name in ipairs(ARGV) do names[name] = true end
local gone = 0
for _, key in ipairs(KEYS) do
  local fields = redis.pcall('HKEYS', key)
  if not fields.err then
    local dels = {}
    for _, field in ipairs(fields) do
      local name = string.match(field, '^([%w_]+)')
      if name and names[name] then dels[#dels + 1] = field end
    end
    for s = 1, #dels, 1000 do
      redis.call('HDEL', key, unpack(dels, s, math.min(s + 999, #dels)))
      gone = gone + math.min(1000, #dels - s + 1)
    end
  end
end
return gone
