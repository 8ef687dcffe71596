-- wrk script of benchmarks/gate.py and benchmarks/scale.py: POST one JSON body per request with a
-- bearer token and an Idempotency-Key, count the answers, print one machine-readable result line.
--
-- Configured through the environment (wrk passes it to every thread's Lua state):
--   BENCH_BODY     the JSON body, sent as is
--   BENCH_TOKEN    the bearer token of the Authorization header
--   BENCH_EXPECT   the expected status (any other is counted as unexpected)
--   BENCH_PATH     the path (default /v1/actions)
--   BENCH_KEY      a fixed Idempotency-Key (the replay path); unset: a fresh key per request
--   BENCH_NONCE    prefix of the fresh keys, unique per run (keys never collide across runs)
--   BENCH_PREFER   the Prefer header (e.g. wait=30); unset: none
--   BENCH_RATE     requests per second for all threads together; unset or 0: as fast as answered
--   BENCH_THREADS  the -t given to wrk (the rate is shared between threads)
--
-- The result line starts with WRK_RESULT and holds a JSON object: requests, duration_us, the
-- latency percentiles in microseconds, the status counts, how many answers were unexpected or
-- carried Idempotent-Replayed: true, and wrk's socket errors.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000000 + tonumber(now_ts.tv_nsec) / 1000
end

local threads = {}
local next_thread_id = 0

function setup(thread)
  next_thread_id = next_thread_id + 1
  thread:set("thread_id", next_thread_id)
  table.insert(threads, thread)
end

-- Per-thread state (each wrk thread runs its own Lua state).
local path, body, headers, fixed_key, prefix, expect
local counter = 0
local interval_us, next_slot_us = 0, 0
statuses = {}
unexpected = 0
replayed = 0

function init(_args)
  path = os.getenv("BENCH_PATH") or "/v1/actions"
  body = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is required")
  expect = tonumber(os.getenv("BENCH_EXPECT") or "202")
  fixed_key = os.getenv("BENCH_KEY")
  prefix = (os.getenv("BENCH_NONCE") or tostring(os.time())) .. "-t" .. tostring(thread_id) .. "-"
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or ""),
  }
  local prefer = os.getenv("BENCH_PREFER")
  if prefer and prefer ~= "" then
    headers["Prefer"] = prefer
  end
  local rate = tonumber(os.getenv("BENCH_RATE") or "0")
  local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
  if rate > 0 then
    interval_us = thread_count * 1000000 / rate
  end
end

-- Pacing (BENCH_RATE): each request takes the thread's next free slot; a slot that has already
-- passed is not made up for, so an overloaded server sees fewer requests, not a burst.
if os.getenv("BENCH_RATE") and tonumber(os.getenv("BENCH_RATE")) > 0 then
  function delay()
    local now = now_us()
    local slot = math.max(next_slot_us, now)
    next_slot_us = slot + interval_us
    return math.floor((slot - now) / 1000)
  end
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = fixed_key or (prefix .. tostring(counter))
  return wrk.format("POST", path, headers, body)
end

function response(status, response_headers, _body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= expect then
    unexpected = unexpected + 1
  end
  local flag = response_headers["idempotent-replayed"] or response_headers["Idempotent-Replayed"]
  if flag == "true" then
    replayed = replayed + 1
  end
end

local function json_object(pairs_list)
  local parts = {}
  for _, pair in ipairs(pairs_list) do
    table.insert(parts, string.format("%q:%s", pair[1], pair[2]))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, _requests)
  local status_totals, total_unexpected, total_replayed = {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      status_totals[status] = (status_totals[status] or 0) + count
    end
    total_unexpected = total_unexpected + thread:get("unexpected")
    total_replayed = total_replayed + thread:get("replayed")
  end
  local status_pairs = {}
  for status, count in pairs(status_totals) do
    table.insert(status_pairs, { tostring(status), tostring(count) })
  end
  local errors = summary.errors
  io.write(
    "WRK_RESULT "
      .. json_object({
        { "requests", tostring(summary.requests) },
        { "duration_us", tostring(summary.duration) },
        { "p50_us", tostring(latency:percentile(50)) },
        { "p90_us", tostring(latency:percentile(90)) },
        { "p99_us", tostring(latency:percentile(99)) },
        { "max_us", tostring(latency.max) },
        { "statuses", json_object(status_pairs) },
        { "unexpected", tostring(total_unexpected) },
        { "replayed", tostring(total_replayed) },
        {
          "socket_errors",
          tostring(errors.connect + errors.read + errors.write + errors.timeout),
        },
      })
      .. "\n"
  )
end
