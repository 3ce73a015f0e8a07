#!/usr/bin/env bash
# Ring attention and USP across processes: `train --ring 2` on 2 MPI ranks, `--sp 2 --ring 2`
# (Ulysses 2 x ring 2) on 4, and `ring_parallel_size: 4` in the ds_config on 4 ranks reproduce the
# single-process losses to 1e-5 relative over 8 steps, every rank reading only its zig-zag chunks
# of each 32-token sequence; K/V blocks and their gradients travel between processes by
# send/recv.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
ds_config 0 "$work/ds0.json"
python3 - "$work/ds0.json" "$work/ring4.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["ring_parallel_size"] = 4
json.dump(c, open(sys.argv[2], "w"))
PY
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/ds0.json" "$work/ring2.csv" --steps $steps --ring 2) \
    >"$work/ring2.log" 2>&1 || { cat "$work/ring2.log"; exit 1; }
grep -q "1 data-parallel x 2 ring" "$work/ring2.log" || { cat "$work/ring2.log"; exit 1; }
same_losses "$work/base.csv" "$work/ring2.csv" "2 ranks, ring 2"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/ds0.json" "$work/usp.csv" --steps $steps --sp 2 --ring 2) \
    >"$work/usp.log" 2>&1 || { cat "$work/usp.log"; exit 1; }
grep -q "1 data-parallel x 2 sequence-parallel x 2 ring" "$work/usp.log" || { cat "$work/usp.log"; exit 1; }
same_losses "$work/base.csv" "$work/usp.csv" "4 ranks, ulysses 2 x ring 2"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/ring4.json" "$work/ring4.csv" --steps $steps) \
    >"$work/ring4.log" 2>&1 || { cat "$work/ring4.log"; exit 1; }
same_losses "$work/base.csv" "$work/ring4.csv" "4 ranks, ring_parallel_size 4"
