#!/usr/bin/env bash
# DeepSpeed-MoE expert parallelism throughput and traffic: training tokens/s of two data-parallel
# ranks holding every expert (ep 1) against the same two ranks with the experts sharded (ep 2:
# 4 of the 8 experts each, routed rows exchanged with all_to_all_v), at the same threads per
# rank, on a Mixtral-shaped model (hidden 256, 4 layers, 8 experts of 512, top-2, f32, ZeRO-1).
# Prints the median tokens/s of the steps after the first two, ep 2 / ep 1, and the all-to-all
# bytes rank 0 sent per step (the metrics CSV's a2a_bytes) against the formula for uniform
# routing: per MoE layer and micro-batch, (ep-1) E/ep x 8 bytes of counts plus the
# N k (ep-1)/ep rows bound for the other rank, C values each way forward (input out, f32
# output back) and backward (output gradient out, input gradient back): 4 x C x 4 bytes a row.
#
# Usage: bench/train/ep_bench.sh BIN_DIR [SEQ_LEN=256] [THREADS_PER_RANK=1] [STEPS=8]
# (BIN_DIR holds zerospeed and zerospeed-run, e.g. build/bin.) docs/BENCHMARKS.md has a run.
set -euo pipefail
bin=$1/zerospeed
run=$1/zerospeed-run
T=${2:-256}
threads=${3:-1}
steps=${4:-8}
source "$(dirname "$0")/../bench_common.sh" epbench 2000000 0.01
cat > "$work/model.json" <<JSON
{"model_type": "mixtral", "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 4,
 "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 512,
 "num_local_experts": 8, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.01,
 "output_router_logits": true, "max_position_embeddings": $T}
JSON
cat > "$work/ds.json" <<'JSON'
{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}, "zero_optimization": {"stage": 1}}
JSON
rate() {  # rate NAME NP [train flags...]: median tokens/s and mean a2a bytes of steps 3..STEPS
    local name=$1 np=$2
    shift 2
    OMP_NUM_THREADS=$threads "$run" --num_procs "$np" "$bin" train --model-config "$work/model.json" \
        --ds-config "$work/ds.json" --data "$work/data" --seq-len "$T" --steps "$steps" \
        --eval-batches 1 --metrics "$work/$name.csv" --no-progress "$@" >"$work/$name.log" 2>&1 ||
        { cat "$work/$name.log"; exit 1; }
    python3 - "$work/$name.csv" "$name" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if int(r["step"]) > 2]
tps = statistics.median(float(r["tokens_per_s"]) for r in rows)
a2a = statistics.mean(float(r["a2a_bytes"]) for r in rows)
loads = [[float(r[k]) for k in r if k.startswith("load_e")] for r in rows]
spread = max(max(l) for l in loads) / (1 / len(loads[0]))
print(f"{sys.argv[2]} {tps:.1f} {a2a:.0f} {spread:.2f}")
PY
}
read -r _ ep1 ep1_bytes _ < <(rate ep1 2)
read -r _ ep2 ep2_bytes spread < <(rate ep2 2 --ep 2)
python3 - "$T" "$ep1" "$ep2" "$ep2_bytes" "$spread" <<'PY'
import sys
T, ep1, ep2, measured, spread = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
L, E, k, C, P, micro = 4, 8, 2, 256, 2, 4
N = micro * T
formula = L * ((P - 1) * E // P * 8 + N * k * (P - 1) / P * 4 * C * 4)
print(f"seq {T}, 2 ranks: ep 1 {ep1:.1f} tokens/s, ep 2 {ep2:.1f} tokens/s, ep 2 / ep 1 = {ep2 / ep1:.2f}")
print(f"all-to-all bytes rank 0 sent per step at ep 2: {measured:.0f} measured, {formula:.0f} by the "
      f"uniform-routing formula ({measured / formula:.3f}); busiest expert at {spread:.2f}x the uniform share")
PY
