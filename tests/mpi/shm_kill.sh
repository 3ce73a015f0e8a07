#!/usr/bin/env bash
# kill -9 of any rank in the middle of shared-memory collectives: the job ends (mpirun notices)
# and nothing is left in /dev/shm. Usage: tests/mpi/shm_kill.sh COMM_MPI_CHECK
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
check=$1
# A segment whose creator (the pid in its name) is gone is a leftover, whoever made it; live
# jobs' segments (other tests running beside this one) exist only while they start.
leftovers() {
    for f in /dev/shm/zs-shm-*; do
        [ -e "$f" ] || continue
        pid=${f#/dev/shm/zs-shm-}
        pid=${pid%%-*}
        kill -0 "$pid" 2>/dev/null || echo "$f"
    done
}
for victim in 0 1; do
    "$here/run_mpi.sh" 2 "fail:exited on signal 9" "$check" kill9 "$victim" || exit 1
    left=$(leftovers)
    [ -z "$left" ] || { echo "shm_kill: left behind after killing rank $victim: $left"; exit 1; }
done
echo "shm_kill: ok (no segment left after kill -9 of rank 0 or rank 1)"
