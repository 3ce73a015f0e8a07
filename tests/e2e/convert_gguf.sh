#!/usr/bin/env bash
# e2e: `zerospeed convert --to gguf` re-types SmolLM2's Q4_1 GGUF. The f32 file holds exactly the
# dequantized weights, so greedy generation from it equals generation from the original token for
# token; the bf16 file is half the f32 one's size and loads too.
# Usage: convert_gguf.sh <zerospeed binary> <repo root>
set -euo pipefail
bin=$1
root=$2
gguf=$("$root/tools/fetch_smollm2.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" convert --model "$gguf" --to gguf --dtype f32 --output "$work/f32.gguf" 2>/dev/null
"$bin" convert --model "$gguf" --to gguf --dtype bf16 --output "$work/bf16.gguf" 2>/dev/null
gen() { "$bin" generate --model "$1" --dtype f32 --prompt "The capital of France is" --max-tokens 12 --temperature 0 2>/dev/null; }
want=$(gen "$gguf")
got=$(gen "$work/f32.gguf")
[ "$want" = "$got" ] || { echo "FAIL: f32 copy generates '$got', the original '$want'"; exit 1; }
echo "ok   f32 copy: same greedy text: $got"
f32=$(stat -c %s "$work/f32.gguf")
bf16=$(stat -c %s "$work/bf16.gguf")
python3 -c "import sys; r = $bf16 / $f32; print(f'bf16/f32 size {r:.3f}'); sys.exit(0 if 0.45 < r < 0.55 else 1)"
"$bin" generate --model "$work/bf16.gguf" --prompt "The capital of France is" --max-tokens 4 \
    --temperature 0 >/dev/null 2>&1 || { echo "FAIL: the bf16 copy does not load"; exit 1; }
if "$bin" convert --model "$gguf" --to gguf --dtype q9 --output "$work/x.gguf" 2>"$work/err"; then
    echo "FAIL: --dtype q9 was accepted"
    exit 1
fi
grep -q "dtype 'q9'" "$work/err" || { echo "FAIL: the error does not name --dtype:"; cat "$work/err"; exit 1; }
# --dtype auto (the default): a quantized or bf16 file computes in bf16 where the CPU has native
# bf16, in f32 otherwise; an f32 file in f32. The log says which and why.
want=f32
"$bin" doctor --brief | grep -q "bf16 GEMMs native" && want=bf16
for case in "$gguf:$want" "$work/bf16.gguf:$want" "$work/f32.gguf:f32"; do
    "$bin" generate --model "${case%:*}" --prompt "Hi" --max-tokens 1 >/dev/null 2>"$work/log"
    grep -q "compute dtype ${case##*:}" "$work/log" || {
        echo "FAIL: ${case%:*} should compute in ${case##*:}:"; cat "$work/log"; exit 1; }
done
echo "ok   --dtype auto: $want for quantized and bf16 files here, f32 for an f32 file"
echo "convert_gguf: ok"
