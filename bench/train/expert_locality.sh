#!/usr/bin/env bash
# Speculative MoE, measured: a Mixtral-shaped model (hidden 128, 4 layers, 8 experts of 256,
# top-2, vocabulary 512) trained STEPS steps on Austen, then `generate --expert-locality EP`
# decodes TOKENS tokens at temperature 0 and reports how often consecutive steps route the
# sequence to the same experts (per layer) and the all-to-all bytes of keeping each token on its
# home rank vs placing it on the rank holding the previous step's experts (infer/expert_locality.h),
# for ep 2 and 4. The same generation after one step (a near-random router) is the reference.
#
# Usage: bench/train/expert_locality.sh BIN_DIR [STEPS=300] [TOKENS=200]
set -euo pipefail
bin=$1/zerospeed
steps=${2:-300}
tokens=${3:-200}
source "$(dirname "$0")/../bench_common.sh" locality 1000000 0.01
cat > "$work/model.json" <<'JSON'
{"model_type": "mixtral", "vocab_size": 512, "hidden_size": 128, "num_hidden_layers": 4,
 "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256,
 "num_local_experts": 8, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.01,
 "output_router_logits": true, "max_position_embeddings": 256, "tie_word_embeddings": false}
JSON
cat > "$work/ds.json" <<'JSON'
{"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-3}}, "zero_optimization": {"stage": 0}}
JSON
for s in 1 "$steps"; do
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$bin" train --model-config "$work/model.json" \
        --ds-config "$work/ds.json" --data "$work/data" --seq-len 64 --steps "$s" --eval-batches 1 \
        --no-progress --export-hf "$work/hf$s" >"$work/train$s.log" 2>&1 ||
        { cat "$work/train$s.log"; exit 1; }
    for ep in 2 4; do
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$bin" generate --model "$work/hf$s" \
            --prompt "It is a truth universally acknowledged" --max-tokens "$tokens" \
            --temperature 0 --ignore-eos --dtype f32 --expert-locality "$ep" \
            >/dev/null 2>"$work/gen.err" || { cat "$work/gen.err"; exit 1; }
        echo "trained $s steps, $(grep 'expert locality' "$work/gen.err")"
    done
done
