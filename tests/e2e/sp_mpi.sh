#!/usr/bin/env bash
# Ulysses sequence parallelism across processes: `train --sp 2` on 2 MPI ranks (sp 2) and on 4
# (dp 2 x sp 2, ZeRO 2 and 3 over the dp x sp ranks), and `sequence_parallel_size: 4` in the
# ds_config on 4 ranks (each KV head of the 2 repeated on two ranks), reproduce the
# single-process losses to 1e-5 relative over 8 steps, every rank reading only its slice of each
# 32-token sequence; a checkpoint saved at dp 2 x sp 2 resumes on one process, and one saved on
# one process resumes at sp 2, each continuing with the single-process losses.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
for stage in 0 2 3; do ds_config $stage "$work/ds$stage.json"; done
python3 - "$work/ds0.json" "$work/sp4.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["sequence_parallel_size"] = 4
json.dump(c, open(sys.argv[2], "w"))
PY
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
for np_stage in "2 0" "4 2" "4 3"; do
    read -r np stage <<<"$np_stage"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$np" "$bin" $(train_args "$work/ds$stage.json" "$work/sp$np-s$stage.csv" --steps $steps --sp 2) \
        >"$work/sp$np-s$stage.log" 2>&1 || { cat "$work/sp$np-s$stage.log"; exit 1; }
    grep -q "$((np / 2)) data-parallel x 2 sequence-parallel" "$work/sp$np-s$stage.log" || { cat "$work/sp$np-s$stage.log"; exit 1; }
    same_losses "$work/base.csv" "$work/sp$np-s$stage.csv" "$np ranks, sp 2, stage $stage"
done
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/sp4.json" "$work/sp4.csv" --steps $steps) \
    >"$work/sp4.log" 2>&1 || { cat "$work/sp4.log"; exit 1; }
same_losses "$work/base.csv" "$work/sp4.csv" "4 ranks, sequence_parallel_size 4"
# Checkpoints reshard across sequence parallelism through the CLI.
for pair in "4 2 1 1" "1 1 2 2"; do
    read -r save_np save_sp load_np load_sp <<<"$pair"
    rm -rf "$work/ckpt"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$save_np" "$bin" $(train_args "$work/ds2.json" "$work/first.csv" --steps 4 --save "$work/ckpt" --sp "$save_sp") \
        >"$work/first.log" 2>&1 || { cat "$work/first.log"; exit 1; }
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$load_np" "$bin" $(train_args "$work/ds2.json" "$work/rest.csv" --steps $steps --save "$work/ckpt" --resume --sp "$load_sp") \
        >"$work/rest.log" 2>&1 || { cat "$work/rest.log"; exit 1; }
    grep -q "resumed from" "$work/rest.log" || { cat "$work/rest.log"; exit 1; }
    same_losses "$work/base.csv" "$work/rest.csv" "saved on $save_np ranks at sp $save_sp, resumed on $load_np at sp $load_sp"
done
