-- One chunk of a backfill (feature_pipelines/backfill.py): add each entity's increments, at
-- most once per chunk, and record the progress in the same atomic step.
-- KEYS: the job's progress hash, then one entity hash per ARGV group.
-- ARGV: table, chunk number, rows read so far; per entity: ttl_ms (0: none), field count,
-- then field, increment pairs.
-- A chunk already recorded is not added again (a retry after a lost answer). A field that
-- reaches 0 is deleted, as the pipeline's write does; an entity hash created here gets the
-- expiry the pipeline gives its kind (the feature set's longest window when all are windowed).
local progress, table_name, chunk = KEYS[1], ARGV[1], tonumber(ARGV[2])
local done = tonumber(redis.call('HGET', progress, 'chunk:' .. table_name) or '-1')
if done >= chunk then return 0 end
local a = 4
for i = 2, #KEYS do
  local key = KEYS[i]
  local ttl, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local fresh = ttl > 0 and redis.call('EXISTS', key) == 0
  for _ = 1, n do
    local field, inc = ARGV[a], ARGV[a + 1]
    a = a + 2
    if redis.call('HINCRBY', key, field, inc) == 0 then redis.call('HDEL', key, field) end
  end
  if fresh and redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, ttl) end
end
redis.call('HSET', progress, 'chunk:' .. table_name, chunk, 'rows:' .. table_name, ARGV[3])
return 1
