-- drain_lost: record one range of offsets that Kafka deleted before the drain delivered it.
--
-- A range is counted once: the offset after the last lost one recorded per partition is
-- kept, so the same gap seen again (a new owner starting from an old committed offset)
-- adds only what was not counted yet.
--
-- KEYS: 1 the group's lost hash ({drain:<group>}:lost)
--       2 the group's list of lost ranges ({drain:<group>}:lost-ranges)
-- ARGV: 1 partition, 2 first lost offset, 3 offset after the last lost one,
--       4 detection time (unix s), 5 topic, 6 ranges kept in the list
-- Returns {first, end} actually recorded (first == end: nothing new).

local field = 'p:' .. ARGV[1]
local first = tonumber(ARGV[2])
local stop = tonumber(ARGV[3])
local seen = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
if seen > first then first = seen end
if first >= stop then return {first, first} end
redis.call('HSET', KEYS[1], field, stop)
redis.call('HINCRBY', KEYS[1], 'total', stop - first)
redis.call('RPUSH', KEYS[2], cjson.encode({topic = ARGV[5], partition = tonumber(ARGV[1]),
  first = first, ['end'] = stop, detected_at = tonumber(ARGV[4])}))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[6]), -1)
return {first, stop}
