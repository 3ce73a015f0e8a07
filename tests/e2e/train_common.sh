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
