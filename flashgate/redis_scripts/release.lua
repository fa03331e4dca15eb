-- release: Kafka did not take these orders; return their reserved units to stock.
--
-- Releasing a reservation that is already gone (confirmed, released or expired)
-- does nothing, so a release is safe to repeat.
--
-- KEYS: the sale's keys 1-9 as in admit.lua (config, loaded, reserved, accepted,
--   pending, reservations, bought, counters, reaped), all under the hash tag {sale:<id>}.
-- ARGV: reservation ids
-- Returns the number of reservations released.

local released = 0
for _, id in ipairs(ARGV) do
  local r = redis.call('HGET', KEYS[6], id)
  if r then
    local sku, qty, user = string.match(r, '^(.-)\t(%d+)\t(.*)$')
    redis.call('HINCRBY', KEYS[3], sku, -tonumber(qty))
    if redis.call('HINCRBY', KEYS[7], user, -tonumber(qty)) <= 0 then
      redis.call('HDEL', KEYS[7], user)
    end
    redis.call('HDEL', KEYS[6], id)
    released = released + 1
  end
  redis.call('ZREM', KEYS[5], id)
end
return released
