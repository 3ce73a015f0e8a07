#!/usr/bin/env bash
# Tensor-parallel inference across processes: `generate --tp 2` on 2 MPI ranks gives the
# single-process tokens at temperature 0 (logprobs to 1e-4); `serve --tp 2` answers concurrent
# completions with the single-process text (continuous batching over the paged KV cache of both
# ranks), and a rank killed with SIGKILL ends the whole job instead of leaving the server hanging.
source "$(dirname "$0")/train_common.sh" "$1" "$2"
ds_config 0 "$work/ds0.json"
# shellcheck disable=SC2046
"$bin" $(train_args "$work/ds0.json" "$work/train.csv" --steps 120 --export-hf "$work/hf") \
    >"$work/train.log" 2>&1 || { cat "$work/train.log"; exit 1; }
prompts=("It is a truth universally" "Elizabeth said" "The sisters")
for i in 0 1 2; do
    gen_json "$work/one$i.jsonl" "${prompts[$i]}" 1 --tp 1
done
gen_json "$work/tp.jsonl" "${prompts[0]}" 2 --tp 2
grep -q "tensor-parallel shard 1 of 2" "$work/tp.jsonl.err" || { cat "$work/tp.jsonl.err"; exit 1; }
same_tokens "$work/one0.jsonl" "$work/tp.jsonl" "generate --tp 2"
serve_start 2 --tp 2
serve_same_text "serve --tp 2" "${prompts[@]}"
# Kill tensor-parallel rank 1: the job must end (mpirun stops every rank), not hang.
follower=""
for p in $(pgrep -f "zerospeed serve --model $work/hf"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -q '^OMPI_COMM_WORLD_RANK=1$'; then follower=$p; fi
done
[ -n "$follower" ] || { echo "no rank-1 process found"; cat "$work/serve.log"; exit 1; }
kill -9 "$follower"
for _ in $(seq 1 100); do
    kill -0 $server 2>/dev/null || break
    sleep 0.2
done
if kill -0 $server 2>/dev/null; then
    echo "serve --tp 2 still running 20 s after rank 1 was killed"
    kill -9 $server
    exit 1
fi
rc=0
wait $server || rc=$?
[ $rc -ne 0 ] || { echo "serve --tp 2 exited 0 after losing a rank"; exit 1; }
grep -q "rank 1" "$work/serve.log" || { cat "$work/serve.log"; exit 1; }
echo "serve --tp 2: killing rank 1 ended the job (exit $rc)"
