-- idem_release: give up a claimed Idempotency-Key (the request failed in a way a retry
-- may fix: 503, 429, ...), so the next request with that key starts afresh, with the
-- same order id (see idem_begin.lua).
--
-- KEYS: 1 the key's hash (see idem_begin.lua)
-- ARGV: 1 owner
-- Returns 1 if released, 0 if the caller did not own it (any more).

if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('HDEL', KEYS[1], 'owner')
return 1
