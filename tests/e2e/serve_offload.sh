#!/usr/bin/env bash
# ZeRO-Inference in the server (issue 18): `serve --offload-weights nvme` (O_DIRECT block files
# read once per engine step) and `--offload-weights cpu` answer concurrent greedy completions with
# the text of the in-memory server and of one-process `generate` (f32, a tiny trained Llama); the
# swap directory is gone after SIGTERM, the exit log gives the bytes per step and the memory peak;
# bad combinations are refused by name.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
ds_config 0 "$work/ds0.json"
# shellcheck disable=SC2046
"$bin" $(train_args "$work/ds0.json" "$work/train.csv" --steps 40 --export-hf "$work/hf") \
    >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
prompts=("It is a truth universally" "Elizabeth said" "The sisters" "Mr. Darcy")
for i in 0 1 2 3; do
    gen_json "$work/one$i.jsonl" "${prompts[$i]}" 1
done
serve_up() {  # serve_up FLAG...: train_common's serve_start, one process without mpirun (whose
    # SIGTERM would not let the server log its exit report)
    serve_launch env OMP_NUM_THREADS=1 "$bin" serve --model "$work/hf" --dtype f32 "$@"
}
serve_stop() {  # SIGTERM, exit 0
    kill -TERM "$server"
    wait "$server" || { echo "serve exited $?"; cat "$work/serve.log"; exit 1; }
}
serve_up
serve_same_text "serve (in memory)" "${prompts[@]}"
serve_stop
mkdir -p "$work/nvme"
serve_up --offload-weights nvme --offload-path "$work/nvme" --memory-cap 64M --prefetch 1 \
    --kv-cache-memory 8M
grep -q "zero-inference: 2 blocks .* streamed from nvme" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
[ -n "$(ls -A "$work/nvme/zerospeed_swap" 2>/dev/null)" ] || { echo "no swap files"; exit 1; }
serve_same_text "serve --offload-weights nvme" "${prompts[@]}"
serve_stop
grep -q "offload-weights: .* B) of block weights per engine step, [0-9]* steps" "$work/serve.log" ||
    { cat "$work/serve.log"; exit 1; }
grep "offload-weights:" "$work/serve.log" | sed 's/^.*offload-weights/offload-weights/'
[ -z "$(ls -A "$work/nvme/zerospeed_swap" 2>/dev/null)" ] || { echo "swap files left"; exit 1; }
serve_up --offload-weights cpu
serve_same_text "serve --offload-weights cpu" "${prompts[@]}"
serve_stop
refused() {  # refused MESSAGE ARGS...: serve ARGS exits 1 naming MESSAGE
    local want=$1
    shift
    if "$bin" serve --model "$work/hf" --port 0 "$@" >"$work/bad.log" 2>&1; then
        echo "serve $* started"; exit 1
    fi
    grep -qF -- "$want" "$work/bad.log" || { echo "serve $*: expected '$want'"; cat "$work/bad.log"; exit 1; }
    echo "refused: serve $* -> $want"
}
refused "--offload-path: required with --offload-weights nvme" --offload-weights nvme
refused "--offload-path: only with --offload-weights nvme" --offload-path "$work/nvme"
refused "serve --offload-weights: one rank only, not with --tp / --ep" --offload-weights cpu --tp 2
refused "--memory-cap 16.00 MiB: the KV pool's --kv-cache-memory 1.00 GiB leaves nothing" \
    --offload-weights cpu --memory-cap 16M
refused "--memory-cap 16.00 MiB: the stream's resident weights and buffers" --offload-weights cpu \
    --memory-cap 16M --kv-blocks 100000
refused "--memory-cap 16.00 MiB: the weights" --memory-cap 16M --kv-blocks 100000
