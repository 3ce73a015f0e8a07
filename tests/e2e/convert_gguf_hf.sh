#!/usr/bin/env bash
# e2e: `zerospeed convert --model SmolLM2.gguf --to hf` writes a Hugging Face directory (sharded
# safetensors + index, config.json, tokenizer.json + tokenizer_config.json from the GGUF's
# metadata, generation_config.json) that (1) zerospeed generates from exactly as from the GGUF,
# and (2) transformers loads as it is: tokenizer ids, chat rendering and logits equal
# transformers' own reading of the GGUF (tools/reference/check_gguf_hf.py).
# Usage: convert_gguf_hf.sh <zerospeed binary> <repo root>
set -euo pipefail
bin=$1
root=$2
gguf=$("$root/tools/fetch_smollm2.sh")
py=$("$root/tools/reference_venv.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" convert --model "$gguf" --to hf --output "$work/hf" 2>"$work/convert.log" || {
    cat "$work/convert.log"; exit 1; }
for f in config.json model.safetensors.index.json tokenizer.json tokenizer_config.json \
    generation_config.json; do
    [ -f "$work/hf/$f" ] || { echo "FAIL: $f missing"; ls "$work/hf"; exit 1; }
done
echo "ok   convert wrote $(ls "$work/hf" | wc -l) files"
prompt="The capital of France is"
a=$("$bin" generate --model "$gguf" --dtype f32 --prompt "$prompt" --max-tokens 16 --temperature 0 2>/dev/null)
b=$("$bin" generate --model "$work/hf" --dtype f32 --prompt "$prompt" --max-tokens 16 --temperature 0 2>/dev/null)
[ "$a" = "$b" ] || { echo "FAIL generate: gguf '$a' vs hf '$b'"; exit 1; }
echo "ok   zerospeed generates the same from the GGUF and the exported directory: '${a//$'\n'/ }'"
# generate --logprobs N: JSON Lines, one per token (greedy: the top alternative is the token
# itself), then the whole text, which equals the plain run's.
"$bin" generate --model "$gguf" --dtype f32 --prompt "$prompt" --max-tokens 16 --temperature 0 \
    --logprobs 3 2>/dev/null >"$work/lp.jsonl"
python3 - "$work/lp.jsonl" "$a" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
*toks, end = lines
assert len(toks) == 16 == end["completion_tokens"], len(toks)
for t in toks:
    assert len(t["top"]) == 3 and t["top"][0]["id"] == t["id"], t
    assert t["logprob"] <= 0 and abs(t["top"][0]["logprob"] - t["logprob"]) < 1e-6, t
    assert t["top"][0]["logprob"] >= t["top"][1]["logprob"] >= t["top"][2]["logprob"], t
assert end["text"] == sys.argv[2].rstrip("\n"), (end["text"], sys.argv[2])
print("ok   generate --logprobs 3: 16 token lines, greedy tokens are their own top-1, same text")
PY
"$py" "$root/tools/reference/check_gguf_hf.py" "$work/hf" "$gguf" \
    "$root/tests/fixtures/smollm2/reference.safetensors" 2>"$work/py.log" || {
    tail -20 "$work/py.log"; exit 1; }
