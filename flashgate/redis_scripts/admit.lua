-- admit: admit a batch of orders for ONE sale; each order is decided as if alone,
-- in the given order, and the whole batch runs atomically (one Redis call).
--
-- Per order, in this order: sale loaded? SKU loaded? already reserved under this
-- order id (then admitted again as it is)? sale open (opens_at <= now < closes_at,
-- by this server's clock)? quantity <= per_order_max?
-- enough stock (loaded - accepted - reserved)? per-user limit? then the GCRA rate
-- limits (sale, user, client IP) are checked together and charged only when all
-- pass. An admitted order holds a reservation until confirm.lua (Kafka acked) or
-- release.lua (Kafka failed). One past its deadline keeps its units until the
-- gateway's reaper has looked for its record in Kafka: found, it is confirmed;
-- proven absent, reap.lua returns it to stock. Admission never returns stock on a
-- timer alone: an order acknowledged by Kafka whose gateway died before confirming
-- would otherwise be sold twice.
--
-- KEYS (all share the sale's hash tag {sale:<id>}, so one Redis Cluster slot):
--   1 config        hash  per_order_max, per_user_max, sale_rate, sale_burst, user_rate,
--                         user_burst, ip_rate, ip_burst (rates per second; 0 = no limit;
--                         bursts in requests), opens_at_ms, closes_at_ms (ms since the
--                         epoch; 0 or absent = no such bound), fair_start_ms, lottery_salt
--   2 loaded        hash  sku -> units loaded for sale
--   3 reserved      hash  sku -> units held by pending reservations
--   4 accepted      hash  sku -> units confirmed (in Kafka)
--   5 pending       zset  reservation id -> deadline (ms since the epoch)
--   6 reservations  hash  reservation id -> "sku<TAB>quantity<TAB>user"
--   7 bought        hash  user -> units reserved or accepted
--   8 counters      hash  (unused here)
--   9 reaped        zset  order id -> when the reaper returned its units, having proven
--                         its record absent from Kafka (ms); kept as long as a record can
--                         still be read (see reap.lua). The drain fences a record found
--                         here (confirm.lua); admitting the order id again lifts the fence
--  10 adopted       zset  order id -> when a reaper or the drain confirmed it on behalf of
--                         a gateway that never did (ms): a retry of that order (same
--                         Idempotency-Key, so same order id) is answered "accepted" and
--                         charged nothing
--  11 sale TAT      string  GCRA theoretical arrival time of the sale limiter (ms)
-- The per-user and per-IP TAT keys are named here from KEYS[11]'s hash tag
-- ("{sale:<id>}:tat:u:<user>", "{sale:<id>}:tat:ip:<ip>"), and so are the fair start's
-- "<tag>:lottery" (zset id -> ticket), ":lottery:lines" (id -> "sku\tqty\tuser"),
-- ":lottery:verdicts" (id -> the draw's answer) and ":lottery:drawn": the same slot as the
-- declared keys, so the script stays correct on Redis Cluster, and the gateway
-- sends one argument per batch instead of two keys per order.
-- ARGV: 1 now in ms ("" = the Redis server's clock), 2 reservation TTL (ms),
--   3 n orders, 4 the orders, one line each:
--   "<reservation id>\t<sku>\t<quantity>\t<user>\t<client ip>" (ids, SKUs and users
--   are validated tokens; the gateway keeps tabs and newlines out of the ip). If the
--   lines are not n, the call fails before any write; a line that does not parse is
--   answered "invalid" and changes nothing.
-- Returns one string, a line per order in order, fields separated by spaces:
--   "ok <remaining> <per_order_max>[ held]"   ("held": this order id already held
--                                              its reservation; see below)
--   "accepted"       (this order id was already confirmed by a reaper or the drain)
--   "unknown_sale"   "unknown_sku"   "invalid"   "sold_out <remaining> <per_order_max>"
--   "quantity <per_order_max>"   "purchase_limit <per_user_max> <bought>"
--   "not_open <opens_at_ms> <wait_ms>"   "closed <closes_at_ms>"
--   "ticket <wait_ms>"  (in the fair start's window: call again with the same line
--                        after wait_ms for the draw's answer, one of the above)
--   "rate_limited <sale|user|ip> <retry_after_ms> <burst> <rate>"
-- (one string, not nested arrays: building and parsing those cost the gateway
-- more than the script costs Redis)

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local ttl_ms = tonumber(ARGV[2])
local tag = string.sub(KEYS[11], 1, -10)  -- KEYS[11] is "<tag>:tat:sale"
local n = tonumber(ARGV[3])
local orders = {}
for line in string.gmatch(ARGV[4], '[^\n]+') do
  local id, sku, qty, user, ip = string.match(line, '^([^\t]+)\t([^\t]+)\t(%d+)\t([^\t]+)\t(.*)$')
  orders[#orders + 1] = {id, sku, tonumber(qty), user, ip}
end
-- Checked before any write: a batch that does not parse changes nothing.
if #orders ~= n then
  return redis.error_reply('admit: expected ' .. n .. ' orders, parsed ' .. #orders)
end

local results = {}
local cfg = redis.call('HMGET', KEYS[1], 'per_order_max', 'per_user_max', 'sale_rate',
  'sale_burst', 'user_rate', 'user_burst', 'ip_rate', 'ip_burst', 'opens_at_ms', 'closes_at_ms',
  'fair_start_ms', 'lottery_salt')
if not cfg[1] then
  for i = 1, n do results[i] = 'unknown_sale' end
  return table.concat(results, '\n')
end
local per_order_max = tonumber(cfg[1])
local per_user_max = tonumber(cfg[2])
-- The schedule is judged by this server's clock, the one clock every gateway shares:
-- a gateway whose own clock runs fast cannot open the sale early.
local opens_at = tonumber(cfg[9]) or 0
local closes_at = tonumber(cfg[10]) or 0
local limits = {
  {'sale', tonumber(cfg[3]), tonumber(cfg[4])},
  {'user', tonumber(cfg[5]), tonumber(cfg[6])},
  {'ip', tonumber(cfg[7]), tonumber(cfg[8])},
}

-- GCRA: the new theoretical arrival time if allowed, else nil and the wait in ms.
local function gcra(key, rate, burst)
  if rate <= 0 then return 0, 0 end
  local interval = 1000 / rate
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if allow_at > now then return nil, allow_at - now end
  return new_tat, 0
end

local function int(x)
  return string.format('%d', x)
end

-- Units left for a SKU, or nil if it is not loaded.
local function available_of(sku)
  local loaded = tonumber(redis.call('HGET', KEYS[2], sku))
  if not loaded then return nil end
  return loaded - (tonumber(redis.call('HGET', KEYS[4], sku)) or 0)
    - (tonumber(redis.call('HGET', KEYS[3], sku)) or 0)
end

-- Stock and the per-user limit: the refusal, or nil when the order may have its units.
local function stock_refusal(sku, qty, user, available)
  if available < qty then
    return 'sold_out ' .. int(math.max(available, 0)) .. ' ' .. int(per_order_max)
  end
  local bought = tonumber(redis.call('HGET', KEYS[7], user)) or 0
  if per_user_max > 0 and bought + qty > per_user_max then
    return 'purchase_limit ' .. int(per_user_max) .. ' ' .. int(bought)
  end
  return nil
end

local function reserve(id, sku, qty, user, available)
  redis.call('HINCRBY', KEYS[3], sku, qty)
  redis.call('HINCRBY', KEYS[7], user, qty)
  redis.call('ZADD', KEYS[5], now + ttl_ms, id)
  redis.call('HSET', KEYS[6], id, sku .. '\t' .. qty .. '\t' .. user)
  -- A retry of an order settled "not stored": this attempt is the order now, so a
  -- late record of the first one is the same order, no longer one to fence.
  redis.call('ZREM', KEYS[9], id)
  return 'ok ' .. int(available - qty) .. ' ' .. int(per_order_max)
end

-- The GCRA limiters (1 sale, 2 user, 3 ip) from `first` on: charged only if all pass.
local function rate_refusal(user, ip, first)
  local tat_keys = {KEYS[11], tag .. ':tat:u:' .. user, tag .. ':tat:ip:' .. ip}
  local new_tats = {}
  local denied, wait = nil, 0
  for j = first, 3 do
    local new_tat, w = gcra(tat_keys[j], limits[j][2], limits[j][3])
    new_tats[j] = new_tat
    if not new_tat and w > wait then denied, wait = j, w end
  end
  if denied then
    return 'rate_limited ' .. limits[denied][1] .. ' ' .. int(math.ceil(wait)) .. ' '
      .. tostring(limits[denied][3]) .. ' ' .. tostring(limits[denied][2])
  end
  for j = first, 3 do
    if new_tats[j] > 0 then
      redis.call('SET', tat_keys[j], string.format('%.3f', new_tats[j]),
        'PX', math.ceil(new_tats[j] - now) + 1)
    end
  end
  return nil
end

-- The fair start: orders arriving in the first fair_start_ms after opening are not
-- admitted on arrival. Each gets a ticket, a hash of its order id under a secret salt
-- of the sale (a retry, same order id, gets the same ticket: no rerolls), and the
-- first call after the window draws them all in ticket order, in this one script,
-- so arrival within the window decides nothing.
local fair_ms = tonumber(cfg[11]) or 0
local window_end = 0
if opens_at > 0 and fair_ms > 0 then window_end = opens_at + fair_ms end
local tickets, lines, verdicts, drawn =
  tag .. ':lottery', tag .. ':lottery:lines', tag .. ':lottery:verdicts', tag .. ':lottery:drawn'
if window_end > 0 and now >= window_end
    and tonumber(redis.call('GET', drawn)) ~= window_end then
  for _, id in ipairs(redis.call('ZRANGE', tickets, 0, -1)) do
    local sku, qty, user = string.match(redis.call('HGET', lines, id), '^([^\t]+)\t(%d+)\t(.*)$')
    qty = tonumber(qty)
    local available = available_of(sku) or 0
    local verdict = stock_refusal(sku, qty, user, available)
      or reserve(id, sku, qty, user, available)
    redis.call('HSET', verdicts, id, verdict)
  end
  redis.call('DEL', tickets, lines)
  -- Kept while a waiting request can still ask (the longest a request waits, and more).
  redis.call('PEXPIRE', verdicts, 600000)
  redis.call('SET', drawn, int(window_end))
end

for i = 1, n do
  local id, sku, qty, user, ip = unpack(orders[i])
  local available = id and available_of(sku)
  local drawn_verdict = id and window_end > 0 and now >= window_end
    and redis.call('HGET', verdicts, id)
  if not id then
    results[i] = 'invalid'
  elseif redis.call('ZSCORE', KEYS[10], id) then
    -- Its record was found in Kafka after its gateway died: the order is accepted,
    -- and a retry must neither charge it again nor make a second order.
    results[i] = 'accepted'
  elseif not available then
    results[i] = 'unknown_sku'
  elseif drawn_verdict then
    -- Drawn in the fair start: the answer its waiting request comes back for, once.
    redis.call('HDEL', verdicts, id)
    results[i] = drawn_verdict
  elseif redis.call('HEXISTS', KEYS[6], id) == 1 then
    -- This order already holds a reservation: the retry of a request whose gateway
    -- died, sent with the same Idempotency-Key (so the same order id and body).
    -- Charging it again would count its units twice, and only once would ever be
    -- returned or confirmed; it keeps the one it has, with a fresh deadline. The
    -- reply says "held": the first attempt's record may be in Kafka already, so if
    -- this attempt's produce fails the gateway must not release the units (the
    -- reaper looks for the record first).
    redis.call('ZADD', KEYS[5], now + ttl_ms, id)
    results[i] = 'ok ' .. int(math.max(available, 0)) .. ' ' .. int(per_order_max) .. ' held'
  elseif opens_at > 0 and now < opens_at then
    results[i] = 'not_open ' .. int(opens_at) .. ' ' .. int(math.ceil(opens_at - now))
  elseif closes_at > 0 and now >= closes_at then
    results[i] = 'closed ' .. int(closes_at)
  elseif qty > per_order_max then
    results[i] = 'quantity ' .. int(per_order_max)
  elseif window_end > 0 and now < window_end then
    -- In the window: a ticket, not units. The user and IP limiters still judge the
    -- arrival (a bot's flood is refused here); the sale's own limiter does not, or
    -- arrival order would decide again.
    local wait = int(math.ceil(window_end - now))
    if redis.call('ZSCORE', tickets, id) then
      results[i] = 'ticket ' .. wait
    else
      local refusal = rate_refusal(user, ip, 2)
      if refusal then
        results[i] = refusal
      else
        local ticket = tonumber(string.sub(redis.sha1hex((cfg[12] or '') .. id), 1, 13), 16)
        redis.call('ZADD', tickets, ticket, id)
        redis.call('HSET', lines, id, sku .. '\t' .. qty .. '\t' .. user)
        results[i] = 'ticket ' .. wait
      end
    end
  else
    results[i] = stock_refusal(sku, qty, user, available)
      or rate_refusal(user, ip, 1)
      or reserve(id, sku, qty, user, available)
  end
end
return table.concat(results, '\n')
