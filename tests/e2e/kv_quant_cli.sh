#!/usr/bin/env bash
# e2e: the quantized KV cache from the command line on SmolLM2 (issue 19).
# - `zerospeed perplexity` over a held-back slice of Austen: the int8 cache within 0.5% of the
#   bf16 cache's perplexity (the issue's accuracy goal), fp8 within 2%. The prefill runs the
#   exact product (ZS_QUANT_PREFILL=dequant) so only the cache differs: with int8 activations
#   (the AVX2 default for Q4_1) every change of K/V rounding re-draws the activations' rounding
#   too, and over these 381 tokens that alone moves perplexity by up to ~0.9% either way.
# - `zerospeed generate --kv-cache-dtype int8`: the first 4 greedy tokens are bf16's, each
#   log-probability within 0.2 nats of bf16's. (The quantized matrices' decode kernels round the
#   activations to int8 per block: against the dequantized f32 model, the bf16-KV run's
#   log-probabilities already differ by up to 0.15 nats on this prompt with the interleaved VNNI
#   kernel, 0.10 with the scalar one; the engine test holds int8 KV to 0.05 on a model without
#   that noise.)
# - Bad input: an unknown --kv-cache-dtype and a file shorter than one chunk are refused by name.
# Usage: kv_quant_cli.sh <zerospeed binary> <repo root>
set -euo pipefail
bin=$1
root=$2
gguf=$("$root/tools/fetch_smollm2.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ppl() {
    ZS_QUANT_PREFILL=dequant "$bin" perplexity --model "$gguf" \
        --file "$root/data/corpora/austen.txt" --tail-bytes 20000 --ctx 128 --chunks 3 --quiet --kv-cache-dtype "$1" 2>/dev/null | sed -n 's/^perplexity \([0-9.]*\) .*/\1/p'
}
b=$(ppl bf16)
i=$(ppl int8)
f=$(ppl fp8)
echo "perplexity: bf16 $b, int8 $i, fp8 $f"
python3 - "$b" "$i" "$f" <<'PY'
import sys
b, i, f = map(float, sys.argv[1:])
assert b > 1, b
assert abs(i / b - 1) <= 0.005, f"int8 {i} vs bf16 {b}: {100 * (i / b - 1):.2f}%"
assert abs(f / b - 1) <= 0.02, f"fp8 {f} vs bf16 {b}: {100 * (f / b - 1):.2f}%"
PY
gen() {
    "$bin" generate --model "$gguf" --prompt "The capital of France is" --max-tokens 4 \
        --temperature 0 --logprobs 0 --kv-cache-dtype "$1" 2>/dev/null | head -4 >"$work/$1.jsonl"
}
gen bf16
gen int8
python3 - "$work/bf16.jsonl" "$work/int8.jsonl" <<'PY'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert len(a) == len(b) == 4, (len(a), len(b))
for x, y in zip(a, b):
    assert x["id"] == y["id"], (x, y)
    assert abs(x["logprob"] - y["logprob"]) <= 0.2, (x["logprob"], y["logprob"])
PY
echo "generate: int8 KV gives bf16's first tokens, logprobs within 0.2 nats"
if "$bin" perplexity --model "$gguf" --file "$root/data/corpora/austen.txt" --chunks 1 \
    --kv-cache-dtype int4 >/dev/null 2>"$work/err"; then
    echo "FAIL: --kv-cache-dtype int4 accepted"; exit 1
fi
grep -q -- "--kv-cache-dtype: 'int4' is not a KV cache dtype" "$work/err" || { cat "$work/err"; exit 1; }
printf 'too short\n' >"$work/short.txt"
if "$bin" perplexity --model "$gguf" --file "$work/short.txt" >/dev/null 2>"$work/err"; then
    echo "FAIL: a file shorter than one chunk accepted"; exit 1
fi
grep -q "short.txt" "$work/err" || { cat "$work/err"; exit 1; }
echo "refusals: ok"
