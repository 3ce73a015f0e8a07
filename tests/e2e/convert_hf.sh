#!/usr/bin/env bash
# zerospeed convert --to hf: a checkpoint saved by 2 ranks at ZeRO-3 becomes an HF directory
# (streamed group by group, sharded safetensors + index + config.json). Checks: zerospeed loads it
# and generates exactly what the trainer's own export generates; transformers (the reference venv,
# tools/reference_venv.sh) loads it too and its greedy continuation equals zerospeed's token for
# token.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
ds_config 3 "$work/ds.json"
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" $(train_args "$work/ds.json" "$work/m.csv" --steps 6 --save "$work/ckpt" \
    --export-hf "$work/exported") >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
"$bin" convert --checkpoint "$work/ckpt" --to hf --output "$work/hf" 2>"$work/convert.log" || { cat "$work/convert.log"; exit 1; }
test -f "$work/hf/model.safetensors.index.json" && test -f "$work/hf/config.json"
# Both exports carry the tokenizer the data was prepared with, and a generation config.
for d in hf exported; do
    for f in tokenizer.json generation_config.json; do
        [ -f "$work/$d/$f" ] || { echo "FAIL: $d has no $f"; ls "$work/$d"; exit 1; }
    done
done
a=$("$bin" generate --model "$work/hf" --prompt "It is a truth" --max-tokens 12 --temperature 0 2>/dev/null)
b=$("$bin" generate --model "$work/exported" --prompt "It is a truth" --max-tokens 12 --temperature 0 2>/dev/null)
[ "$a" = "$b" ] || { echo "converted: '$a' vs exported: '$b'"; exit 1; }
echo "convert: zerospeed generates the same from the converted and the exported model"
# train --steps 0 --save writes a checkpoint of the weights as loaded (to reshard or convert).
"$bin" train --model "$work/hf" --ds-config "$work/ds.json" --data "$work/data" --seq-len 32 \
    --eval-batches 1 --no-progress --steps 0 --save "$work/ck0" >"$work/s0.log" 2>&1 || {
    cat "$work/s0.log"; exit 1; }
"$bin" convert --checkpoint "$work/ck0" --to hf --output "$work/hf0" 2>/dev/null
c=$("$bin" generate --model "$work/hf0" --prompt "It is a truth" --max-tokens 12 --temperature 0 2>/dev/null)
[ "$a" = "$c" ] || { echo "steps 0: '$c' vs '$a'"; exit 1; }
echo "convert: train --steps 0 --save keeps the weights as loaded"
# transformers (the reference venv, installed by tools/reference_venv.sh) loads the directory as
# it is and continues the prompt greedily: the same tokens as zerospeed.
py=$("$2/tools/reference_venv.sh")
ids=$(printf '%s' "It is a truth" | "$bin" tokenize --tokenizer "$work/hf" | tr -d '[],')
# shellcheck disable=SC2086
hf_ids=$("$py" "$2/tools/reference/check_hf_export.py" "$work/hf" 12 $ids 2>"$work/hf.log") || {
    cat "$work/hf.log"; exit 1; }
hf_text=$(printf '%s' "$hf_ids" | "$bin" tokenize --tokenizer "$work/hf" --decode)
[ "$hf_text" = "${a%$'\n'}" ] || [ "It is a truth$hf_text" = "${a%$'\n'}" ] || [ "$hf_text" = "$a" ] || {
    echo "transformers: '$hf_text' vs zerospeed: '$a'"; exit 1; }
echo "convert: transformers loads the directory and generates the same tokens"
echo "convert_hf: ok"
