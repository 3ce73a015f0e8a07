#!/usr/bin/env bash
# Expert-parallel inference throughput, before vs after the duplicate-token elimination over ep:
# `generate --ep 2` (prefill and decode tokens/s of one sequence) and `serve --ep 2` under
# `zerospeed bench serve` (output tokens/s of concurrent clients, so decode steps carry several
# rows), each with every ep rank dispatching only its 1/ep slice of the replicated batch (after)
# and with ZS_EP_SLICE=0, every rank dispatching the whole batch (before: the experts computed
# ep x the rows), alternating in the same run. Mixtral-shaped (hidden 256, 4 layers, 8 experts of
# 512, top-2, vocabulary 512, f32) after one training step (weights near their initialisation:
# the routing is what it is, the throughput is what counts), one thread per rank.
#
# Usage: bench/train/ep_infer_bench.sh BIN_DIR [REPS=3] [CLIENTS=8]
# (BIN_DIR holds zerospeed and zerospeed-run, e.g. build/bin.) docs/BENCHMARKS.md has a run.
set -euo pipefail
bin=$1/zerospeed
run=$1/zerospeed-run
reps=${2:-3}
clients=${3:-8}
source "$(dirname "$0")/../bench_common.sh" epinfer 1000000 0.01
srv=""
cleanup() {
    [ -z "$srv" ] || kill "$srv" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/model.json" <<'JSON'
{"model_type": "mixtral", "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 4,
 "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 512,
 "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 512,
 "tie_word_embeddings": false}
JSON
cat > "$work/ds.json" <<'JSON'
{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1,
 "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}, "zero_optimization": {"stage": 0}}
JSON
OMP_NUM_THREADS=1 "$bin" train --model-config "$work/model.json" --ds-config "$work/ds.json" \
    --data "$work/data" --seq-len 64 --steps 1 --eval-batches 1 --no-progress \
    --export-hf "$work/hf" >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
prompt=$(head -c 500 "$src/data/corpora/austen.txt" | tr '\n' ' ')
gen() {  # gen ENV...: "prompt_tps decode_tps" of generate --ep 2
    env OMP_NUM_THREADS=1 "$@" "$run" --num_procs 2 "$bin" generate --model "$work/hf" \
        --prompt "$prompt" --max-tokens 256 --temperature 0 --ignore-eos --dtype f32 --ep 2 \
        2>&1 >/dev/null | sed -n 's/.*prompt: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tokens\/s) | generated: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tokens\/s).*/\1 \2/p' | head -1
}
serve_tps() {  # serve_tps ENV...: output tokens/s of bench serve against serve --ep 2
    env OMP_NUM_THREADS=1 "$@" "$run" --num_procs 2 "$bin" serve --model "$work/hf" --dtype f32 \
        --port 8337 --ep 2 --kv-cache-memory 64M >"$work/serve.log" 2>&1 &
    srv=$!
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8337/v1/models >/dev/null 2>&1 && break; sleep 0.2; done
    "$bin" bench serve --url http://127.0.0.1:8337 --clients "$clients" --requests $((4 * clients)) \
        --prompt-tokens 128 --output-tokens 64 --max-prompt-tokens 256 --max-output-tokens 128 \
        --text "$work/text.txt" --tokenizer "$work/hf" 2>/dev/null | tail -1 | awk '{print $4}'
    kill "$srv"
    wait "$srv" 2>/dev/null || true
    srv=""
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
median() { sort -g | awk '{v[NR] = $1} END {printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo "ep 2 inference, 1 thread per rank, $reps rounds (before = ZS_EP_SLICE=0)"
: >"$work/ratios"
for rep in $(seq 1 "$reps"); do
    read -r bp bd <<<"$(gen ZS_EP_SLICE=0)"
    read -r ap ad <<<"$(gen ZS_EP_SLICE=1)"
    bs=$(serve_tps ZS_EP_SLICE=0)
    as=$(serve_tps ZS_EP_SLICE=1)
    echo "$(ratio "$ap" "$bp") $(ratio "$ad" "$bd") $(ratio "$as" "$bs")" >>"$work/ratios"
    echo "round $rep: generate prefill tokens/s before $bp after $ap ($(ratio "$ap" "$bp")x)," \
        "decode before $bd after $ad ($(ratio "$ad" "$bd")x);" \
        "serve $clients clients output tokens/s before $bs after $as ($(ratio "$as" "$bs")x)"
done
echo "median after / before: generate prefill $(cut -d' ' -f1 "$work/ratios" | median)x," \
    "decode $(cut -d' ' -f2 "$work/ratios" | median)x, serve $(cut -d' ' -f3 "$work/ratios" | median)x"
