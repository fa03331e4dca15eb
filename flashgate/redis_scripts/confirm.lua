-- confirm: Kafka acknowledged these orders; turn their reservations into accepted units.
--
-- Idempotent: confirming twice counts once. A reservation found in `reaped` was
-- returned to stock after its deadline (the gateway stalled longer than the
-- reservation TTL): the order is in Kafka all the same, so it is counted as
-- accepted and its units are taken again; the reply says so (0), because accepted
-- may then exceed loaded (an oversell to report).
--
-- KEYS: the sale's keys 1-9 as in admit.lua (config, loaded, reserved, accepted,
--   pending, reservations, bought, counters, reaped), all under the hash tag {sale:<id>}.
-- ARGV: 1 n orders, then four per order: reservation id, sku, quantity, user
-- Returns one integer per order: 1 confirmed, 0 confirmed late (see above),
--   -1 nothing to confirm (already confirmed, or released).

local n = tonumber(ARGV[1])
local results = {}
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local id, sku, qty, user = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]), ARGV[base + 4]
  local outcome = -1
  if redis.call('HDEL', KEYS[6], id) == 1 then
    redis.call('ZREM', KEYS[5], id)
    redis.call('HINCRBY', KEYS[3], sku, -qty)
    outcome = 1
  elseif redis.call('ZREM', KEYS[9], id) == 1 then
    redis.call('HINCRBY', KEYS[7], user, qty)
    outcome = 0
  end
  if outcome >= 0 then
    redis.call('HINCRBY', KEYS[4], sku, qty)
    redis.call('HINCRBY', KEYS[8], 'accepted_orders', 1)
    redis.call('HINCRBY', KEYS[8], 'accepted_units', qty)
  end
  results[i] = outcome
end
return results
