-- Row states for the planner (``store_write.RedisBatchWriter.read_rows``), one hash per key.
-- A key of another type reads as no state (not as an error that would stop the pipeline): the
-- batch script then refuses to write it, and the events writing it are dead-lettered.
local out = {}
for i, key in ipairs(KEYS) do
  local found = redis.pcall('HGETALL', key)
  if found.err then found = {} end
  out[i] = found
end
return out
