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
-- ARGV: 1 n orders, 2 the orders, one line each: "<reservation id>\t<sku>\t<quantity>\t<user>"
--   (if the lines are not n, the call fails before any write)
-- Returns one string, a character per order in order: "1" confirmed, "0" confirmed
--   late (see above), "-" nothing to confirm (already confirmed, or released).

local n = tonumber(ARGV[1])
local orders = {}
for line in string.gmatch(ARGV[2], '[^\n]+') do
  local id, sku, qty, user = string.match(line, '^([^\t]+)\t([^\t]+)\t(%d+)\t(.+)$')
  orders[#orders + 1] = {id, sku, tonumber(qty), user}
end
-- Checked before any write: a batch that does not parse changes nothing.
if #orders ~= n then
  return redis.error_reply('confirm: expected ' .. n .. ' orders, parsed ' .. #orders)
end

local results = {}
for i = 1, n do
  local id, sku, qty, user = unpack(orders[i])
  local outcome = '-'  -- also for a line that did not parse (no id)
  if id and redis.call('HDEL', KEYS[6], id) == 1 then
    redis.call('ZREM', KEYS[5], id)
    redis.call('HINCRBY', KEYS[3], sku, -qty)
    outcome = '1'
  elseif id and redis.call('ZREM', KEYS[9], id) == 1 then
    redis.call('HINCRBY', KEYS[7], user, qty)
    outcome = '0'
  end
  if outcome ~= '-' then
    redis.call('HINCRBY', KEYS[4], sku, qty)
    redis.call('HINCRBY', KEYS[8], 'accepted_orders', 1)
    redis.call('HINCRBY', KEYS[8], 'accepted_units', qty)
  end
  results[#results + 1] = outcome
end
return table.concat(results)
