#!/usr/bin/env bash
# e2e (issue 19): `zerospeed convert --to gguf --quantize TYPE` writes SmolLM2's matrices as
# Q8_0 / Q4_0 / Q4_1 blocks bit-identical to the gguf package's reference quantizer
# (tools/reference/check_gguf_quantize.py); `zerospeed info` shows the types; generation keeps
# the blocks quantized under --dtype auto and starts with the dequantized run's first token;
# an unsupported type is refused naming --quantize.
# Usage: quantize_gguf.sh <zerospeed binary> <repo root>
set -euo pipefail
bin=$1
root=$2
gguf=$("$root/tools/fetch_smollm2.sh")
py=$("$root/tools/reference_venv.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for q in q8_0 q4_0 q4_1; do
    "$bin" convert --model "$gguf" --to gguf --quantize $q --output "$work/$q.gguf" 2>/dev/null
    Q=${q^^}
    "$bin" info --model "$work/$q.gguf" 2>/dev/null | grep -q "$Q x211" || {
        echo "FAIL: info does not list 211 $Q tensors:"; "$bin" info --model "$work/$q.gguf"; exit 1; }
done
echo "ok   info lists 211 quantized matrices per file"
"$py" "$root/tools/reference/check_gguf_quantize.py" "$gguf" "$work"/q8_0.gguf "$work"/q4_0.gguf \
    "$work"/q4_1.gguf
prompt="The capital of France is"
for m in "$gguf" "$work/q8_0.gguf"; do
    q=$("$bin" generate --model "$m" --prompt "$prompt" --max-tokens 3 --temperature 0 2>"$work/log")
    grep -q "weight matrices kept block-quantized" "$work/log" || {
        echo "FAIL: $m not kept quantized:"; cat "$work/log"; exit 1; }
    d=$("$bin" generate --model "$m" --dtype f32 --prompt "$prompt" --max-tokens 1 --temperature 0 2>/dev/null)
    [ "${q#"$d"}" != "$q" ] || { echo "FAIL: $m: quantized '$q' does not start with '$d'"; exit 1; }
    echo "ok   $(basename "$m"): quantized generation '${q//$'\n'/ }' starts with the dequantized '$d'"
done
if "$bin" convert --model "$gguf" --to gguf --quantize q4_k --output "$work/x.gguf" 2>"$work/err"; then
    echo "FAIL: --quantize q4_k was accepted"; exit 1
fi
grep -q -- "--quantize 'q4_k'" "$work/err" || { echo "FAIL: the error does not name --quantize:"; cat "$work/err"; exit 1; }
echo "quantize_gguf: ok"
