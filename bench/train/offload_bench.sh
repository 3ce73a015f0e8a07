#!/usr/bin/env bash
# ZeRO-Infinity optimizer offload on this machine's disk (tools/run_benchmarks.sh offload):
#   1. the disk's direct-I/O bandwidth, measured with dd (oflag=direct / iflag=direct, 1 GiB);
#   2. GPT-2 124M, bf16, ZeRO-2, 1 rank, B=4 T=64: in memory (the compute time), then with
#      offload_optimizer nvme (f32 master weights + Adam moments, 12 bytes per parameter, read
#      and written every step) pipelined (pipeline_read/write) and not;
#      ZeRO-3 in memory vs optimizer + parameters (offload_param) on nvme;
#   3. per step: bytes to/from disk (the JSONL metrics), step time, and the ratio of the step time
#      to max(compute, read bytes / read bandwidth + write bytes / write bandwidth).
# Usage: bench/train/offload_bench.sh BIN DATA OUT [NVME_DIR]
set -euo pipefail
bin=$1 data=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
nvme=${4:-$out/nvme}
mkdir -p "$out" "$nvme"
steps=${STEPS:-6}

dd_bw() {  # dd_bw write|read: bytes/s of a 1 GiB direct transfer
    local f=$nvme/dd.bin line
    if [ "$1" = write ]; then
        line=$(dd if=/dev/zero of="$f" bs=1M count=1024 oflag=direct conv=fsync 2>&1 | tail -1)
    else
        line=$(dd if="$f" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1)
    fi
    # "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.8 s, 1.3 GB/s"
    echo "$line" | awk -F', ' '{split($3, t, " "); printf "%.0f", 1073741824 / t[1]}'
}
wbw=$(dd_bw write)
rbw=$(dd_bw read)
rm -f "$nvme/dd.bin"
echo "disk (dd, 1 GiB, direct): write $(awk -v b="$wbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s, read $(awk -v b="$rbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s"

config() {  # config FILE DEVICE PIPELINE STAGE PARAM_DEVICE
    cat > "$1" <<JSON
{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
 "bf16": {"enabled": true}, "wall_clock_breakdown": true, "steps_per_print": 1,
 "aio": {"block_size": 1048576, "queue_depth": 16, "thread_count": 1},
 "zero_optimization": {"stage": $4, "sub_group_size": 20000000,
   "offload_optimizer": {"device": "$2", "nvme_path": "$nvme", "buffer_count": 4,
     "pipeline_read": $3, "pipeline_write": $3},
   "offload_param": {"device": "$5", "nvme_path": "$nvme", "max_in_cpu": 0, "buffer_count": 3}}}
JSON
}
run() {  # run LABEL DEVICE PIPELINE [STAGE PARAM_DEVICE]
    config "$out/ds_$1.json" "$2" "$3" "${4:-2}" "${5:-none}"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" train --model-config "$here/gpt2_124m.json" \
        --ds-config "$out/ds_$1.json" --data "$data" --seq-len 64 --steps "$steps" \
        --metrics "$out/$1.jsonl" --no-progress >"$out/$1.log" 2>&1
}
run memory none false
run nvme_pipelined nvme true
run nvme_serial nvme false
run memory_z3 none false 3 none
run nvme_z3_params nvme true 3 nvme
python3 - "$out" "$rbw" "$wbw" <<'PY'
import json, sys
out, rbw, wbw = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def steps(label):  # steps 3.. (the first two warm up)
    rows = [json.loads(l) for l in open(f"{out}/{label}.jsonl")]
    return [r for r in rows if r["step"] > 2]
def mean(xs): return sum(xs) / len(xs)
compute = mean([r["step_s"] for r in steps("memory")])
print(f"in memory: step {compute:.3f} s (optimizer {mean([r['optimizer_s'] for r in steps('memory')]):.3f} s)")
for label in ("nvme_pipelined", "nvme_serial"):
    s = steps(label)
    rd, wr = mean([r["offload_read_bytes"] for r in s]), mean([r["offload_write_bytes"] for r in s])
    io = rd / rbw + wr / wbw
    t = mean([r["step_s"] for r in s])
    bound = max(compute, io)
    print(f"{label}: step {t:.3f} s (optimizer {mean([r['optimizer_s'] for r in s]):.3f} s); "
          f"disk per step: read {rd / 1e9:.3f} GB, wrote {wr / 1e9:.3f} GB = {io:.3f} s at dd speed; "
          f"step / max(compute {compute:.3f}, io {io:.3f}) = {t / bound:.2f}; "
          f"step / (compute + io) = {t / (compute + io):.2f}")
    # The optimizer phase alone: the update in memory vs the disk time of its records.
    upd = mean([r["optimizer_s"] for r in steps("memory")])
    opt = mean([r["optimizer_s"] for r in s])
    print(f"  optimizer phase / max(update in memory {upd:.3f}, io {io:.3f}) = {opt / max(upd, io):.2f}; "
          f"/ (update + io) = {opt / (upd + io):.2f}")
    l_mem = [r["loss"] for r in steps("memory")]
    assert [r["loss"] for r in s] == l_mem, f"{label}: losses differ from the in-memory run"
# ZeRO-3 with the parameters offloaded too (every group's bf16 shard read before its gather).
z3 = mean([r["step_s"] for r in steps("memory_z3")])
s = steps("nvme_z3_params")
rd, wr = mean([r["offload_read_bytes"] for r in s]), mean([r["offload_write_bytes"] for r in s])
io = rd / rbw + wr / wbw
t = mean([r["step_s"] for r in s])
print(f"ZeRO-3 in memory: step {z3:.3f} s; optimizer + parameters on nvme: step {t:.3f} s, "
      f"read {rd / 1e9:.3f} GB, wrote {wr / 1e9:.3f} GB = {io:.3f} s at dd speed; "
      f"step / max(compute, io) = {t / max(z3, io):.2f}")
assert [r["loss"] for r in s] == [r["loss"] for r in steps("memory_z3")], "z3 losses differ"
print("losses: offloaded runs bit-identical to the in-memory runs")
PY
rm -rf "$nvme/zerospeed_swap"
