-- load_sale: load or reload a sale's limits and stock in one step.
--
-- `loaded` is the total number of units the sale may ever accept per SKU; what is
-- left to sell is loaded - accepted - reserved, so a reload never forgets units that
-- are already sold or held. SKUs missing from a reload are no longer sold.
--
-- KEYS: 1 config hash, 2 loaded hash (hash tag {sale:<id>})
-- ARGV: 1 JSON object of config fields (see admit.lua; numbers), 2 JSON object sku -> units
-- Returns the number of SKUs loaded.

local config = cjson.decode(ARGV[1])
local stock = cjson.decode(ARGV[2])
redis.call('DEL', KEYS[1], KEYS[2])
for field, value in pairs(config) do
  redis.call('HSET', KEYS[1], field, tostring(value))
end
local count = 0
for sku, units in pairs(stock) do
  redis.call('HSET', KEYS[2], sku, string.format('%d', units))
  count = count + 1
end
return count
