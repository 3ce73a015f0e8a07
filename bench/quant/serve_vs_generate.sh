#!/usr/bin/env bash
# The server's single stream against `generate` (issue 19: within 10%), measured as pairs so a
# shared machine's drift cancels: per round and per build, `zerospeed bench serve` (1 client,
# 4 streamed requests of 256 prompt / 64 output tokens) reads the server's p50 TPOT, and right
# after it `zerospeed generate` decodes 64 greedy tokens after a ~250-token Austen prompt; the
# round's ratio is TPOT / generate's ms per token. Every build's server stays up through the
# rounds (SmolLM2-135M Q4_1, `--kv-cache-memory 256M`, as tools/run_benchmarks.sh's decode
# section). Prints each round, then per build the medians and the median of the rounds' ratios.
#
# Usage: bench/quant/serve_vs_generate.sh BUILD...   (THREADS default 2, ROUNDS default 9,
# PORT default 8400: build i listens on PORT + i)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/bench/quant/ab_lib.sh"
t=${THREADS:-2} rounds=${ROUNDS:-9} port=${PORT:-8400}
gguf=$("$root/tools/fetch_smollm2.sh")
prompt=$(head -c 1000 "$root/data/corpora/austen.txt")
log=$(mktemp)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$log"' EXIT
i=0
for b in "$@"; do
    OMP_NUM_THREADS=$t "$b/bin/zerospeed" serve --model "$gguf" --port $((port + i)) \
        --kv-cache-memory 256M >/dev/null 2>&1 &
    pids+=($!)
    i=$((i + 1))
done
for j in $(seq 0 $((i - 1))); do
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$((port + j))/v1/models" >/dev/null 2>&1 && break
        sleep 0.2
    done
done
for r in $(seq 1 "$rounds"); do
    j=0
    for b in "$@"; do
        tpot=$("$b/bin/zerospeed" bench serve --url "http://127.0.0.1:$((port + j))" --clients 1 \
            --requests 4 --prompt-tokens 256 --output-tokens 64 --max-prompt-tokens 256 \
            --max-output-tokens 64 --text "$root/data/corpora/austen.txt" --tokenizer "$gguf" |
            tail -1 | awk '{print $8 * 1000}')
        tps=$(OMP_NUM_THREADS=$t "$b/bin/zerospeed" generate --model "$gguf" --prompt "$prompt" \
            --max-tokens 64 --temperature 0 --ignore-eos 2>&1 >/dev/null |
            sed -n 's/.*generated: .*(\([0-9.]*\) tokens\/s).*/\1/p')
        gen=$(awk -v x="$tps" 'BEGIN {printf "%.2f", 1000 / x}')
        ratio=$(awk -v s="$tpot" -v g="$gen" 'BEGIN {printf "%.3f", s / g}')
        echo "round $r build $j serve_tpot_ms $tpot generate_ms $gen ratio $ratio" | tee -a "$log"
        j=$((j + 1))
    done
done
j=0
for b in "$@"; do
    col() { awk -v j=$j -v k="$1" '$4 == j {for (f = 5; f < NF; f += 2) if ($f == k) print $(f + 1)}' "$log" | median; }
    echo "$b: $t threads, $rounds rounds: serve p50 TPOT median $(col serve_tpot_ms) ms," \
        "generate median $(col generate_ms) ms, median of the rounds' ratios $(col ratio)"
    j=$((j + 1))
done
