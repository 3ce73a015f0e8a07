#!/usr/bin/env bash
# Quantized decode, zerospeed vs llama.cpp, alternating (ours, theirs, ours, theirs, ...) so both
# see the same load on a shared machine: for each GGUF file and round, `zerospeed generate` and
# `llama-cli` decode 64 greedy tokens after the same 557-token prompt (the context llama-bench's
# `-p 0 -n 64 -d 512` measures, for llama.cpp builds without -d), and the STREAM triad
# (ops_bench BM_stream_triad) is measured before every round. Prints one line per run and a
# summary: medians, ours / llama.cpp, and the roofline fraction (decode tokens/s x GGUF bytes /
# median triad bytes/s; SmolLM2 ties its head, so every weight byte is read once per token).
#
# Usage: bench/quant/decode_ab.sh BUILD LLAMA_CLI FILE.gguf...
#   LLAMA_CLI may be llama-bench (builds whose llama-cli lacks -no-cnv): then theirs is
#   `llama-bench -p 0 -n 64 -d 512` (one repetition), the issue's own measure; `-` runs no
#   llama.cpp (a before / after A/B with BASE alone: more rounds in the same time).
#   ROUNDS (default 3), THREADS (default 1), AB_FUSE=1 adds a ZS_DECODE_FUSE=0 run per round,
#   BASE=OTHER_BUILD adds a run of OTHER_BUILD's zerospeed per round (before / after a change),
#   KV=DTYPE passes --kv-cache-dtype DTYPE to zerospeed (default auto: the compute dtype, f32 on
#   CPUs without native bf16; llama-bench's default cache is f16, so KV=bf16 reads the same KV
#   bytes per token as llama.cpp).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1 cli=$2
shift 2
rounds=${ROUNDS:-3} t=${THREADS:-1}
. "$root/bench/quant/ab_lib.sh"
prompt=$(ab_prompt "$root")
ours() {  # decode tokens/s of one zerospeed run (of $bin, default BUILD's)
    OMP_NUM_THREADS=$t "${bin:-$build/bin/zerospeed}" generate --model "$1" --prompt "$prompt" \
        --max-tokens 64 --temperature 0 --ignore-eos --dtype auto --kv-cache-dtype "${KV:-auto}" \
        2>&1 >/dev/null |
        sed -n 's/.*generated: .*(\([0-9.]*\) tokens\/s).*/\1/p'
}
theirs() {  # decode tokens/s of one llama-cli run (its "eval time" line, not the prompt's)
    if [ "$(basename "$cli")" = llama-bench ]; then  # newer llama.cpp: llama-cli has no -no-cnv
        llama_bench_ts "$cli" "$1" "$t" -p 0 -n 64 -d 512
        return
    fi
    "$cli" -m "$1" -p "$prompt" -n 64 -t "$t" --temp 0 -no-cnv --ignore-eos </dev/null 2>&1 |
        grep -v 'prompt eval' | sed -n 's/.* eval time .*, *\([0-9.]*\) tokens per second.*/\1/p'
}
triad() {
    OMP_NUM_THREADS=$t "$build/bench/ops_bench" --benchmark_filter=BM_stream_triad \
        --benchmark_min_time=0.3 2>/dev/null | grep -o 'GB/s=[0-9.]*' | cut -d= -f2
}
log=$(mktemp)
for r in $(seq "$rounds"); do
    echo "round $r triad $(triad) GB/s" | tee -a "$log"
    for f in "$@"; do
        q=$(basename "$f" .gguf)
        echo "round $r $q ours $(ours "$f")" | tee -a "$log"
        if [ "$cli" != - ]; then
            echo "round $r $q llama $(theirs "$f")" | tee -a "$log"
        fi
        if [ "${AB_FUSE:-0}" = 1 ]; then
            echo "round $r $q unfused $(ZS_DECODE_FUSE=0 ours "$f")" | tee -a "$log"
        fi
        if [ -n "${BASE:-}" ]; then
            echo "round $r $q base $(bin=$BASE/bin/zerospeed ours "$f")" | tee -a "$log"
        fi
    done
done
tri=$(awk '$3=="triad" {print $4}' "$log" | median)
echo "summary ($rounds rounds, $t thread(s), kv ${KV:-auto}, median triad $tri GB/s):" \
    "file ours llama ratio roofline"
for f in "$@"; do
    q=$(basename "$f" .gguf)
    o=$(ab_col "$log" "$q" ours)
    l=$(ab_col "$log" "$q" llama)
    [ "$cli" != - ] || l=none  # no llama.cpp runs: its columns read none
    extra=""
    if [ "${AB_FUSE:-0}" = 1 ]; then
        extra=" unfused $(ab_col "$log" "$q" unfused)"
    fi
    if [ -n "${BASE:-}" ]; then
        b=$(ab_col "$log" "$q" base)
        extra="$extra base $b ($(awk -v o="$o" -v b="$b" 'BEGIN { printf "%.2fx", o / b }'))"
    fi
    awk -v q="$q" -v o="$o" -v l="$l" -v b="$(stat -c %s "$f")" -v g="$tri" -v x="$extra" \
        'BEGIN { r = l == "none" ? "none none" : sprintf("%.1f %.2fx", l, o / l)
                 printf "%s %.1f %s %.2f%s\n", q, o, r, o * b / (g * 1e9), x }'
done
rm -f "$log"
