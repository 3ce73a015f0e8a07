#!/usr/bin/env bash
# Pipeline parallelism across processes: `train --pp 2` on 2 MPI ranks (1F1B over the 4
# micro-batches of a step) and on 4 (dp 2 x pp 2, ZeRO-1), and `pipeline: {stages: 2, schedule:
# gpipe}` and `schedule: zb-h1` (the backward split, its Ws re-placed by the costs measured in
# step 2, the measured timeline written as SVG) in the ds_config, reproduce the single-process
# losses to 1e-5 relative over 8 steps; a
# checkpoint saved at pp 2 (each stage writing its blocks) resumes on one process, and one saved
# on one process resumes at pp 2, each continuing with the single-process losses.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
for stage in 0 1; do ds_config $stage "$work/ds$stage.json"; done
python3 - "$work/ds0.json" "$work/gpipe.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["pipeline"] = {"stages": 2, "schedule": "gpipe", "partition": "uniform"}
json.dump(c, open(sys.argv[2], "w"))
c["pipeline"]["schedule"] = "zb-h1"
json.dump(c, open(sys.argv[2].replace("gpipe", "zb"), "w"))
PY
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
for np_stage in "2 0" "4 1"; do
    read -r np stage <<<"$np_stage"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$np" "$bin" $(train_args "$work/ds$stage.json" "$work/pp$np-s$stage.csv" --steps $steps --pp 2) \
        >"$work/pp$np-s$stage.log" 2>&1 || { cat "$work/pp$np-s$stage.log"; exit 1; }
    grep -q "$((np / 2)) data-parallel x 2 pipeline" "$work/pp$np-s$stage.log" || { cat "$work/pp$np-s$stage.log"; exit 1; }
    grep -q "pipeline: 2 stages, 1f1b schedule" "$work/pp$np-s$stage.log" || { cat "$work/pp$np-s$stage.log"; exit 1; }
    same_losses "$work/base.csv" "$work/pp$np-s$stage.csv" "$np ranks, pp 2, stage $stage"
done
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/gpipe.json" "$work/gpipe.csv" --steps $steps) \
    >"$work/gpipe.log" 2>&1 || { cat "$work/gpipe.log"; exit 1; }
grep -q "gpipe schedule" "$work/gpipe.log" || { cat "$work/gpipe.log"; exit 1; }
same_losses "$work/base.csv" "$work/gpipe.csv" "2 ranks, pipeline.schedule gpipe"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/zb.json" "$work/zb.csv" --steps $steps --pipeline-timeline "$work/zb.svg") \
    >"$work/zb.log" 2>&1 || { cat "$work/zb.log"; exit 1; }
grep -q "zb-h1 Ws placed by the measured costs" "$work/zb.log" || { cat "$work/zb.log"; exit 1; }
grep -q "<svg" "$work/zb.svg" || { echo "no timeline SVG"; cat "$work/zb.log"; exit 1; }
same_losses "$work/base.csv" "$work/zb.csv" "2 ranks, pipeline.schedule zb-h1"
# Checkpoints reshard across pipeline parallelism through the CLI.
for pair in "2 2 1 1" "1 1 2 2"; do
    read -r save_np save_pp load_np load_pp <<<"$pair"
    rm -rf "$work/ckpt"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$save_np" "$bin" $(train_args "$work/ds0.json" "$work/first.csv" --steps 4 --save "$work/ckpt" --pp "$save_pp") \
        >"$work/first.log" 2>&1 || { cat "$work/first.log"; exit 1; }
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$load_np" "$bin" $(train_args "$work/ds0.json" "$work/rest.csv" --steps $steps --save "$work/ckpt" --resume --pp "$load_pp") \
        >"$work/rest.log" 2>&1 || { cat "$work/rest.log"; exit 1; }
    grep -q "resumed from" "$work/rest.log" || { cat "$work/rest.log"; exit 1; }
    same_losses "$work/base.csv" "$work/rest.csv" "saved on $save_np ranks at pp $save_pp, resumed on $load_np at pp $load_pp"
done
