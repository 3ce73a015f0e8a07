# Memory-capped runs for the benchmark scripts: each command runs in its own cgroup (v2 or v1,
# made and removed here; needs root) whose memory — anonymous and page cache, no swap — is capped.
# Usage: source bench/cgroup_common.sh, then
#   cg_run CAP CMD...       runs CMD under a cap of CAP ("192M", "8G": powers of 1024); sets
#                           cg_peak (the cgroup's peak bytes) and returns CMD's status.
#   cg_bytes CAP            prints CAP in bytes.

cg_bytes() {
    awk -v c="$1" 'BEGIN{u=substr(c,length(c)); n=c+0;
        m=(u=="G"||u=="g")?2^30:(u=="M"||u=="m")?2^20:(u=="K"||u=="k")?2^10:1; printf "%.0f", n*m}'
}

cg_run() {
    local cap=$1 dir limit peak_file rc=0
    shift
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        dir=/sys/fs/cgroup/zs_bench_$$_$RANDOM limit=memory.max peak_file=memory.peak
        mkdir "$dir"
        echo 0 >"$dir/memory.swap.max" 2>/dev/null || true
    else
        dir=/sys/fs/cgroup/memory/zs_bench_$$_$RANDOM limit=memory.limit_in_bytes
        peak_file=memory.max_usage_in_bytes
        mkdir "$dir"
    fi
    echo "$(cg_bytes "$cap")" >"$dir/$limit"
    [ -f "$dir/memory.memsw.limit_in_bytes" ] &&
        { echo "$(cg_bytes "$cap")" >"$dir/memory.memsw.limit_in_bytes"; } 2>/dev/null || true
    sh -c 'echo $$ >"$0/cgroup.procs"; exec "$@"' "$dir" "$@" || rc=$?
    cg_peak=$(cat "$dir/$peak_file" 2>/dev/null || echo 0)
    rmdir "$dir" 2>/dev/null || true
    return $rc
}
