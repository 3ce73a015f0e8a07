#!/usr/bin/env bash
# Run an MPI check with N ranks on this machine: tests/mpi/run_mpi.sh N EXPECT BINARY ARGS...
#   EXPECT = ok: exit 0 required; EXPECT = "fail:<text>": non-zero exit and <text> in the output,
#   within the time limit (no hang).
set -uo pipefail
n=$1; expect=$2; shift 2
flags=(--oversubscribe --bind-to none -np "$n")
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
export OMPI_MCA_btl_vader_single_copy_mechanism=none  # containers without CMA
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
out=$(timeout 60 mpirun "${flags[@]}" "$@" 2>&1); rc=$?
echo "$out" | tail -20
if [ "$expect" = ok ]; then
    [ $rc -eq 0 ] || { echo "run_mpi: expected success, got exit $rc"; exit 1; }
else
    want=${expect#fail:}
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "run_mpi: expected a prompt failure, got exit $rc"; exit 1; }
    grep -qF -- "$want" <<<"$out" || { echo "run_mpi: output lacks '$want'"; exit 1; }
fi
echo "run_mpi: ok"
