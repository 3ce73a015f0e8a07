#!/usr/bin/env bash
# The collectives' transports under real training: ZeRO-2/3 on 4 ranks laid out as 2 simulated
# hosts x 2 (ZS_SIMULATE_HOSTS=2: hierarchical collectives, shared memory inside a "host", MPI
# across), and ZeRO-3 on 2 ranks with the shared-memory transport off (ZS_SHM=0: MPI only),
# each reproducing the single-process losses to 1e-5 relative.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
ds_config 0 "$work/ds0.json"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
for stage in 2 3; do
    ds_config $stage "$work/ds$stage.json"
    # shellcheck disable=SC2046
    ZS_SIMULATE_HOSTS=2 OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/ds$stage.json" \
        "$work/hier-s$stage.csv" --steps $steps) >"$work/hier-s$stage.log" 2>&1 \
        || { cat "$work/hier-s$stage.log"; exit 1; }
    same_losses "$work/base.csv" "$work/hier-s$stage.csv" "2 hosts x 2 ranks, stage $stage"
done
# shellcheck disable=SC2046
ZS_SHM=0 OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/ds3.json" "$work/mpi-s3.csv" \
    --steps $steps) >"$work/mpi-s3.log" 2>&1 || { cat "$work/mpi-s3.log"; exit 1; }
same_losses "$work/base.csv" "$work/mpi-s3.csv" "2 ranks over MPI only, stage 3"
echo "zero_hier_mpi: ok"
