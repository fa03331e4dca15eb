-- idem_finish: store the final answer of the request that claimed an Idempotency-Key,
-- for replay until the key expires. Does nothing unless the caller still owns it.
--
-- KEYS: 1 the key's hash (see idem_begin.lua)
-- ARGV: 1 owner, 2 HTTP status, 3 answer (the response body as sent), 4 TTL (ms)
-- Returns 1 if stored, 0 if the claim was lost (expired or taken over).

if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'answer', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
