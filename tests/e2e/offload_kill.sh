#!/usr/bin/env bash
# offload_faults (RELIABILITY.md): SIGKILL inside an NVMe-offloaded (optimizer states and
# parameters, ZeRO-3) optimizer step
# (ZS_FAULT=offload.write:N, right after the N-th swap-file write is issued, in three different
# steps), then --resume: training continues from the last checkpoint and every loss equals an
# uninterrupted offloaded run bit for bit, which itself equals the in-memory run bit for bit. The
# killed run's swap directory is removed by the next run.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
export OMP_NUM_THREADS=1
nvme="$work/nvme"
mkdir -p "$nvme"
offload_config() {  # offload_config FILE DEVICE
    cat > "$1" <<JSON
{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.1}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-3, "warmup_num_steps": 4}},
 "gradient_clipping": 1.0, "bf16": {"enabled": true},
 "aio": {"block_size": 65536, "queue_depth": 8},
 "zero_optimization": {"stage": 3, "sub_group_size": 4096,
   "offload_optimizer": {"device": "$2", "nvme_path": "$nvme", "buffer_count": 4,
                         "pipeline_read": true, "pipeline_write": true},
   "offload_param": {"device": "$2", "nvme_path": "$nvme", "max_in_cpu": 0}}}
JSON
}
offload_config "$work/off.json" nvme
offload_config "$work/mem.json" none
# shellcheck disable=SC2046
"$bin" $(train_args "$work/mem.json" "$work/mem.csv" --steps 8) 2>/dev/null
# shellcheck disable=SC2046
"$bin" $(train_args "$work/off.json" "$work/straight.csv" --steps 8 --save "$work/straight_ckpt" --save-interval 2) 2>"$work/straight.log"
grep -q "offload_optimizer nvme" "$work/straight.log" || { cat "$work/straight.log"; exit 1; }
python3 - "$work/mem.csv" "$work/straight.csv" <<'PY'
import csv, sys
a = [r["loss"] for r in csv.DictReader(open(sys.argv[1]))]
b = [r["loss"] for r in csv.DictReader(open(sys.argv[2]))]
assert len(a) == 8 and a == b, (a, b)
print("offloaded run: 8 losses bit-identical to the in-memory run")
PY
for fault in offload.write:5 offload.write:90 offload.write:200; do
    rm -rf "$work/ckpt" "$work/run.csv"
    set +e
    # shellcheck disable=SC2046
    ZS_FAULT=$fault "$bin" $(train_args "$work/off.json" "$work/run.csv" --steps 8 --save "$work/ckpt" --save-interval 2) \
        >/dev/null 2>"$work/kill.log"
    rc=$?
    set -e
    [ $rc -eq 137 ] || { echo "expected SIGKILL (137) at $fault, got $rc"; cat "$work/kill.log"; exit 1; }
    stale=$(ls "$nvme/zerospeed_swap" | wc -l)
    [ "$stale" -ge 2 ] || { echo "the killed run left no swap directory to clean"; exit 1; }
    if [ -f "$work/ckpt/latest" ]; then
        latest=$(cat "$work/ckpt/latest")
        resume=(--resume)
    else
        latest=""  # killed before the first checkpoint: start over
        resume=()
    fi
    # shellcheck disable=SC2046
    "$bin" $(train_args "$work/off.json" "$work/run.csv" --steps 8 --save "$work/ckpt" --save-interval 2) \
        "${resume[@]}" >/dev/null 2>"$work/resume.log" || { cat "$work/resume.log"; exit 1; }
    [ -z "$latest" ] || grep -q "resumed from $work/ckpt/$latest" "$work/resume.log" || { cat "$work/resume.log"; exit 1; }
    grep -q "removed the swap directory of a process that died" "$work/resume.log" || { cat "$work/resume.log"; exit 1; }
    [ "$(ls "$nvme/zerospeed_swap" | wc -l)" -eq 0 ] || { ls -la "$nvme/zerospeed_swap"; exit 1; }
    python3 - "$work/straight.csv" "$work/run.csv" "$fault" "${latest:-none}" <<'PY'
import csv, sys
straight = {int(r["step"]): r["loss"] for r in csv.DictReader(open(sys.argv[1]))}
run = {int(r["step"]): r["loss"] for r in csv.DictReader(open(sys.argv[2]))}
for s in range(1, 9):
    assert run[s] == straight[s], f"{sys.argv[3]}: step {s}: {run[s]} != {straight[s]}"
print(f"{sys.argv[3]}: killed mid-step, resumed from {sys.argv[4]}, all 8 losses bit-identical")
PY
done
echo "offload_kill: ok"
