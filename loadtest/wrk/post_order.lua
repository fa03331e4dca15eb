-- wrk script: POST /v1/orders with a distinct user per request (per-user limits never
-- bite), reporting one JSON line of results so the benchmark scripts can read it.
--   SALE (default "bench"), SKU (default "SKU-1"), IDEMPOTENCY=1 adds a unique key.
--   RATE and CONNECTIONS: pace the load to about RATE requests/s in all (each connection
--   waits a random think time averaging CONNECTIONS/RATE s between requests), to read
--   latency below the maximum rate. Without RATE wrk sends as fast as answers come.
local counter = 0
thread_id = 0  -- global: setup() overwrites it in each thread
local threads = {}
local sale = os.getenv("SALE") or "bench"
local sku = os.getenv("SKU") or "SKU-1"
local idempotency = os.getenv("IDEMPOTENCY") == "1"
local rate = tonumber(os.getenv("RATE") or "")
local mean_delay_ms = nil
if rate and rate > 0 then
  mean_delay_ms = (tonumber(os.getenv("CONNECTIONS") or "64")) * 1000 / rate
end

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + thread_id)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  statuses = {}
end

function request()
  counter = counter + 1
  local user = "u" .. thread_id .. "-" .. counter
  local body = '{"sale_id":"' .. sale .. '","sku":"' .. sku ..
    '","quantity":1,"user_id":"' .. user .. '","attributes":{"channel":"bench"}}'
  local headers = nil
  if idempotency then
    -- wrk.format uses these headers instead of wrk.headers, so repeat Content-Type.
    headers = {["Content-Type"] = "application/json",
               ["Idempotency-Key"] = "k-" .. thread_id .. "-" .. counter}
  end
  return wrk.format(nil, nil, headers, body)
end

if mean_delay_ms then
  function delay()
    return math.random() * 2 * mean_delay_ms
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, count in pairs(s) do
      by_status[tostring(code)] = (by_status[tostring(code)] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(by_status) do
    table.insert(parts, string.format('"%s":%d', code, count))
  end
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"req_per_s":%.1f,"p50_ms":%.2f,"p90_ms":%.2f,' ..
    '"p99_ms":%.2f,"max_ms":%.2f,"errors":%d,"timeouts":%d,"non_2xx":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.timeout, summary.errors.status, table.concat(parts, ",")))
end
