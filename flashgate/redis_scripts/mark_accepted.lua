-- mark_accepted: write an order's status hash at accept time, in one command.
--
-- `status` is set only if absent, so a consumer that delivered the order before
-- this write landed never sees its `delivered` overwritten; the other fields are
-- the gateway's to write.
--
-- KEYS: 1 the order's status hash (order:<order id>)
-- ARGV: 1 TTL (s), then field/value pairs (accepted_at, sale_id, partition, offset)
-- Returns 1.

redis.call('HSETNX', KEYS[1], 'status', 'accepted')
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
