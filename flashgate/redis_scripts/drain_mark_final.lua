-- drain_mark_final: the drain's final word on one order: delivered or failed.
--
-- One call instead of a transaction of four commands: the consumer writes thousands of
-- these a second, pipelined in batches. The hash's fields are the ones OrderStatus
-- (flashgate/order_status.py) reads.
--
-- KEYS: 1 the order's status hash (order:<order_id>)
-- ARGV: 1 status: "delivered" or "failed"
--       2 accepted_at, unix seconds (as written by the gateway)
--       3 delivered_at, unix seconds (delivered) or the reason (failed)
--       4 ttl of the hash in seconds
-- Returns the order's sale_id when this call is the first to count it as delivered
-- (the caller adds it to that sale's `delivered_orders`), else false.

local key = KEYS[1]
if ARGV[1] == 'delivered' then
  redis.call('HSET', key, 'status', 'delivered', 'accepted_at', ARGV[2], 'delivered_at', ARGV[3])
else
  redis.call('HSET', key, 'status', 'failed', 'accepted_at', ARGV[2], 'reason', ARGV[3])
end
redis.call('EXPIRE', key, tonumber(ARGV[4]))
if ARGV[1] == 'delivered' and redis.call('HSETNX', key, 'counted', '1') == 1 then
  return redis.call('HGET', key, 'sale_id')
end
return false
