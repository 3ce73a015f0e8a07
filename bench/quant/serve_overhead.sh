#!/usr/bin/env bash
# How much of the server's time per output token lies outside its engine forward: `zerospeed
# serve` (SmolLM2-135M Q4_1, as tools/run_benchmarks.sh's decode section) answers one client's
# REQUESTS requests of 256 prompt / 128 output tokens; from its /metrics, the decode forwards'
# time is zerospeed_forward_seconds_sum less the prefill forwards' (each request's first token:
# its TTFT), per decode token; against the mean TPOT, the rest is scheduling, sampling, the
# stream's write and waiting for a core (the HTTP thread and the client share the machine).
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
     $1 == "zerospeed_time_to_first_token_seconds_sum" {ts = $2}
     $1 == "zerospeed_time_to_first_token_seconds_count" {tc = $2}
     $1 == "zerospeed_generation_tokens_total" {gen = $2}
     $1 == "zerospeed_time_per_output_token_seconds_sum" {ps = $2}
     $1 == "zerospeed_time_per_output_token_seconds_count" {pc = $2}
     END {
         if (gen <= tc || pc == 0) { print "serve_overhead: no decode steps measured"; exit 1 }
         d = (fs - ts) / (gen - tc) * 1000; t = ps / pc * 1000
         printf "threads %s: %d decode tokens, forward %.2f ms per decode step, TPOT %.2f ms, outside the forward %.2f ms (%.0f%%)\n",
             ENVIRON["THREADS"] == "" ? 2 : ENVIRON["THREADS"], gen - tc, d, t, t - d, (t - d) / t * 100
     }' "$metrics"
