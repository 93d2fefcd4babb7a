-- wrk script: one task per request, with the benchmark's ~100-byte JSON payload, as
-- `floodway bench --server URL --batch 1` sends it. See docs/benchmarks.md ("HTTP").
--
--   wrk -t 2 -c 64 -d 10s -s benches/http/enqueue.lua http://127.0.0.1:7711
--
-- Add a token with: wrk.headers["Authorization"] = "Bearer fw_..."
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"kind":"noop","payload":{"enqueued_us":1795338930123456,"sequence":        42,"order":"ord_4f1c2e9a","amount_cents":1999}}'
wrk.path = "/v1/queues/wrk/tasks"
