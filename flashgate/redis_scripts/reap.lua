-- reap: return reservations past their deadline to stock (a gateway died between
-- reserving and Kafka's ack). admit.lua does the same first on every call; this
-- script serves sales that receive no orders.
--
-- KEYS: the sale's keys 1-9 as in admit.lua (config, loaded, reserved, accepted,
--   pending, reservations, bought, counters, reaped), all under the hash tag {sale:<id>}.
-- ARGV: 1 now in ms ("" = the Redis server's clock), 2 at most this many reservations
-- Returns the number of reservations returned to stock.

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do
  local r = redis.call('HGET', KEYS[6], id)
  if r then
    local sku, qty, user = string.match(r, '^(.-)\t(%d+)\t(.*)$')
    redis.call('HINCRBY', KEYS[3], sku, -tonumber(qty))
    if redis.call('HINCRBY', KEYS[7], user, -tonumber(qty)) <= 0 then
      redis.call('HDEL', KEYS[7], user)
    end
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZADD', KEYS[9], now, id)
  end
  redis.call('ZREM', KEYS[5], id)
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - 86400000)
end
return #expired
