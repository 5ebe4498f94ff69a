-- The pipeline's record of its source (``source.SourceGuard``): raises the highest WAL position
-- seen and answers whether the record exists and what truncation it holds.
-- KEYS[1]: the namespace's source record; ARGV[1]: highest WAL position seen (decimal
-- text without leading zeros, compared by length then text: exact past 2^53)
if redis.call('HEXISTS', KEYS[1], 'system_id') == 0 then return {0, false} end
local cur, new = redis.call('HGET', KEYS[1], 'lsn'), ARGV[1]
if new ~= '' and (not cur or #new > #cur or (#new == #cur and new > cur)) then
  redis.call('HSET', KEYS[1], 'lsn', new)
end
return {1, redis.call('HGET', KEYS[1], 'truncated')}
