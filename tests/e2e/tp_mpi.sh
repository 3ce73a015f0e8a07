#!/usr/bin/env bash
# Tensor parallelism across processes: `train --tp 2` on 2 MPI ranks (tp 2) and on 4 (dp 2 x tp 2,
# ZeRO 0 and 2 over the data-parallel group) reproduces the single-process losses to 1e-5
# relative over 8 steps; a checkpoint saved at dp 2 x tp 2 resumes at dp 2 x tp 1 and one saved
# at dp 2 resumes at tp 2, each continuing with the single-process losses.
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
        same_losses "$work/base.csv" "$work/tp$np-s$stage.csv" "$np ranks, tp 2, stage $stage"
    done
done
# Checkpoints reshard across tensor parallelism through the CLI.
for pair in "2 1" "1 2"; do
    set -- $pair
    save_tp=$1 load_tp=$2
    rm -rf "$work/ckpt"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs $((2 * save_tp)) "$bin" $(train_args "$work/ds2.json" "$work/first.csv" --steps 4 --save "$work/ckpt" --tp "$save_tp") \
        >"$work/first.log" 2>&1 || { cat "$work/first.log"; exit 1; }
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs $((2 * load_tp)) "$bin" $(train_args "$work/ds2.json" "$work/rest.csv" --steps $steps --save "$work/ckpt" --resume --tp "$load_tp") \
        >"$work/rest.log" 2>&1 || { cat "$work/rest.log"; exit 1; }
    want="saved at world size $((2 * save_tp)), ZeRO"
    [ "$save_tp" -eq 1 ] || want="saved at world size 4 = 2 dp x 2 tp"
    grep -q "$want" "$work/rest.log" || { cat "$work/rest.log"; exit 1; }
    same_losses "$work/base.csv" "$work/rest.csv" "saved at dp 2 x tp $save_tp, resumed at dp 2 x tp $load_tp"
done
