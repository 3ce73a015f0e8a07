#!/usr/bin/env bash
# Tensor parallelism across processes: `train --tp 2` on 2 MPI ranks (tp 2) and on 4 (dp 2 x tp 2,
# ZeRO 0 and 2 over the data-parallel group) reproduces the single-process losses to 1e-5
# relative over 8 steps.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
ds_config 0 "$work/ds0.json"
ds_config 2 "$work/ds2.json"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
for np in 2 4; do
    for stage in 0 2; do
        # shellcheck disable=SC2046
        OMP_NUM_THREADS=1 "$run" --num_procs $np "$bin" $(train_args "$work/ds$stage.json" "$work/tp$np-s$stage.csv" --steps $steps --tp 2) \
            >"$work/tp$np-s$stage.log" 2>&1 || { cat "$work/tp$np-s$stage.log"; exit 1; }
        grep -q "data-parallel x 2 tensor-parallel" "$work/tp$np-s$stage.log" || { cat "$work/tp$np-s$stage.log"; exit 1; }
        python3 - "$work/base.csv" "$work/tp$np-s$stage.csv" "$np" "$stage" <<'PY'
import csv, sys
base = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
got = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[2]))]
assert len(base) == len(got) == 8, (len(base), len(got))
for i, (b, g) in enumerate(zip(base, got)):
    assert abs(b - g) <= 1e-5 * abs(b), f"{sys.argv[3]} ranks tp 2 stage {sys.argv[4]} step {i+1}: {g} vs single-process {b}"
print(f"{sys.argv[3]} ranks, tp 2, stage {sys.argv[4]}: 8 losses match the single process (last {got[-1]:.6f})")
PY
    done
done
