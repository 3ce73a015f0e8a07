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
gen() {  # gen OUT PROMPT TP
    local out=$1 prompt=$2 tp=$3 launch=("$bin")
    [ "$tp" -eq 1 ] || launch=("$run" --num_procs "$tp" "$bin")
    OMP_NUM_THREADS=1 "${launch[@]}" generate --model "$work/hf" --prompt "$prompt" --max-tokens 20 \
        --temperature 0 --logprobs 0 --dtype f32 --tp "$tp" >"$out.raw" 2>"$out.err" ||
        { cat "$out.err"; exit 1; }
    sed 's/^\[[0-9],[0-9]\]<stdout>://' "$out.raw" >"$out"
}
for i in 0 1 2; do
    gen "$work/one$i.jsonl" "${prompts[$i]}" 1
done
gen "$work/tp.jsonl" "${prompts[0]}" 2
grep -q "tensor-parallel shard 1 of 2" "$work/tp.jsonl.err" || { cat "$work/tp.jsonl.err"; exit 1; }
python3 - "$work/one0.jsonl" "$work/tp.jsonl" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
tp = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(tp) == 21, (len(one), len(tp))
for i, (a, b) in enumerate(zip(one[:-1], tp[:-1])):
    assert a["id"] == b["id"], f"token {i}: tp 2 gave {b['id']}, one process {a['id']}"
    assert abs(a["logprob"] - b["logprob"]) <= 1e-4, f"token {i}: logprob {b['logprob']} vs {a['logprob']}"
assert one[-1]["text"] == tp[-1]["text"]
print(f"generate --tp 2: 20 tokens equal the single process ({one[-1]['text']!r})")
PY

port=$((20000 + RANDOM % 20000))
OMP_NUM_THREADS=1 "$run" --num_procs 2 "$bin" serve --model "$work/hf" --port $port --dtype f32 \
    --tp 2 >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 $server 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.2
done
python3 - "$port" "$work" "${prompts[@]}" <<'PY'
import json, sys, threading, urllib.request
port, work, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
got = {}
def ask(i):
    body = json.dumps({"model": "hf", "prompt": prompts[i], "max_tokens": 20, "temperature": 0})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body.encode(),
                                 {"Content-Type": "application/json"})
    got[i] = json.load(urllib.request.urlopen(req, timeout=120))["choices"][0]["text"]
threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
for t in threads: t.start()
for t in threads: t.join()
for i in range(len(prompts)):
    want = json.loads(open(f"{work}/one{i}.jsonl").readlines()[-1])["text"]
    assert got.get(i) == want, f"prompt {i}: serve --tp 2 gave {got.get(i)!r}, one process {want!r}"
print(f"serve --tp 2: {len(prompts)} concurrent completions equal the single process")
PY
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
