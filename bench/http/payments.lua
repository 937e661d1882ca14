-- wrk script of bench/http/run: POST a payment.
--   wrk ... -s payments.lua -- PATH MODE RUN
-- PATH: /payments (through the idempotency middleware) or /bench/payments-plain
-- (the same business logic without the idempotency calls).
-- MODE: new    a new Idempotency-Key on every request (RUN-thread-counter);
--       replay the same key per thread (created before the run): every answer a replay.
-- done() prints one line "RESULT ..." that bench/http/run reads.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local path, mode, prefix
local counter = 0
local body = '{"amount": 4200, "currency": "EUR"}'
function init(args)
  path = args[1] or "/payments"
  mode = args[2] or "new"
  prefix = (args[3] or "run") .. "-" .. tid .. "-"
end

function request()
  local key
  if mode == "replay" then
    key = "replay-" .. tid
  else
    counter = counter + 1
    key = prefix .. counter
  end
  return wrk.format("POST", path, { ["Idempotency-Key"] = key, ["Content-Type"] = "application/json" }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d socket_errors=%d http_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
