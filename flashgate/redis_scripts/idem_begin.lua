-- idem_begin: claim an Idempotency-Key, or learn what became of the request that holds it.
--
-- KEYS: 1 the key's hash (fields: state "pending"|"done", body_hash, owner, status, answer)
-- ARGV: 1 body hash, 2 owner (a random token of the claiming request),
--       3 TTL of a pending claim (ms): bounds how long a dead gateway's claim blocks retries
-- Returns {"new"} (claimed: go ahead), {"reused"} (same key, other body),
--   {"pending"} (another request is still working on it), {"done", status, answer}.

local found = redis.call('HMGET', KEYS[1], 'state', 'body_hash', 'status', 'answer')
if not found[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'body_hash', ARGV[1], 'owner', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'new'}
end
if found[2] ~= ARGV[1] then
  return {'reused'}
end
if found[1] == 'done' then
  return {'done', found[3], found[4]}
end
return {'pending'}
