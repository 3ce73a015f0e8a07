#!/usr/bin/env bash
# Sequence parallelism throughput: training tokens/s of one rank (sp 1), two ranks that each take
# half of every sequence, by Ulysses (sp 2: `--sp 2`) and by ring attention (ring 2: `--ring 2`,
# zig-zag chunks) and, for scale, two data-parallel ranks (dp 2: each its own whole sequences),
# all at the same threads per rank, on a Llama-shaped model (hidden 256, 4 layers, 8 heads, 4 KV
# heads, bf16, ZeRO-1) at a long sequence. Prints the median tokens/s of the steps after the
# first two, and each against sp 1 and dp 2; then the bytes one rank sends per step for
# attention under sp 2 and ring 2 at that length (`zerospeed estimate`: parallel::ulysses_volume and
# parallel::ring_volume, which estimate_test holds to the bytes the cores hand their groups).
#
# Usage: bench/train/sp_bench.sh BIN_DIR [SEQ_LEN=4096] [THREADS_PER_RANK=4] [STEPS=6]
# (BIN_DIR holds zerospeed and zerospeed-run, e.g. build/bin.) docs/BENCHMARKS.md has a run.
set -euo pipefail
bin=$1/zerospeed
run=$1/zerospeed-run
T=${2:-4096}
threads=${3:-4}
steps=${4:-6}
source "$(dirname "$0")/../bench_common.sh" spbench 2000000 0.01
cat > "$work/model.json" <<JSON
{"model_type": "llama", "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 4,
 "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 688,
 "max_position_embeddings": $T}
JSON
cat > "$work/ds.json" <<'JSON'
{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}, "bf16": {"enabled": true},
 "zero_optimization": {"stage": 1}}
JSON
rate() {  # rate NAME NP [train flags...]: median tokens/s of steps 3..STEPS
    local name=$1 np=$2
    shift 2
    OMP_NUM_THREADS=$threads "$run" --num_procs "$np" "$bin" train --model-config "$work/model.json" \
        --ds-config "$work/ds.json" --data "$work/data" --seq-len "$T" --steps "$steps" \
        --eval-batches 1 --metrics "$work/$name.csv" --no-progress "$@" >"$work/$name.log" 2>&1 ||
        { cat "$work/$name.log"; exit 1; }
    python3 - "$work/$name.csv" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["step"]) >= 3]
print(f"{statistics.median(float(r['tokens_per_s']) for r in rows):.1f}")
PY
}
sp1=$(rate sp1 1)
sp2=$(rate sp2 2 --sp 2)
ring2=$(rate ring2 2 --ring 2)
dp2=$(rate dp2 2)
echo "seq-len $T, $threads threads per rank, $(nproc) CPUs:"
echo "  sp 1 (1 rank):    $sp1 tokens/s"
echo "  sp 2 (2 ranks):   $sp2 tokens/s  ($(python3 -c "print(f'{$sp2 / $sp1:.2f}')") x sp 1, $(python3 -c "print(f'{$sp2 / $dp2:.2f}')") x dp 2)"
echo "  ring 2 (2 ranks): $ring2 tokens/s  ($(python3 -c "print(f'{$ring2 / $sp1:.2f}')") x sp 1, $(python3 -c "print(f'{$ring2 / $dp2:.2f}')") x dp 2)"
echo "  dp 2 (2 ranks):   $dp2 tokens/s"
echo "attention bytes sent per rank per step at seq-len $T (zerospeed estimate):"
for layout in "sequence_parallel_size sp" "ring_parallel_size ring"; do
    set -- $layout
    python3 - "$work/ds.json" "$1" > "$work/ds_$2.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c[sys.argv[2]] = 2
print(json.dumps(c))
PY
    "$bin" estimate --model-config "$work/model.json" --ds-config "$work/ds_$2.json" --ranks 2 \
        --seq-len "$T" | grep -E "^ +$2 " || { echo "estimate failed for $2 2" >&2; exit 1; }
done
