#!/usr/bin/env bash
# e2e (issue 19): `zerospeed convert --to gguf --quantize TYPE` writes SmolLM2's matrices as
# Q8_0 / Q4_0 / Q4_1 blocks bit-identical to the gguf package's reference quantizer
# (tools/reference/check_gguf_quantize.py); `zerospeed info` shows the types; generation keeps
# the blocks quantized under --dtype auto and starts with the dequantized run's first token;
# --quantize q4_k_m writes llama-quantize's Q4_K_M mix (SmolLM2's 576-wide matrices fall back to
# Q5_0 / Q8_0; ffn_down, 1536 wide, in Q4_K or, in 14 of 30 layers, Q6_K); an unsupported type is
# refused naming --quantize.
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
"$bin" convert --model "$gguf" --to gguf --quantize q4_k_m --output "$work/q4_k_m.gguf" 2>/dev/null
"$bin" info --model "$work/q4_k_m.gguf" 2>/dev/null >"$work/info"
for want in "Q4_K x16" "Q6_K x14" "Q5_0 x166" "Q8_0 x15"; do
    grep -q "$want" "$work/info" || { echo "FAIL: q4_k_m info lacks '$want':"; cat "$work/info"; exit 1; }
done
echo "ok   q4_k_m: llama-quantize's Q4_K_M tensor types"
if "$bin" convert --model "$gguf" --to gguf --quantize q3_k --output "$work/x.gguf" 2>"$work/err"; then
    echo "FAIL: --quantize q3_k was accepted"; exit 1
fi
grep -q -- "--quantize 'q3_k'" "$work/err" || { echo "FAIL: the error does not name --quantize:"; cat "$work/err"; exit 1; }
echo "quantize_gguf: ok"
