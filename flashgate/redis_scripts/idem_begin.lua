-- idem_begin: claim an Idempotency-Key, or learn what became of the request that holds it.
--
-- The key keeps one order id for its whole life: a retry after a 503 (Kafka's answer
-- was lost, so the record may be in Kafka after all) produces the *same* order id
-- again, and the backend, idempotent on order ids, stores the order once.
--
-- KEYS: 1 the key's hash (fields: state "pending"|"released"|"done"|"unknown",
--       body_hash, owner, order_id, lease_until (ms since the epoch), status, answer)
-- ARGV: 1 body hash, 2 owner (a random token of the claiming request),
--       3 lease of a pending claim (ms): how long a dead gateway's claim blocks retries,
--       4 order id to use if the key is new, 5 TTL of the key (ms),
--       6 "retry" to claim a key whose order was settled "not stored" (see
--       idem_unknown.lua), else ""
-- Returns {"new", order_id} (claimed: go ahead with that order id), {"reused"} (same key,
--   other body), {"pending"} (another request is still working on it),
--   {"done", status, answer}, {"unknown", order_id} (Kafka's answer for that order was
--   unknown: the caller answers from the order's status).

local found = redis.call('HMGET', KEYS[1], 'state', 'body_hash', 'status', 'answer',
                         'order_id', 'lease_until')
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = now_ms + tonumber(ARGV[3])
if not found[1] then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'body_hash', ARGV[1], 'owner', ARGV[2],
             'order_id', ARGV[4], 'lease_until', lease_until)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'new', ARGV[4]}
end
if found[2] ~= ARGV[1] then
  return {'reused'}
end
if found[1] == 'done' then
  return {'done', found[3], found[4]}
end
if found[1] == 'unknown' and ARGV[6] ~= 'retry' then
  return {'unknown', found[5]}
end
if found[1] == 'released' or found[1] == 'unknown' or tonumber(found[6] or '0') < now_ms then
  -- Released by a request that failed, settled "not stored", or held by a gateway that
  -- died: take it over, keeping its order id.
  local order_id = found[5] or ARGV[4]
  redis.call('HSET', KEYS[1], 'state', 'pending', 'owner', ARGV[2], 'order_id', order_id,
             'lease_until', lease_until)
  return {'new', order_id}
end
return {'pending'}
