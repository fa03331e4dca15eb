-- reap: return these expired reservations to stock. The reaper calls it only for
-- reservations whose order it has looked for in Kafka and not found (their gateway
-- died, or Kafka's answer was unknown): see gateway/reaper.py.
--
-- A reservation that was confirmed or released meanwhile, or whose deadline has
-- not passed, is left alone. A reaped order id is remembered in `reaped` for
-- `keep_ms` (as long as Kafka keeps records): a record of it that still turns up
-- (a broker that wrote it after a long stall) is fenced by the drain, never
-- delivered (confirm.lua), so the units returned here are never sold twice.
--
-- KEYS: the sale's keys 1-10 as in admit.lua (config, loaded, reserved, accepted,
--   pending, reservations, bought, counters, reaped, adopted), all under the hash tag
--   {sale:<id>}.
-- ARGV: 1 now in ms ("" = the Redis server's clock), 2 keep_ms, then reservation ids
-- Returns the ids returned to stock (the caller marks their orders "not stored").

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local keep_ms = tonumber(ARGV[2])
local reaped = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local deadline = tonumber(redis.call('ZSCORE', KEYS[5], id))
  if deadline and deadline <= now then
    local r = redis.call('HGET', KEYS[6], id)
    if r then
      local sku, qty, user = string.match(r, '^(.-)\t(%d+)\t(.*)$')
      redis.call('HINCRBY', KEYS[3], sku, -tonumber(qty))
      if redis.call('HINCRBY', KEYS[7], user, -tonumber(qty)) <= 0 then
        redis.call('HDEL', KEYS[7], user)
      end
      redis.call('HDEL', KEYS[6], id)
      redis.call('ZADD', KEYS[9], now, id)
      reaped[#reaped + 1] = id
    end
    -- Also drops a pending entry whose reservation is already gone.
    redis.call('ZREM', KEYS[5], id)
  end
end
if #reaped > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - keep_ms)
end
return reaped
