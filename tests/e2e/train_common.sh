# Shared setup for the training e2e tests: a tiny tokenizer, dataset, model and configs under $work.
# Usage: source train_common.sh BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$1/zerospeed
run=$1/zerospeed-run
src=$2
work=$(mktemp -d /tmp/zs_e2e.XXXXXX)
trap 'rm -rf "$work"' EXIT
head -c 300000 "$src/data/corpora/austen.txt" > "$work/text.txt"
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 512 --output "$work/tok" >/dev/null 2>&1
"$bin" data prepare --tokenizer "$work/tok" --input "$work/text.txt" --output "$work/data" \
    --val-fraction 0.05 >/dev/null 2>&1
cat > "$work/model.json" <<'JSON'
{"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
 "max_position_embeddings": 64, "tie_word_embeddings": false}
JSON
ds_config() {  # ds_config STAGE FILE
    cat > "$2" <<JSON
{"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.1}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-3, "warmup_num_steps": 4}},
 "gradient_clipping": 1.0, "zero_optimization": {"stage": $1}}
JSON
}
train_args() {  # train_args CONFIG METRICS [extra...]
    local cfg=$1 metrics=$2
    shift 2
    echo train --model-config "$work/model.json" --ds-config "$cfg" --data "$work/data" --seq-len 32 \
        --eval-batches 2 --metrics "$metrics" --no-progress "$@"
}
same_losses() {  # same_losses BASE.csv GOT.csv LABEL: every step of GOT equals BASE's to 1e-5 relative
    python3 - "$1" "$2" "$3" <<'PY'
import csv, sys
base = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))}
got = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(sys.argv[2]))}
assert got and set(got) <= set(base), (sorted(base), sorted(got))
for s in sorted(got):
    assert abs(base[s] - got[s]) <= 1e-5 * abs(base[s]), f"{sys.argv[3]} step {s}: {got[s]} vs {base[s]}"
print(f"{sys.argv[3]}: steps {min(got)}-{max(got)} match (last {got[max(got)]:.6f})")
PY
}
# Inference across processes (ep_mpi, tp_infer_mpi):
gen_json() {  # gen_json OUT PROMPT NP [ARGS...]: 20 greedy tokens and logprobs of `generate ARGS` on NP ranks
    local out=$1 prompt=$2 np=$3 launch=("$bin")
    shift 3
    [ "$np" -eq 1 ] || launch=("$run" --num_procs "$np" "$bin")
    OMP_NUM_THREADS=1 "${launch[@]}" generate --model "$work/hf" --prompt "$prompt" --max-tokens 20 \
        --temperature 0 --logprobs 0 --dtype f32 "$@" >"$out.raw" 2>"$out.err" ||
        { cat "$out.err"; exit 1; }
    sed 's/^\[[0-9],[0-9]\]<stdout>://' "$out.raw" >"$out"
}
same_tokens() {  # same_tokens ONE.jsonl GOT.jsonl LABEL: the 20 token ids equal, logprobs to 1e-4
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(got) == 21, (len(one), len(got))
for i, (a, b) in enumerate(zip(one[:-1], got[:-1])):
    assert a["id"] == b["id"], f"{sys.argv[3]}: token {i} is {b['id']}, one process {a['id']}"
    assert abs(a["logprob"] - b["logprob"]) <= 1e-4, f"token {i}: logprob {b['logprob']} vs {a['logprob']}"
assert one[-1]["text"] == got[-1]["text"]
print(f"{sys.argv[3]}: 20 tokens equal the single process ({one[-1]['text']!r})")
PY
}
serve_launch() {  # serve_launch CMD...: CMD --port 0 in the background until /health answers;
    # sets $port (the one the server bound and logged: no port drawn here can be taken by another
    # process first) and $server.
    "$@" --port 0 >"$work/serve.log" 2>&1 &
    server=$!
    port=""
    for _ in $(seq 1 150); do
        [ -n "$port" ] ||
            port=$(sed -n 's|.* on http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/serve.log" | head -1)
        [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
        kill -0 $server 2>/dev/null || { cat "$work/serve.log"; exit 1; }
        sleep 0.2
    done
    echo "serve did not start"
    cat "$work/serve.log"
    exit 1
}
serve_start() {  # serve_start N FLAG...: `serve` on N ranks in the background; sets $port, $server
    local n=$1
    shift
    serve_launch env OMP_NUM_THREADS=1 "$run" --num_procs "$n" "$bin" serve --model "$work/hf" \
        --dtype f32 "$@"
}
serve_same_text() {  # serve_same_text LABEL PROMPT...: concurrent completions = $work/one<i>.jsonl's text
    local label=$1
    shift
    python3 - "$port" "$work" "$label" "$@" <<'PY'
import json, sys, threading, urllib.request
port, work, label, prompts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
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
    assert got.get(i) == want, f"prompt {i}: {label} gave {got.get(i)!r}, one process {want!r}"
print(f"{label}: {len(prompts)} concurrent completions equal the single process")
PY
}
