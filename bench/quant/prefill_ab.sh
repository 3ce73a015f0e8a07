#!/usr/bin/env bash
# Quantized prefill, zerospeed vs llama.cpp, alternating (ours, theirs, ours, ...) so both see the
# same load on a shared machine: for each GGUF file and round, `zerospeed generate` prefills the
# 557-token prompt decode_ab.sh uses (one generated token; its "prompt: N tokens in S s (X
# tokens/s)" line) and `llama-bench -p 512 -n 0 -r 1` measures pp512. Prints one line per run and
# a summary of medians and ours / llama.cpp.
#
# Usage: bench/quant/prefill_ab.sh BUILD LLAMA_BENCH FILE.gguf...
#   ROUNDS (default 3), THREADS (default 2), BASE=OTHER_BUILD adds a run of OTHER_BUILD's
#   zerospeed per round (before / after a change), ROUTES=1 adds ZS_QUANT_PREFILL=dequant and
#   ZS_QUANT_PREFILL=int8 runs of BUILD per round (qgemv.h QuantPrefill).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1 bench=$2
shift 2
rounds=${ROUNDS:-3} t=${THREADS:-2}
. "$root/bench/quant/ab_lib.sh"
prompt=$(ab_prompt "$root")
ours() {  # prefill tokens/s of one zerospeed run (of $bin, default BUILD's)
    OMP_NUM_THREADS=$t "${bin:-$build/bin/zerospeed}" generate --model "$1" --prompt "$prompt" \
        --max-tokens 1 --temperature 0 --dtype auto 2>&1 >/dev/null |
        sed -n 's/.*prompt: .*(\([0-9.]*\) tokens\/s).*generated.*/\1/p'
}
theirs() { llama_bench_ts "$bench" "$1" "$t" -p 512 -n 0; }  # pp512 tokens/s
log=$(mktemp)
for r in $(seq "$rounds"); do
    for f in "$@"; do
        q=$(basename "$f" .gguf)
        echo "round $r $q ours $(ours "$f")" | tee -a "$log"
        echo "round $r $q llama $(theirs "$f")" | tee -a "$log"
        if [ -n "${BASE:-}" ]; then
            echo "round $r $q base $(bin=$BASE/bin/zerospeed ours "$f")" | tee -a "$log"
        fi
        if [ "${ROUTES:-0}" = 1 ]; then
            echo "round $r $q dequant $(ZS_QUANT_PREFILL=dequant ours "$f")" | tee -a "$log"
            echo "round $r $q int8 $(ZS_QUANT_PREFILL=int8 ours "$f")" | tee -a "$log"
        fi
    done
done
echo "summary ($rounds rounds, $t thread(s)): file ours llama ratio [base (ours/base)]"
for f in "$@"; do
    q=$(basename "$f" .gguf)
    col() { ab_col "$log" "$q" "$1"; }
    o=$(col ours) l=$(col llama) extra=""
    if [ -n "${BASE:-}" ]; then
        b=$(col base)
        extra=" base $b ($(awk -v o="$o" -v b="$b" 'BEGIN { printf "%.2fx", o / b }'))"
    fi
    if [ "${ROUTES:-0}" = 1 ]; then extra="$extra dequant $(col dequant) int8 $(col int8)"; fi
    awk -v q="$q" -v o="$o" -v l="$l" -v x="$extra" \
        'BEGIN { printf "%s %.1f %.1f %.2fx%s\n", q, o, l, o / l, x }'
done
rm -f "$log"
