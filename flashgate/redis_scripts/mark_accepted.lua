-- mark_accepted: write an order's status hash at accept time, in one command.
--
-- `status` is set only if absent, so a consumer that delivered the order before
-- this write landed never sees its `delivered` overwritten; the other fields are
-- the gateway's to write.
--
-- KEYS: 1 the order's status hash (order:<order id>)
-- ARGV: 1 TTL (s), 2 accepted_at, 3 sale_id, 4 partition, 5 offset ("" = unknown;
--   partition and offset are written together or not at all)
-- Returns 1.

redis.call('HSETNX', KEYS[1], 'status', 'accepted')
redis.call('HSET', KEYS[1], 'accepted_at', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'sale_id', ARGV[3])
end
if ARGV[4] ~= '' and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'partition', ARGV[4], 'offset', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
