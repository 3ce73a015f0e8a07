#!/usr/bin/env bash
# ZeRO-3 across a real network: two ranks in two network namespaces joined only by a veth pair
# (10.231.x.y/30, inside namespaces this test creates and deletes itself; no other address is
# touched), launched by zerospeed-run with a DeepSpeed hostfile. OpenMPI reaches the "hosts"
# through an rsh agent that enters the namespace (each daemon with its own hostname) and is told to
# use only the veth subnet, with TCP as its only transport. The losses must equal the
# single-namespace run (shared memory) bit for bit, and the veth must have carried the traffic.
# Skips (exit 77, with the reason) where network namespaces cannot be created (not root, no
# CAP_NET_ADMIN).
source "$(dirname "$0")/train_common.sh" "$1" "$2"
steps=6
if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    echo "zero_netns: SKIP: needs root, iproute2 and unshare to create network namespaces"
    exit 77
fi
tag=$(( $$ % 100000 ))
nsa=zs${tag}a
nsb=zs${tag}b
va=zsv${tag}a
vb=zsv${tag}b
net="10.231.$(( $$ % 250 )).$(( ($$ / 250) % 64 * 4 ))"
IFS=. read -r o1 o2 o3 o4 <<<"$net"
addr_a="$o1.$o2.$o3.$(( o4 + 1 ))"
addr_b="$o1.$o2.$o3.$(( o4 + 2 ))"
cleanup() {
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
if ! ip netns add "$nsa" 2>"$work/ns.err"; then
    echo "zero_netns: SKIP: cannot create a network namespace: $(cat "$work/ns.err")"
    exit 77
fi
ip netns add "$nsb"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$nsa"
ip link set "$vb" netns "$nsb"
ip -n "$nsa" addr add "$addr_a/30" dev "$va"
ip -n "$nsb" addr add "$addr_b/30" dev "$vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "$va" up
ip -n "$nsb" link set "$vb" up
echo "zero_netns: namespaces $nsa ($addr_a) and $nsb ($addr_b), subnet $net/30"

# OpenMPI's rsh agent: "agent [options] HOST COMMAND" runs COMMAND inside namespace HOST.
cat > "$work/agent.sh" <<'SH'
#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
ns=$1
shift
exec ip netns exec "$ns" unshare --uts /bin/sh -c "hostname $ns; $*"
SH
chmod +x "$work/agent.sh"
printf '%s slots=1\n%s slots=1\n' "$nsa" "$nsb" > "$work/hostfile"

ds_config 3 "$work/ds3.json"
# The reference: both ranks in this namespace (shared-memory transport).
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/ds3.json" "$work/local.csv" --steps $steps) \
    >"$work/local.log" 2>&1 || { cat "$work/local.log"; exit 1; }
# Across the veth: mpirun runs in namespace A; its daemons start in A and B through the agent.
# shellcheck disable=SC2046
ip netns exec "$nsa" env OMP_NUM_THREADS=1 OMPI_MCA_plm_rsh_agent="$work/agent.sh" \
    OMPI_MCA_plm_rsh_no_tree_spawn=1 OMPI_MCA_oob_tcp_if_include="$net/30" \
    OMPI_MCA_btl_tcp_if_include="$net/30" OMPI_MCA_btl=tcp,self OMPI_MCA_osc=ucx UCX_TLS=tcp,self UCX_NET_DEVICES="$va,$vb" \
    timeout 300 "$run" --hostfile "$work/hostfile" "$bin" $(train_args "$work/ds3.json" "$work/net.csv" --steps $steps) \
    >"$work/net.log" 2>&1 || { echo "the two-namespace run failed:"; cat "$work/net.log"; exit 1; }
rx=$(ip netns exec "$nsb" cat "/sys/class/net/$vb/statistics/rx_bytes")
tx=$(ip netns exec "$nsb" cat "/sys/class/net/$vb/statistics/tx_bytes")
echo "zero_netns: the veth in $nsb received $rx bytes and sent $tx"
python3 - "$work/local.csv" "$work/net.csv" "$rx" "$tx" "$steps" <<'PY'
import csv, sys
local = [r["loss"] for r in csv.DictReader(open(sys.argv[1]))]
net = [r["loss"] for r in csv.DictReader(open(sys.argv[2]))]
steps = int(sys.argv[5])
assert len(local) == len(net) == steps, (len(local), len(net))
for i, (a, b) in enumerate(zip(local, net)):
    assert a == b, f"step {i + 1}: loss {b} across the veth vs {a} in one namespace"
# ZeRO-3 moves every parameter's bytes across at least once per step (the model has ~100k
# parameters, 400 KB in f32): require the veth to have carried more than that in each direction.
for name, n in (("received", int(sys.argv[3])), ("sent", int(sys.argv[4]))):
    assert n > steps * 400_000, f"the veth {name} only {n} bytes: the ranks did not talk over it"
print(f"zero_netns: {steps} ZeRO-3 losses across two namespaces equal the single-namespace run (last {net[-1]})")
PY
