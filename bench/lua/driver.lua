-- wrk driver for every scenario. BENCH_DATA names the data file generated from the fixture
-- (request pools and each scenario's weights), BENCH_SCENARIO the scenario to run and
-- BENCH_OUT the JSON file done() writes. Settings travel in the environment rather than as
-- script arguments because done() runs in wrk's setup state, which never sees init()'s args.
local data_file = os.getenv("BENCH_DATA")
local scenario_name = os.getenv("BENCH_SCENARIO")
local out_file = os.getenv("BENCH_OUT")
local nonce = os.getenv("BENCH_NONCE") or ""
local pause_ms = tonumber(os.getenv("BENCH_PAUSE_MS") or "0")

-- wrk waits this long after an answer before a connection sends its next request; defined
-- only when asked for, since wrk takes the mere presence of delay() as a reason to call it.
if pause_ms > 0 then
  function delay() return pause_ms end
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local data
local choices = {}
local total = 0
local counter = 0

local function build(req)
  local headers = { ["Accept"] = "application/json" }
  if req.token then headers["Authorization"] = "Token " .. req.token end
  if req.body then headers["Content-Type"] = "application/json" end
  return wrk.format(req.method, req.path, headers, req.body)
end

-- Requests are formatted once here: building one per call is what slows wrk down.
local function from_pool(entries)
  local built = {}
  for i, req in ipairs(entries) do built[i] = build(req) end
  local n = #built
  return function() return built[math.random(n)] end
end

-- Titles must be unique across threads and runs, so a new request per call.
local function create_article()
  counter = counter + 1
  local title = string.format("bench %s %s %d-%d", data.run, nonce, thread_id, counter)
  local body = string.format(
    '{"article":{"title":"%s","description":"written under load",' ..
    '"body":"A short article written by the benchmark under load.","tagList":["%s"]}}',
    title, data.tags[math.random(#data.tags)])
  return build({
    method = "POST", path = data.prefix .. "/articles",
    token = data.authors[math.random(#data.authors)], body = body,
  })
end

function init(args)
  math.randomseed(os.time() * 1000 + thread_id)
  data = dofile(data_file)
  local mix = data.scenarios[scenario_name]
  assert(mix, "unknown scenario: " .. tostring(scenario_name))
  for _, part in ipairs(mix) do
    local make
    if part.kind == "create" then make = create_article else make = from_pool(data.pools[part.kind]) end
    total = total + part.weight
    choices[#choices + 1] = { total, make }
  end
end

function request()
  if #choices == 1 then return choices[1][2]() end
  local r = math.random() * total
  for i = 1, #choices do
    if r < choices[i][1] then return choices[i][2]() end
  end
  return choices[#choices][2]()
end

local function number(x)
  if x ~= x or x == math.huge or x == -math.huge then return 0 end
  return x
end

function done(summary, latency, requests)
  local e = summary.errors
  local lat = { min = 0, mean = 0, stdev = 0, max = 0 }
  local pct = { 50, 90, 95, 99, 99.9 }
  local p = {}
  if summary.requests > 0 then
    lat = { min = latency.min, mean = number(latency.mean), stdev = number(latency.stdev), max = latency.max }
    for i, q in ipairs(pct) do p[i] = latency:percentile(q) end
  else
    for i = 1, #pct do p[i] = 0 end
  end
  local f = assert(io.open(out_file, "w"))
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "stdev": %.1f, "max": %d, ' ..
    '"p50": %d, "p90": %d, "p95": %d, "p99": %d, "p99.9": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    lat.min, lat.mean, lat.stdev, lat.max, p[1], p[2], p[3], p[4], p[5]))
  f:close()
end
