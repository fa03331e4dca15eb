-- confirm: these orders' records are in Kafka; turn their reservations into accepted units.
--
-- Called by the gateway once Kafka acknowledged an order, by the reaper for an order
-- whose record it found in Kafka, and by the drain before it delivers a record (the
-- fence): whoever comes first confirms, the others find nothing left to do.
--
-- Idempotent: confirming twice counts once. An order found in `reaped` was settled
-- "not stored" (the reaper proved its record absent and returned its units) before
-- this record turned up: it is fenced, nothing changes and the reply says so (0).
-- Taking the units again could sell them twice; the drain dead-letters such a record
-- and the gateway answers that the order failed, as its status already says.
--
-- KEYS: the sale's keys 1-10 as in admit.lua (config, loaded, reserved, accepted,
--   pending, reservations, bought, counters, reaped, adopted), all under the hash tag
--   {sale:<id>}.
-- ARGV: 1 n orders, 2 the orders, one line each: "<reservation id>\t<sku>\t<quantity>\t<user>"
--   (if the lines are not n, the call fails before any write),
--   3 "" (the order's own gateway confirms) or how long to remember an order confirmed
--   on another's behalf (ms; a reaper or the drain: the order is then `adopted`, see
--   admit.lua)
-- Returns one string, a character per order in order: "1" confirmed now, "0" fenced
--   (see above), "-" nothing to confirm (already confirmed, or released).

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
local adopt_keep_ms = tonumber(ARGV[3] or '')
local now = nil
if adopt_keep_ms then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local results = {}
local adopted = 0
for i = 1, n do
  local id, sku, qty, user = unpack(orders[i])
  local outcome = '-'  -- also for a line that did not parse (no id)
  if id and redis.call('HDEL', KEYS[6], id) == 1 then
    redis.call('ZREM', KEYS[5], id)
    redis.call('HINCRBY', KEYS[3], sku, -qty)
    redis.call('HINCRBY', KEYS[4], sku, qty)
    redis.call('HINCRBY', KEYS[8], 'accepted_orders', 1)
    redis.call('HINCRBY', KEYS[8], 'accepted_units', qty)
    if now then
      redis.call('ZADD', KEYS[10], now, id)
      adopted = adopted + 1
    end
    outcome = '1'
  elseif id and redis.call('ZSCORE', KEYS[9], id) then
    outcome = '0'
  elseif id and not now then
    -- The drain confirmed it first (it read the record before this ack was settled):
    -- this gateway answers the order and stores its Idempotency-Key answer itself,
    -- so it need not stay adopted. Keeps `adopted` to the orders no gateway answered.
    redis.call('ZREM', KEYS[10], id)
  end
  results[#results + 1] = outcome
end
if adopted > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', now - adopt_keep_ms)
end
return table.concat(results)
