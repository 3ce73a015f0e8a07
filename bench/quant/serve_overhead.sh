#!/usr/bin/env bash
# How much of the server's time per output token lies outside its engine forward: `zerospeed
# serve` (SmolLM2-135M Q4_1, as tools/run_benchmarks.sh's decode section) answers one client's
# REQUESTS streamed requests of 256 prompt / 128 output tokens; from its /metrics, each engine
# step's time (zerospeed_step_seconds: scheduling, the forward, sampling, handing the request its
# token) less its forward's (zerospeed_forward_seconds) is the engine thread's own overhead per
# step, printed beside the forward's time per step and the mean TPOT the server measured.
#
# Usage: bench/quant/serve_overhead.sh BUILD   (THREADS default 2, REQUESTS default 6,
# PORT default 8330)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$1/bin/zerospeed
gguf=$("$root/tools/fetch_smollm2.sh")
port=${PORT:-8330}
url=http://127.0.0.1:$port
log=$(mktemp) metrics=$(mktemp)
OMP_NUM_THREADS=${THREADS:-2} "$bin" serve --model "$gguf" --port "$port" \
    --kv-cache-memory 256M >"$log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null || true; rm -f "$log" "$metrics"' EXIT
for _ in $(seq 1 300); do curl -sf "$url/v1/models" >/dev/null 2>&1 && break; sleep 0.2; done
"$bin" bench serve --url "$url" --clients 1 --requests "${REQUESTS:-6}" --prompt-tokens 256 \
    --output-tokens 128 --max-prompt-tokens 256 --max-output-tokens 128 \
    --text "$root/data/corpora/austen.txt" --tokenizer "$gguf" >/dev/null
curl -sf "$url/metrics" >"$metrics"
awk '$1 == "zerospeed_forward_seconds_sum" {fs = $2}
     $1 == "zerospeed_step_seconds_sum" {ss = $2}
     $1 == "zerospeed_step_seconds_count" {sc = $2}
     $1 == "zerospeed_time_per_output_token_seconds_sum" {ps = $2}
     $1 == "zerospeed_time_per_output_token_seconds_count" {pc = $2}
     END {
         if (sc == 0 || pc == 0) { print "serve_overhead: no steps measured"; exit 1 }
         o = (ss - fs) / sc * 1000; t = ps / pc * 1000
         printf "threads %s: %d steps, outside the forward %.3f ms per step (%.1f%% of the steps), mean TPOT %.2f ms\n",
             ENVIRON["THREADS"] == "" ? 2 : ENVIRON["THREADS"], sc, o, (ss - fs) / ss * 100, t
     }' "$metrics"
