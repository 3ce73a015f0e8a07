#!/usr/bin/env bash
# `make demo`: the bundled default. Trains a byte-level BPE tokenizer (4096 tokens) on the bundled
# public-domain corpora (Austen + King James Bible, data/corpora), tokenizes them, trains a
# 12.3 M-parameter GPT across 2 ranks with ZeRO-3 (zerospeed-run over mpirun; one process when
# mpirun is absent), saves a checkpoint, converts it to a Hugging Face directory, plots the
# metrics and generates text from it.
set -euo pipefail
build=${1:-build}
bin=$build/bin/zerospeed
out=$build/demo
steps=${ZS_DEMO_STEPS:-150}
mkdir -p "$out"

if [ ! -f "$out/tokenizer/tokenizer.json" ]; then
    "$bin" tokenizer train --input data/corpora/austen.txt data/corpora/kjv.txt --vocab-size 4096 \
        --output "$out/tokenizer"
fi
if [ ! -f "$out/data/index.json" ]; then
    "$bin" data prepare --tokenizer "$out/tokenizer" --input data/corpora/austen.txt data/corpora/kjv.txt \
        --output "$out/data" --val-fraction 0.01
fi

rm -rf "$out/ckpt" "$out/model"
# bf16 where the CPU computes it natively (AMX or AVX-512-BF16), fp32 where bf16 is emulated.
ds=configs/demo_ds_config.json
if "$bin" doctor --size 64 2>/dev/null | grep -qE "avx512_core_amx|avx512_core_bf16"; then
    ds=configs/demo_ds_config_bf16.json
fi
echo "demo: training with $ds"
args=(train --model-config configs/demo_gpt.json --ds-config "$ds"
      --data "$out/data" --seq-len 128 --steps "$steps" --eval-interval 50 --eval-batches 8
      --save "$out/ckpt" --metrics "$out/metrics.csv")
if command -v mpirun >/dev/null; then
    OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs 2 "$bin" "${args[@]}"
else
    echo "demo: mpirun not found; training on one process" >&2
    "$bin" "${args[@]}"
fi
# Consolidate the 2-rank ZeRO-3 checkpoint into a Hugging Face directory (streamed by group).
"$bin" convert --checkpoint "$out/ckpt" --to hf --output "$out/model"
cp "$out/tokenizer/tokenizer.json" "$out/model/"
"$bin" plot "$out/metrics.csv" -o "$out/metrics.svg"
echo
echo "=== generating from the trained model ($out/model) ==="
"$bin" generate --model "$out/model" --prompt "It is a truth universally acknowledged, that" \
    --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1
