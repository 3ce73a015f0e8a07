#!/usr/bin/env bash
# Where a decoded token's time goes between and inside OpenMP regions: `zerospeed generate`
# decodes 100 tokens after decode_ab.sh's 557-token prompt under an LD_PRELOAD shim
# (omp_regions.c, built here with cc) that timestamps every multi-thread region at libgomp's
# entry; prints, per outlined region function (named by addr2line), how many of the last 4096
# regions ran it and the medians of the time inside it and of the serial time before it (us).
#
# Usage: bench/quant/region_times.sh BUILD FILE.gguf   (THREADS default 2, KV default bf16)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$1 file=$2
. "$root/bench/quant/ab_lib.sh"
shim=$build/bench/omp_regions.so
cc -O2 -shared -fPIC "$root/bench/quant/omp_regions.c" -o "$shim" -ldl
log=$(mktemp)
OMP_NUM_THREADS=${THREADS:-2} LD_PRELOAD=$shim "$build/bin/zerospeed" generate --model "$file" \
    --prompt "$(ab_prompt "$root")" --max-tokens 100 --temperature 0 --ignore-eos --dtype auto \
    --kv-cache-dtype "${KV:-bf16}" 2>&1 >/dev/null | grep '^EV ' >"$log"
for f in $(awk '{print $2}' "$log" | sort | uniq); do
    n=$(awk -v f="$f" '$2==f' "$log" | wc -l)
    d=$(awk -v f="$f" '$2==f {print $3}' "$log" | median)
    g=$(awk -v f="$f" '$2==f {print $4}' "$log" | median)
    name=$(addr2line -f -C -e "$build/bin/zerospeed" "$f" | head -1 | cut -c1-90)
    printf '%6d regions  in %7.2f us  before %6.2f us  %s\n' "$n" "$d" "$g" "$name"
done
rm -f "$log"
