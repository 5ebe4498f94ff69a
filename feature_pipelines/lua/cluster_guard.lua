-- The entity step of a Redis Cluster batch (``cluster_write.ClusterBatchWriter``), run before
-- int64.lua and apply.lua (which then write the shard's increments with no row state).
-- KEYS[1]: the shard's applied hash; ARGV[#ARGV - 1]: its field "<group>:<partition>";
-- ARGV[#ARGV]: the journal entry's seq. apply.lua records the seq in that field (as the
-- "offsets" it writes to KEYS[1]) in the same atomic step as the increments, so an entry
-- already applied to this shard (a replay after a crash, a lost consumer's late copy) is
-- answered 1 and writes nothing.
do
  local seen = redis.call('HGET', KEYS[1], ARGV[#ARGV - 1])
  if seen and tonumber(seen) >= tonumber(ARGV[#ARGV]) then return 1 end
end
