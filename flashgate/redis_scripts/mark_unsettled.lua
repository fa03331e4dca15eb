-- mark_unsettled: an order whose record Kafka may or may not hold.
--
-- "pending": the gateway answered `outcome_unknown` (Kafka's answer was lost); the
--   reaper settles it from what Kafka holds. Written over nothing or over an earlier
--   attempt's "failed"/"not_stored", never over "accepted" or "delivered" (the
--   record did arrive and was acknowledged or drained first).
-- "not_stored": the reaper proved the record absent and returned the units; any
--   record of it that still turns up is fenced by the drain. Written over anything
--   but "delivered" (which the fence makes impossible: a record is confirmed before
--   it is delivered, and a confirmed order is never reaped).
--
-- KEYS: 1 the order's status hash (order:<order id>)
-- ARGV: 1 "pending" | "not_stored", 2 TTL (s), 3 accepted_at ("" = keep), 4 sale_id
--   ("" = keep)
-- Returns 1 if written, 0 if the status already said more.

local current = redis.call('HMGET', KEYS[1], 'status', 'reason')
local status = current[1]
if ARGV[1] == 'pending' then
  if status and not (status == 'failed' and current[2] == 'not_stored') then
    return 0
  end
  redis.call('HSET', KEYS[1], 'status', 'pending')
  redis.call('HDEL', KEYS[1], 'reason')
else
  if status == 'delivered' then
    return 0
  end
  redis.call('HSET', KEYS[1], 'status', 'failed', 'reason', 'not_stored')
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'accepted_at', ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'sale_id', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
