#!/usr/bin/env bash
# Side-by-side serving benchmark on one GGUF model and one workload, in one run: zerospeed serve
# with Dynamic SplitFuse, zerospeed serve with prefill-first scheduling, and (when its binary is
# given) llama.cpp's llama-server with continuous batching. Results: JSON lines + an SVG plot.
#
# Usage: tools/bench_serve_peers.sh [--llama-server PATH] [--model GGUF] [--out DIR]
#            [--clients 1,2,4,8] [--requests 24] [--prompt-tokens 256] [--output-tokens 64]
#            [--threads 2] [--slots 8]
# llama-server is built by the user from llama.cpp's public source, outside this repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/bin/zerospeed
llama=""
model=""
out=$root/build/bench/serve
clients=1,2,4,8
requests=24
ptok=256
otok=64
threads=2
slots=8
while [ $# -gt 0 ]; do
    case $1 in
        --llama-server) llama=$2; shift 2 ;;
        --model) model=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --clients) clients=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --prompt-tokens) ptok=$2; shift 2 ;;
        --output-tokens) otok=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --slots) slots=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "build first (make build): $bin" >&2; exit 1; }
[ -n "$model" ] || model=$("$root/tools/fetch_smollm2.sh")
mkdir -p "$out"
results=$out/results.jsonl
rm -f "$results"
ctx=$(( (ptok * 2 + otok * 2 + 64) ))
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

wait_up() {  # url pid
    for _ in $(seq 1 600); do
        curl -sf "$1/v1/models" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || { echo "server exited" >&2; return 1; }
        sleep 0.2
    done
    return 1
}

# Every server runs at once (idle ones cost nothing) and the load points alternate between
# them, so the machine's noise falls on all of them alike.
labels=()
ports=()
start_ours() {  # label policy port
    OMP_NUM_THREADS=$threads "$bin" serve --model "$model" --port "$3" --policy "$2" \
        --max-seqs "$slots" --kv-cache-memory 512M >"$out/$1.log" 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:$3" $!
    labels+=("$1")
    ports+=("$3")
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
start_ours zerospeed-splitfuse split_fuse 8311
start_ours zerospeed-prefill-first prefill_first 8312
if [ -n "$llama" ]; then
    echo "== llama.cpp: $("$llama" --version 2>&1 | head -2 | tr '\n' ' ')"
    "$llama" -m "$model" --port 8313 -np "$slots" -cb -t "$threads" -c $((ctx * slots)) \
        --no-webui >"$out/llama.log" 2>&1 &
    pids+=($!)
    wait_up "http://127.0.0.1:8313" $!
    labels+=(llama.cpp)
    ports+=(8313)
fi
IFS=, read -r -a levels <<<"$clients"
for c in "${levels[@]}"; do
    for i in "${!labels[@]}"; do
        echo "-- ${labels[$i]}, $c client(s)"
        "$bin" bench serve --url "http://127.0.0.1:${ports[$i]}" --clients "$c" \
            --requests "$requests" --prompt-tokens "$ptok" --output-tokens "$otok" \
            --max-prompt-tokens $((ptok * 2)) --max-output-tokens $((otok * 2)) \
            --text "$root/data/corpora/austen.txt" --tokenizer "$model" --label "${labels[$i]}" \
            --out "$results" | tail -1
    done
done
"$bin" bench serve --plot-only --out "$results" --plot "$out/serve.svg"
echo "results: $results, plot: $out/serve.svg"
