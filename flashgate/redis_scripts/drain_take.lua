-- drain_take: take a batch of delivery tokens from the drain limiter that every
-- consumer of one group shares (a token bucket kept in Redis).
--
-- At least `want` tokens or none: with fewer in the bucket the caller is told how
-- long to wait for `want` (waiting for a whole batch keeps the number of Redis
-- calls near rate / batch per second). With more, up to `most` are granted: a
-- caller that comes late takes what accrued meanwhile (while it fits the bucket)
-- instead of losing it. Granted tokens must be spent at once.
--
-- The bucket refills at the LOWEST rate any consumer asked for during the last
-- `hold` microseconds: a consumer that backs off (adaptive limit, pause, lower
-- override just read) slows the whole group at once, and a raise takes effect
-- once every consumer has seen it (at most `hold` later).
--
-- Guarantee: over any window of t seconds the group is granted at most
-- burst + rate * t tokens, rate being the lowest one asked for meanwhile.
--
-- KEYS: 1 limiter hash {drain:<group>}:limiter
--         fields: tokens (float), ts (us), low_rate (tokens/s), low_until (us)
-- ARGV: 1 rate in tokens/s (> 0)
--       2 burst in tokens (>= 1): the bucket's capacity
--       3 want: the fewest tokens worth a grant (1 <= want <= burst)
--       4 now in microseconds since the epoch ("" = the Redis server's clock)
--       5 hold in microseconds: how long a lower rate stays in force
--       6 ttl of the hash in milliseconds (idle state expires)
--       7 most: the most tokens to grant (want <= most)
-- Returns {granted (0, or want..most), wait_us (0 when granted), rate in force (string)}.

local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local most = math.max(want, tonumber(ARGV[7]) or want)
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local hold = tonumber(ARGV[5])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'low_rate', 'low_until')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
local low_rate = tonumber(state[3])
local low_until = tonumber(state[4])

-- The rate in force: the lowest asked for within `hold`; this caller's rate renews
-- the record when it is as low, or when the older record has expired.
if low_rate and low_until and now < low_until and low_rate < rate then
  rate = low_rate
else
  low_rate = rate
  low_until = now + hold
end

if not tokens or not ts then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
  ts = now
end
tokens = math.min(tokens, burst)

local granted = 0
local wait_us = 0
if tokens >= want then
  granted = math.min(most, math.floor(tokens))
  tokens = tokens - granted
else
  wait_us = math.ceil((want - tokens) * 1000000 / rate)
end

-- %.17g / %.0f: tostring() keeps only 14 digits, too few for microsecond times.
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'ts', string.format('%.0f', ts), 'low_rate', string.format('%.17g', low_rate),
  'low_until', string.format('%.0f', low_until))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[6]))
return {granted, wait_us, string.format('%.17g', rate)}
