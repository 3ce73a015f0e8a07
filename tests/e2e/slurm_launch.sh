#!/usr/bin/env bash
# zerospeed-run under a real Slurm. The test starts a one-node cluster of its own (munged with its
# own key and socket, slurmctld and slurmd on 127.0.0.1 with ports picked free at run time, every
# state, spool, log and pid file under its temp dir) and tears it down on any exit. ZeRO-3 on 2
# ranks, launched by srun twice (`zerospeed-run --srun`, and inside `salloc`, where SLURM_JOB_ID
# alone selects srun), must give the losses of the same 2 ranks under mpirun (to 1e-5 relative, as
# zero_mpi.sh), logged as one world of 2; the ranks take RANK/WORLD_SIZE/LOCAL_SIZE from Slurm and
# join OpenMPI through PMIx. Skips (exit 77, with the reason) without root, without the slurm-wlm
# and munge packages, or where the daemons cannot start.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=8
export OMP_NUM_THREADS=1
# A surrounding Slurm job (ctest inside sbatch) must reach neither this cluster nor the baseline.
for v in $(compgen -e | grep -E '^(SLURM|SALLOC|SBATCH|SRUN)_' || true); do unset "$v"; done
for c in munged slurmctld slurmd srun salloc sinfo squeue scancel; do
    if ! command -v "$c" >/dev/null; then
        echo "slurm_launch: SKIP: '$c' not found (slurm-wlm and munge: tools/install_deps.sh)"
        exit 77
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_launch: SKIP: slurmd must run as root (SlurmdUser=root) to start job steps"
    exit 77
fi

# Every daemon and launch this test starts carries ZS_SLURM_TAG=$work in its environment, and so do
# the ranks srun starts. A slurmstepd overwrites its environment with its process title; it keeps
# slurmd's log open, though. Teardown ends these processes, and only these.
tag=$work
sl=$work/slurm
host=$(hostname -s)
pids=()  # the daemons, named in names
names=()
ctld_pid=""
ours() {  # the processes this test started that are still alive
    local e p
    {
        for e in /proc/[0-9]*/environ; do
            p=${e#/proc/}
            p=${p%/environ}
            grep -qzxF "ZS_SLURM_TAG=$tag" "$e" 2>/dev/null && echo "$p"
        done
        find /proc/[0-9]*/fd -lname "$sl/*" 2>/dev/null | cut -d/ -f3
    } | sort -u | grep -vx $$
}
teardown() {
    set +e
    # Slurm ends its own jobs first: cancel them, then wait until every slurmstepd has finished
    # (each removes its socket, spool/<node>_<job>.<step>, on its way out).
    if [ -n "$ctld_pid" ] && kill -0 "$ctld_pid" 2>/dev/null; then
        scancel --quiet --user="$(id -un)"
        for _ in $(seq 100); do
            [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] &&
                ! compgen -G "$sl/spool/${host}_*" >/dev/null && break
            sleep 0.1
        done
    fi
    kill "${pids[@]}" 2>/dev/null
    for _ in $(seq 50); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in $(ours); do
        echo "slurm_launch: teardown: killing leftover $(cat "/proc/$p/comm" 2>/dev/null) ($p)"
        kill -9 "$p"
    done
    wait 2>/dev/null
    rm -rf "$work"
}
trap teardown EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
skip_daemons() {  # skip_daemons REASON: the cluster did not come up; show its logs
    for f in "$sl"/*.log "$sl"/*.out; do
        [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
    done
    echo "slurm_launch: SKIP: $1"
    exit 77
}

# munged refuses a socket whose directories are not searchable by every user (clients may be
# anyone), and a key readable by others.
chmod 711 "$work"
mkdir -p "$sl/state" "$sl/spool" "$sl/tmp"
mkdir -m 755 "$sl/munge"
head -c 1024 /dev/urandom > "$sl/munge.key"
chmod 400 "$sl/munge.key"
sock=$sl/munge/munge.sock
ZS_SLURM_TAG=$tag munged --foreground --socket="$sock" --key-file="$sl/munge.key" \
    --pid-file="$sl/munged.pid" --log-file="$sl/munged.log" --seed-file="$sl/munged.seed" \
    >"$sl/munged.out" 2>&1 &
pids+=($!)
names+=(munged)
for _ in $(seq 50); do
    [ -S "$sock" ] && break
    sleep 0.1
done
[ -S "$sock" ] || skip_daemons "munged did not create its socket $sock"

# Two distinct free ports (held together while chosen); the daemons bind them a moment later.
read -r ctld_port slurmd_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
cpus=$(nproc)
overrides=""
if [ "$cpus" -lt 2 ]; then  # 2 ranks need 2 CPUs in Slurm's books, even on a 1-CPU machine
    cpus=2
    overrides="SlurmdParameters=config_overrides"
fi
# No systemd and no cgroups here: processes are tracked by /proc (linuxproc), tasks are not bound
# (task/none), nothing is accounted. TmpFS holds PMIx's per-step directories.
cat > "$sl/slurm.conf" <<EOF
ClusterName=zs
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$sl/state
SlurmdSpoolDir=$sl/spool
TmpFS=$sl/tmp
SlurmctldPidFile=$sl/slurmctld.pid
SlurmdPidFile=$sl/slurmd.pid
SlurmctldLogFile=$sl/slurmctld.log
SlurmdLogFile=$sl/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait=2
$overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=zs Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$sl/slurm.conf
# OpenMPI's session directories (shared-memory backing files) stay apart from other tests' too.
export TMPDIR=$sl/tmp
ZS_SLURM_TAG=$tag slurmctld -D -i >"$sl/slurmctld.out" 2>&1 &
ctld_pid=$!
pids+=($!)
names+=(slurmctld)
ZS_SLURM_TAG=$tag slurmd -D >"$sl/slurmd.out" 2>&1 &
pids+=($!)
names+=(slurmd)
state=""
for _ in $(seq 100); do
    state=$(timeout 5 sinfo -h -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || skip_daemons "${names[$i]} exited (its log is above)"
    done
    sleep 0.2
done
[ "$state" = idle ] || skip_daemons "node $host did not come up idle (state '$state')"
echo "slurm_launch: cluster up: node $host, $cpus CPUs, slurmctld :$ctld_port, slurmd :$slurmd_port"

fail() {  # fail LOG MESSAGE
    cat "$1"
    echo "slurm_launch: FAIL: $2"
    exit 1
}
launch() {  # launch LOG COMMAND...: run tagged, in the background so a signal reaches the trap
    local log=$1
    shift
    ZS_SLURM_TAG=$tag "$@" >"$log" 2>&1 &
    wait $! || fail "$log" "$*"
}

# Each rank's view of the job: Slurm's rank and layout, and a PMIx rank for OpenMPI.
# shellcheck disable=SC2016
show='echo probe PROCID=$SLURM_PROCID RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE'
# shellcheck disable=SC2016
show+=' LOCAL_SIZE=$LOCAL_SIZE PMIX_RANK=$PMIX_RANK'
launch "$work/probe.log" "$run" --srun --num_procs 2 sh -c "$show"
grep '^probe' "$work/probe.log" | sort > "$work/probe.txt" || true
for r in 0 1; do
    echo "probe PROCID=$r RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_SIZE=2 PMIX_RANK=$r"
done | diff -u - "$work/probe.txt" || fail "$work/probe.log" "the ranks' environment under srun"
echo "slurm_launch: srun ranks: $(tr '\n' ';' < "$work/probe.txt")"

ds_config 3 "$work/ds3.json"
# shellcheck disable=SC2046
launch "$work/mpirun.log" "$run" --num_procs 2 "$bin" \
    $(train_args "$work/ds3.json" "$work/mpirun.csv" --steps $steps)
# shellcheck disable=SC2046
launch "$work/srun.log" "$run" --srun --num_procs 2 "$bin" \
    $(train_args "$work/ds3.json" "$work/srun.csv" --steps $steps)
# shellcheck disable=SC2046
launch "$work/salloc.log" salloc --ntasks=2 "$run" --num_procs 2 "$bin" \
    $(train_args "$work/ds3.json" "$work/salloc.csv" --steps $steps)
grep -q "2 rank(s): mpirun " "$work/mpirun.log" || fail "$work/mpirun.log" "mpirun baseline"
for how in srun salloc; do
    log=$work/$how.log
    grep -q "zerospeed-run: 2 rank(s): srun --ntasks=2 .*--mpi=pmix " "$log" ||
        fail "$log" "$how did not launch through srun with PMIx"
    grep -q "\[rank 0/2\] training .* on 2 rank(s)" "$log" ||
        fail "$log" "$how did not train as one world of 2 ranks"
    [ "$(cut -d, -f1 "$work/$how.csv")" = "$(cut -d, -f1 "$work/mpirun.csv")" ] ||
        fail "$work/$how.csv" "$how logged other steps than mpirun"
    same_losses "$work/mpirun.csv" "$work/$how.csv" "$how vs mpirun, ZeRO-3, 2 ranks"
done
echo "slurm_launch: ok"
