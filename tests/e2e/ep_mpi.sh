#!/usr/bin/env bash
# DeepSpeed-MoE expert parallelism across processes: a Mixtral-shaped model (4 experts, top-2,
# load-balancing loss) trained with `train --ep 2` on 2 MPI ranks, on 4 (dp x ep = 2 x 2,
# ZeRO-3: experts reduced over the expert data-parallel ranks) and with `expert_parallel_size: 4`
# in the ds_config on 4 ranks (one expert per rank, ZeRO-2) reproduces the single-process losses
# to 1e-5 relative over 8 steps; a checkpoint saved at ep 2 on 4 ranks resumes on one process,
# continuing with the single-process losses; `generate --ep 2` on the exported model gives the
# single-process tokens at temperature 0, and `serve --ep 2` its text to concurrent completions;
# so do `generate` and `serve` with `--tp 2 --ep 2` on 4 ranks (DeepSpeed-TED inference).
source "$(dirname "$0")/train_common.sh" "$1" "$2"
cat > "$work/model.json" <<'JSON'
{"model_type": "mixtral", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
 "max_position_embeddings": 64, "num_local_experts": 4, "num_experts_per_tok": 2,
 "router_aux_loss_coef": 0.02, "output_router_logits": true, "tie_word_embeddings": false}
JSON
steps=8
for stage in 0 2 3; do ds_config $stage "$work/ds$stage.json"; done
python3 - "$work/ds2.json" "$work/ep4.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["expert_parallel_size"] = 4
json.dump(c, open(sys.argv[2], "w"))
PY
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/base.csv" --steps $steps) 2>"$work/base.log"
for np_stage in "2 0" "4 3"; do
    read -r np stage <<<"$np_stage"
    # shellcheck disable=SC2046
    OMP_NUM_THREADS=1 "$run" --num_procs "$np" "$bin" $(train_args "$work/ds$stage.json" "$work/ep$np-s$stage.csv" --steps $steps --ep 2) \
        >"$work/ep$np-s$stage.log" 2>&1 || { cat "$work/ep$np-s$stage.log"; exit 1; }
    grep -q "experts over 2 expert-parallel" "$work/ep$np-s$stage.log" || { cat "$work/ep$np-s$stage.log"; exit 1; }
    same_losses "$work/base.csv" "$work/ep$np-s$stage.csv" "$np ranks, ep 2, stage $stage"
done
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/ep4.json" "$work/ep4.csv" --steps $steps) \
    >"$work/ep4.log" 2>&1 || { cat "$work/ep4.log"; exit 1; }
same_losses "$work/base.csv" "$work/ep4.csv" "4 ranks, expert_parallel_size 4"
# A checkpoint saved at ep 2 reshards to one process.
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$run" --num_procs 4 "$bin" $(train_args "$work/ds2.json" "$work/first.csv" --steps 4 --save "$work/ckpt" --ep 2) \
    >"$work/first.log" 2>&1 || { cat "$work/first.log"; exit 1; }
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds2.json" "$work/rest.csv" --steps $steps --save "$work/ckpt" --resume) \
    >"$work/rest.log" 2>&1 || { cat "$work/rest.log"; exit 1; }
grep -q "resumed from" "$work/rest.log" || { cat "$work/rest.log"; exit 1; }
same_losses "$work/base.csv" "$work/rest.csv" "saved on 4 ranks at ep 2, resumed on 1"
# generate --ep 2: the experts of the trained model sharded over 2 ranks, every rank running the
# same tokens; 20 greedy tokens (and their logprobs, to 1e-4) equal the single process's.
# shellcheck disable=SC2046
OMP_NUM_THREADS=1 "$bin" $(train_args "$work/ds0.json" "$work/gen.csv" --steps 150 --export-hf "$work/hf") \
    >"$work/gen_train.log" 2>&1 || { cat "$work/gen_train.log"; exit 1; }
gen_json "$work/gen1.jsonl" "It is a truth universally" 1 --ep 1 --ignore-eos
gen_json "$work/gen2.jsonl" "It is a truth universally" 2 --ep 2 --ignore-eos
# DeepSpeed-TED inference: tp 2 x ep 2 on 4 ranks.
gen_json "$work/gen4.jsonl" "It is a truth universally" 4 --tp 2 --ep 2 --ignore-eos
grep -q "expert-parallel shards" "$work/gen2.jsonl.err" || { cat "$work/gen2.jsonl.err"; exit 1; }
grep -q "tensor-parallel shard 1 of 2, experts 1 of 2 expert-parallel shards" "$work/gen4.jsonl.err" ||
    { cat "$work/gen4.jsonl.err"; exit 1; }
same_tokens "$work/gen1.jsonl" "$work/gen2.jsonl" "generate --ep 2"
same_tokens "$work/gen1.jsonl" "$work/gen4.jsonl" "generate --tp 2 --ep 2"
# serve --ep 2: rank 0 runs the engine (continuous batching over the paged KV cache), rank 1 its
# forwards with the other half of the experts; concurrent /v1/completions at temperature 0 give
# the single process's text.
prompts=("It is a truth universally" "Elizabeth said" "The sisters")
for i in 0 1 2; do
    gen_json "$work/one$i.jsonl" "${prompts[$i]}" 1 --ep 1
done
# serve --tp 2 --ep 2: the same with tensor-parallel experts on 4 ranks (TED).
for np_flags in "2:--ep 2" "4:--tp 2 --ep 2"; do
    np=${np_flags%%:*} flags=${np_flags#*:}
    # shellcheck disable=SC2086
    serve_start "$np" $flags
    rc=0
    serve_same_text "serve $flags" "${prompts[@]}" || rc=$?
    kill -TERM $server 2>/dev/null
    wait $server || true
    [ $rc -eq 0 ] || { cat "$work/serve.log"; exit 1; }
    grep -q "experts 1 of 2 expert-parallel shards" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
done
