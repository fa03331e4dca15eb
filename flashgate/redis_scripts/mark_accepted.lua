-- mark_accepted: write an order's status hash once its record is known to be in Kafka
-- (its gateway's ack, or a reaper that found the record), in one command.
--
-- `status` becomes "accepted" only over nothing, "pending" (Kafka's answer was
-- unknown) or "failed" with reason "not_stored" (an earlier attempt of the same
-- order, settled absent, that a retry has now placed): a consumer that delivered or
-- dead-lettered the order before this write landed never sees its word overwritten.
-- The other fields are the gateway's to write.
--
-- KEYS: 1 the order's status hash (order:<order id>)
-- ARGV: 1 TTL (s), 2 accepted_at, 3 sale_id, 4 partition, 5 offset ("" = unknown;
--   partition and offset are written together or not at all)
-- Returns 1.

local current = redis.call('HMGET', KEYS[1], 'status', 'reason')
if not current[1] or current[1] == 'pending'
    or (current[1] == 'failed' and current[2] == 'not_stored') then
  redis.call('HSET', KEYS[1], 'status', 'accepted')
  redis.call('HDEL', KEYS[1], 'reason')
end
redis.call('HSET', KEYS[1], 'accepted_at', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'sale_id', ARGV[3])
end
if ARGV[4] ~= '' and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'partition', ARGV[4], 'offset', ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
