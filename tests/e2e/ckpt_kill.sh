#!/usr/bin/env bash
# ckpt_kill9_mid_write: SIGKILL inside checkpoint saves (ZS_FAULT=ckpt.write:N at every fault
# point of the second save, and file.before_rename / file.before_fsync), then --resume: training
# continues from the last complete checkpoint, no partial checkpoint is ever loaded, and the final
# losses equal an uninterrupted run bit for bit.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
ds_config 2 "$work/ds.json"
export OMP_NUM_THREADS=1
# shellcheck disable=SC2046
"$bin" $(train_args "$work/ds.json" "$work/straight.csv" --steps 8 --save "$work/straight_ckpt" --save-interval 2) 2>/dev/null
for fault in ckpt.write:6 ckpt.write:7 ckpt.write:8 ckpt.write:9 ckpt.write:10 file.before_rename:4 file.before_fsync:5; do
    rm -rf "$work/ckpt" "$work/run.csv"
    set +e
    # shellcheck disable=SC2046
    ZS_FAULT=$fault "$bin" $(train_args "$work/ds.json" "$work/run.csv" --steps 8 --save "$work/ckpt" --save-interval 2) \
        >/dev/null 2>"$work/kill.log"
    rc=$?
    set -e
    [ $rc -eq 137 ] || { echo "expected SIGKILL (137) at $fault, got $rc"; cat "$work/kill.log"; exit 1; }
    latest=$(cat "$work/ckpt/latest")
    # shellcheck disable=SC2046
    "$bin" $(train_args "$work/ds.json" "$work/run.csv" --steps 8 --save "$work/ckpt" --save-interval 2 --resume) \
        >/dev/null 2>"$work/resume.log" || { cat "$work/resume.log"; exit 1; }
    grep -q "resumed from $work/ckpt/$latest" "$work/resume.log" || { cat "$work/resume.log"; exit 1; }
    python3 - "$work/straight.csv" "$work/run.csv" "$fault" <<'PY'
import csv, sys
straight = {int(r["step"]): r["loss"] for r in csv.DictReader(open(sys.argv[1]))}
run = {int(r["step"]): r["loss"] for r in csv.DictReader(open(sys.argv[2]))}
for s in range(1, 9):
    assert run[s] == straight[s], f"{sys.argv[3]}: step {s}: {run[s]} != {straight[s]}"
print(f"{sys.argv[3]}: killed mid-save, resumed, all 8 losses bit-identical")
PY
done
echo "ckpt_kill: ok"
