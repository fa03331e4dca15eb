-- mark_expired: an accepted order whose record Kafka deleted before delivery is failed,
-- reason expired_in_buffer. Only an order still waiting (accepted or pending) is marked:
-- one already delivered (by a consumer that died before committing) keeps its status.
--
-- KEYS: 1 the order's status hash (order:<order_id>)
-- ARGV: 1 ttl of the hash in seconds
-- Returns 1 when marked, else 0.

local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'accepted' and status ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'reason', 'expired_in_buffer')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
