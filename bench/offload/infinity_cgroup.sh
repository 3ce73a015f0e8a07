#!/usr/bin/env bash
# ZeRO-Infinity under a memory cgroup (tools/run_benchmarks.sh infinity): a Llama trained from
# scratch with ZeRO-3, bf16, the optimizer (master weights + Adam moments), the gradient shards
# and the parameters on NVMe, the process's memory capped by a cgroup this script creates and
# removes (v2: memory.max, v1: memory.limit_in_bytes; run as root).
#   1. the disk's direct-I/O bandwidth with dd (1 GiB, oflag/iflag=direct);
#   2. `zerospeed estimate --memory-cap` for the model: the tier advice and its prediction;
#   3. run A: STEPS + 1 steps inside the cgroup, a checkpoint saved at step STEPS;
#      run B: --resume from it inside the cgroup to step STEPS + 1: its loss must equal run A's
#      step STEPS + 1 bit for bit (the JSONL metrics print doubles round-trip);
#   4. per step: bytes read / written on the offload disk (metrics), step time, and the ratio
#      step / max(compute, read / read bw + write / write bw), compute from an in-memory run of
#      the same model when it fits (COMPUTE_REF=1), else from estimate's measured matmul rate;
#      the cgroup's peak memory.
# BF16_MASTER=1 (default) adds bf16.bf16_master_weights_and_grads and bf16_optimizer_states: the
# master weights are the bf16 compute weights, the moments and gradient records bf16.
# Disk guard: the swap files need 8 bytes per parameter with BF16_MASTER=1 (bf16 m + v, bf16
# gradients, bf16 weights; 18 without: f32 master + 2 moments, f32 gradients, bf16 weights) and
# the checkpoint 6 more (12 without); the script refuses to start when free space after that
# would drop below MIN_FREE_GB (default 10), and a watcher kills the run when free space falls
# below it while running. Run A saves only at step STEPS (--no-final-save: never two checkpoints
# on the disk at once); the save streams group by group, so it stays under the cap.
# Usage: bench/offload/infinity_cgroup.sh BIN DATA OUT NVME_DIR [MODEL_CONFIG]
#   MEM_CAP (8G), STEPS (3), SEQ (128), MIN_FREE_GB (10), SUB_GROUP (20000000), COMPUTE_REF (0/1),
#   CKPT (1; 0: no checkpoint / resume check), RESUME (= CKPT: RESUME=0 skips the checkpoint and
#   run B, for a step-time measurement only), BF16_MASTER (1), AIO_THREADS (aio.thread_count, 2:
#   a sub-group's reads and the previous one's writes go through separate io_uring workers),
#   OFFLOAD_RATIO (offload_optimizer.ratio, 1.0: below 1 the first sub-groups' records and
#   gradients stay in memory, DeepSpeed's partial offload)
# Per step it prints the step time against max(compute, disk bytes / dd bandwidth) as a ratio,
# and each side's (forward+backward, optimizer step) time against its own bytes / dd bandwidth,
# with the engine's waits (wall_clock_breakdown's offload line).
set -euo pipefail
bin=$(realpath "$1") data=$2 out=$3 nvme=$4
here=$(cd "$(dirname "$0")" && pwd)
model=${5:-$here/llama_3b.json}
cap=${MEM_CAP:-8G} steps=${STEPS:-3} seq=${SEQ:-128} min_free=${MIN_FREE_GB:-10}
sub=${SUB_GROUP:-20000000}
bf16m=${BF16_MASTER:-1}
bf16keys=""
bytes_per_param=30
if [ "$bf16m" = 1 ]; then
    bf16keys=', "bf16_master_weights_and_grads": true, "bf16_optimizer_states": true'
    bytes_per_param=14
fi
mkdir -p "$out" "$nvme"
free_gb() { df -BG --output=avail "$nvme" | tail -1 | tr -dc '0-9'; }

cat >"$out/ds.json" <<JSON
{"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
 "bf16": {"enabled": true$bf16keys}, "wall_clock_breakdown": true, "steps_per_print": 1,
 "gradient_clipping": 1.0,
 "aio": {"block_size": 1048576, "queue_depth": 16, "thread_count": ${AIO_THREADS:-2}},
 "zero_optimization": {"stage": 3, "sub_group_size": $sub,
   "stage3_max_live_parameters": 200000000, "stage3_prefetch_bucket_size": 50000000,
   "offload_optimizer": {"device": "nvme", "nvme_path": "$nvme", "buffer_count": 4,
     "pipeline_read": true, "pipeline_write": true, "ratio": ${OFFLOAD_RATIO:-1.0}},
   "offload_param": {"device": "nvme", "nvme_path": "$nvme", "max_in_cpu": 0, "buffer_count": 3,
     "buffer_size": 200000000}}}
JSON

# Parameters, from estimate's first line: "model: llama, 3267.50 M parameters; ..."
mparams=$("$bin" estimate --model-config "$model" --ds-config "$out/ds.json" --seq-len "$seq" \
    | sed -n 's/^model: [a-z0-9]*, \([0-9.]*\) M parameters.*/\1/p')
need_gb=$(awk -v m="$mparams" -v b="$bytes_per_param" 'BEGIN{printf "%d", m * 1e6 * b / 1e9 + 1}')
echo "model: $mparams M parameters; swap files + checkpoint need ~${need_gb} GB; free $(free_gb) GB on $nvme"
if [ $(($(free_gb) - need_gb)) -lt "$min_free" ]; then
    echo "infinity: refusing to start: $(free_gb) GB free - ${need_gb} GB needed < ${min_free} GB" \
        "to leave free (MIN_FREE_GB)" >&2
    exit 2
fi

dd_bw() {  # dd_bw write|read: bytes/s of a 1 GiB direct transfer
    local f=$nvme/dd.bin line
    if [ "$1" = write ]; then
        line=$(dd if=/dev/zero of="$f" bs=1M count=1024 oflag=direct conv=fsync 2>&1 | tail -1)
    else
        line=$(dd if="$f" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1)
    fi
    echo "$line" | awk -F', ' '{split($3, t, " "); printf "%.0f", 1073741824 / t[1]}'
}
wbw=$(dd_bw write)
rbw=$(dd_bw read)
rm -f "$nvme/dd.bin"
echo "disk (dd, 1 GiB, direct): write $(awk -v b="$wbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s," \
    "read $(awk -v b="$rbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s"
"$bin" estimate --model-config "$model" --ds-config "$out/ds.json" --seq-len "$seq" \
    --memory-cap "$cap" --disk-bw "$(((rbw + wbw) / 2))" | sed -n '/^Offload tiers/,$p' \
    | tee "$out/estimate.txt"
tflops=$(sed -n 's/.*compute \([0-9.]*\) TFLOP.*/\1/p' "$out/estimate.txt")

# The cgroup (v2 or v1), removed on exit.
cg=""
cleanup() {
    [ -n "${watch:-}" ] && kill "$watch" 2>/dev/null || true
    if [ -n "$cg" ] && [ -d "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi
}
trap cleanup EXIT
bytes=$(awk -v c="$cap" 'BEGIN{u=substr(c,length(c)); n=c+0;
    m=(u=="G"||u=="g")?2^30:(u=="M"||u=="m")?2^20:1; printf "%.0f", n*m}')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg=/sys/fs/cgroup/zs_infinity_$$
    mkdir "$cg"
    echo "$bytes" >"$cg/memory.max"
    echo 0 >"$cg/memory.swap.max" 2>/dev/null || true
    peak_file=$cg/memory.peak
else
    cg=/sys/fs/cgroup/memory/zs_infinity_$$
    mkdir "$cg"
    echo "$bytes" >"$cg/memory.limit_in_bytes"
    peak_file=$cg/memory.max_usage_in_bytes
fi
echo "cgroup $cg: memory capped at $cap ($bytes bytes)"

# Free-space watcher: kills the runs (the cgroup's processes) below MIN_FREE_GB.
(
    while sleep 5; do
        if [ "$(free_gb)" -lt "$min_free" ]; then
            echo "infinity: free space $(free_gb) GB < ${min_free} GB: killing the run" >&2
            xargs -r kill -9 <"$cg/cgroup.procs"
            exit 1
        fi
    done
) &
watch=$!

capped() {  # capped LOG ARGS...: zerospeed train inside the cgroup
    local log=$1
    shift
    sh -c 'echo $$ >"$0/cgroup.procs"; exec "$@"' "$cg" \
        env OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$bin" train --model-config "$model" \
        --ds-config "$out/ds.json" --data "$data" --seq-len "$seq" --no-progress "$@" \
        >"$log" 2>&1
}
rm -rf "$out/ckpt"
ckpt=${CKPT:-${RESUME:-1}}
if [ "$ckpt" = 1 ]; then
    t0=$(date +%s)
    capped "$out/a.log" --steps $((steps + 1)) --save "$out/ckpt" --save-interval "$steps" \
        --no-final-save --metrics "$out/a.jsonl"
    t1=$(date +%s)
    peak=$(cat "$peak_file")
    echo "run A: $((t1 - t0)) s wall (start-up, $((steps + 1)) steps, the save at step $steps);" \
        "checkpoint $(du -sb "$out/ckpt" | cut -f1) bytes; cgroup peak $peak bytes"
    capped "$out/b.log" --steps $((steps + 1)) --save "$out/ckpt" --resume --no-final-save \
        --metrics "$out/b.jsonl"
    echo "run B: $(($(date +%s) - t1)) s wall (start-up, load + verify, 1 step)"
    peak=$(($(cat "$peak_file") > peak ? $(cat "$peak_file") : peak))
    rm -rf "$out/ckpt"
else  # CKPT=0: no checkpoint (an offloaded save holds 12 bytes per parameter in memory)
    capped "$out/a.log" --steps $((steps + 1)) --metrics "$out/a.jsonl"
    peak=$(cat "$peak_file")
    cp "$out/a.jsonl" "$out/b.jsonl"
fi

ref=""
if [ "${COMPUTE_REF:-0}" = 1 ]; then  # the same model in memory, uncapped: the compute time
    sed -e 's/"device": "nvme"/"device": "none"/g' "$out/ds.json" >"$out/ds_memory.json"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" train --model-config "$model" \
        --ds-config "$out/ds_memory.json" --data "$data" --seq-len "$seq" --no-progress \
        --steps $((steps + 1)) --metrics "$out/memory.jsonl" >"$out/memory.log" 2>&1
    ref=$out/memory.jsonl
fi
python3 - "$out" "$rbw" "$wbw" "$peak" "$steps" "$mparams" "$seq" "$tflops" "$ref" "$ckpt" <<'PY'
import json, sys
out, rbw, wbw, peak, steps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
mparams, seq, tflops, ref = float(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8] or 0), sys.argv[9]
ckpt = sys.argv[10] == "1"
rows = lambda f: [json.loads(l) for l in open(f)]
a, b = rows(f"{out}/a.jsonl"), rows(f"{out}/b.jsonl")
if ref:
    m = rows(ref)
    compute = sum(r["step_s"] for r in m[1:]) / max(1, len(m) - 1)
    how = "in-memory run of the same model"
else:
    compute = 6 * mparams * 1e6 * seq / (tflops * 1e12)
    how = f"6 x params x tokens at the measured {tflops:.2f} TFLOP/s"
print(f"compute per step: {compute:.2f} s ({how}); cgroup peak {peak / 2**30:.2f} GiB")
for r in a:
    rd, wr = r["offload_read_bytes"], r["offload_write_bytes"]
    io = rd / rbw + wr / wbw
    print(f"step {r['step']}: loss {r['loss']!r} step {r['step_s']:.2f} s; disk read {rd / 1e9:.2f} GB, "
          f"wrote {wr / 1e9:.2f} GB = {io:.2f} s at dd speed; step / max(compute, io) = "
          f"{r['step_s'] / max(compute, io):.2f}; step / (compute + io) = {r['step_s'] / (compute + io):.2f}")
    if "offload_step_read_bytes" in r and "optimizer_s" in r:
        srd, swr = r["offload_step_read_bytes"], r["offload_step_write_bytes"]
        fb = r["step_s"] - r["optimizer_s"]
        fio, sio = (rd - srd) / rbw + (wr - swr) / wbw, srd / rbw + swr / wbw
        print(f"  forward+backward {fb:.2f} s for {(rd - srd) / 1e9:.2f} GB read + {(wr - swr) / 1e9:.2f} GB "
              f"written = {fio:.2f} s at dd speed ({fb / max(fio, 1e-9):.2f}x; waits: parameter reads "
              f"{r.get('offload_param_wait_s', 0):.2f} s, gradient writes {r.get('offload_grad_write_wait_s', 0):.2f} s, "
              f"gradient records {r.get('offload_grad_record_s', 0):.2f} s)")
        print(f"  optimizer {r['optimizer_s']:.2f} s for {srd / 1e9:.2f} GB read + {swr / 1e9:.2f} GB written = "
              f"{sio:.2f} s at dd speed ({r['optimizer_s'] / max(sio, 1e-9):.2f}x; waits: parameters "
              f"{r.get('offload_step_param_wait_s', 0):.2f} s, record reads {r.get('offload_step_read_wait_s', 0):.2f} s, "
              f"record writes {r.get('offload_step_write_wait_s', 0):.2f} s; update {r.get('offload_step_update_s', 0):.2f} s)")
la = [r["loss"] for r in a]
print(f"loss falls: {la[0]:.4f} -> {la[-1]:.4f}: {'yes' if la[-1] < la[0] else 'NO'}")
if ckpt:
    want = [r for r in a if r["step"] == steps + 1][0]["loss"]
    got = [r for r in b if r["step"] == steps + 1][0]["loss"]
    print(f"resume from step {steps}: step {steps + 1} loss {got!r} vs uninterrupted {want!r}: "
          f"{'bit-exact' if got == want else 'DIFFERENT'}")
else:
    print("resume: not checked (CKPT=0 / RESUME=0)")
PY
