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
port=8311
ctx=$(( (ptok * 2 + otok * 2 + 64) ))
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

wait_up() {  # url
    for _ in $(seq 1 600); do
        curl -sf "$1/v1/models" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "server exited" >&2; return 1; }
        sleep 0.2
    done
    return 1
}

bench() {  # label
    "$bin" bench serve --url "http://127.0.0.1:$port" --clients "$clients" --requests "$requests" \
        --prompt-tokens "$ptok" --output-tokens "$otok" --max-prompt-tokens $((ptok * 2)) \
        --max-output-tokens $((otok * 2)) --text "$root/data/corpora/austen.txt" \
        --tokenizer "$model" --label "$1" --out "$results"
}

run_ours() {  # label policy
    OMP_NUM_THREADS=$threads "$bin" serve --model "$model" --port $port --policy "$2" \
        --max-seqs "$slots" --kv-cache-memory 512M >"$out/$1.log" 2>&1 &
    pid=$!
    wait_up "http://127.0.0.1:$port"
    bench "$1"
    kill "$pid"; wait "$pid" || true; pid=""
}

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
run_ours zerospeed-splitfuse split_fuse
run_ours zerospeed-prefill-first prefill_first
if [ -n "$llama" ]; then
    echo "== llama.cpp: $("$llama" --version 2>&1 | head -2 | tr '\n' ' ')"
    "$llama" -m "$model" --port $port -np "$slots" -cb -t "$threads" -c $((ctx * slots)) \
        --no-webui >"$out/llama.log" 2>&1 &
    pid=$!
    wait_up "http://127.0.0.1:$port"
    bench llama.cpp
    kill "$pid"; wait "$pid" || true; pid=""
fi
"$bin" bench serve --plot-only --out "$results" --plot "$out/serve.svg"
echo "results: $results, plot: $out/serve.svg"
