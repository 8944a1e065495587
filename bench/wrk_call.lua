-- wrk script for bench/load.py: synchronous tool calls, every answer checked.
--
-- Each request is POST {path} with a bearer token and a JSON body whose tag is unique
-- ("t<thread>-<n>"); the backend's tool answers that tag. A 200 whose tag is not one this
-- thread sent and has not yet seen answered counts as a wrong result. Each answer is recorded
-- as "R <status> <finished, µs of CLOCK_MONOTONIC> <latency µs or -1> <error type>", so the
-- caller can cut the steady-state window on the same clock as its own time.monotonic().
-- Latency is known for tagged answers only (an error body does not carry the tag); wrk's own
-- histogram (all responses) is in the WRKJSON summary line.
--
-- Arguments after the URL: path token kind(echo|sleep|sleep_idempotent) seconds wait_s
-- Environment: BENCH_WRK_RECORDS, the file done() writes the records to; BENCH_WRK_RAMP_S, if
-- set, the seconds over which the users' first calls start (each at a random moment in them)
-- instead of all at once. Without it, users of a fixed-length tool stay in step: every call of
-- a wave arrives together, and the wave's last one waits for the others to be started.
-- Latency is counted from when a request is sent, after its delay.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local now_buffer = ffi.new("bench_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_buffer)
  return tonumber(now_buffer.tv_sec) * 1000000 + math.floor(tonumber(now_buffer.tv_nsec) / 1000)
end

-- Main state: the threads, so done() can collect what each recorded.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

-- Thread state.
local path, headers, body_format
records, details, sent = {}, {}, 0
local pending = {}

local ramp_us = math.floor(tonumber(os.getenv("BENCH_WRK_RAMP_S") or "0") * 1000000)
local started_us

if ramp_us > 0 then
  -- wrk calls delay() before each request; only the first requests, sent within the ramp, wait.
  function delay()
    if now_us() - started_us < ramp_us then
      return math.random(0, math.floor(ramp_us / 1000))
    end
    return 0
  end
end

function init(args)
  started_us = now_us()
  math.randomseed(started_us + thread_id)
  path = args[1]
  headers = { ["Authorization"] = "Bearer " .. args[2], ["Content-Type"] = "application/json" }
  local kind, seconds, wait_s = args[3], args[4], args[5]
  if kind == "echo" then
    body_format = '{"arguments":{"text":"%s"},"timeout_s":' .. wait_s .. "}"
  else
    body_format = '{"arguments":{"seconds":' .. seconds .. ',"tag":"%s"},"timeout_s":' .. wait_s .. "}"
  end
end

function request()
  sent = sent + 1
  local tag = "t" .. thread_id .. "-" .. sent
  pending[tag] = now_us()
  return wrk.format("POST", path, headers, string.format(body_format, tag))
end

function response(status, _, body)
  local finished = now_us()
  local latency, kind = -1, "-"
  if status == 200 then
    local tag = string.match(body, '"text"%s*:%s*"(t%d+%-%d+)"')
    local started = tag and pending[tag]
    if started then
      latency = finished - started
      pending[tag] = nil
    else
      kind = "wrong_result"
    end
  elseif status == 202 then
    kind = "not_finished_within_timeout_s"
  else
    kind = string.match(body, '"error"%s*:%s*"([^"]*)"') or "unparsed"
  end
  if kind ~= "-" and kind ~= "wrong_result" then
    local key = status .. " " .. kind
    if not details[key] then
      details[key] = string.gsub(string.sub(body, 1, 400), "[\r\n]", " ")
    end
  end
  records[#records + 1] = string.format("R %d %d %d %s", status, finished, latency, kind)
end

local function number(x)
  return string.format("%.0f", x)
end

function done(summary, latency, _)
  local out = assert(io.open(os.getenv("BENCH_WRK_RECORDS"), "w"))
  local sent_total, answered_total = 0, 0
  for _, thread in ipairs(threads) do
    local thread_records = thread:get("records")
    for i = 1, #thread_records do
      out:write(thread_records[i], "\n")
    end
    for key, body in pairs(thread:get("details")) do
      out:write("D ", key, "\t", body, "\n")
    end
    sent_total = sent_total + thread:get("sent")
    answered_total = answered_total + #thread_records
  end
  out:close()
  local e = summary.errors
  io.write(
    'WRKJSON {"duration_us":', number(summary.duration),
    ',"requests":', number(summary.requests),
    ',"sent":', number(sent_total),
    ',"answered":', number(answered_total),
    ',"errors":{"connect":', number(e.connect), ',"read":', number(e.read),
    ',"write":', number(e.write), ',"status":', number(e.status), ',"timeout":', number(e.timeout), "}",
    ',"latency_us":{"p50":', number(latency:percentile(50)), ',"p90":', number(latency:percentile(90)),
    ',"p99":', number(latency:percentile(99)), ',"max":', number(latency.max),
    ',"mean":', number(latency.mean), "}}\n"
  )
end
