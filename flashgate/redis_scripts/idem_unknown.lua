-- idem_unknown: the request that claimed this Idempotency-Key ended with Kafka's
-- answer unknown (503 `outcome_unknown`). The key keeps its order id and waits for
-- the order to settle: a retry learns "unknown" from idem_begin.lua and answers from
-- the order's status (pending: the same 503; accepted: a 202 replay; not stored:
-- it claims the key again and places the order, under the same id).
--
-- KEYS: 1 the key's hash (see idem_begin.lua)
-- ARGV: 1 owner, 2 TTL of the key (ms)
-- Returns 1 if stored, 0 if the caller did not own it (any more).

if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'unknown')
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
