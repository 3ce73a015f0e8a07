# Shared by bench/quant/decode_ab.sh and prefill_ab.sh (sourced, not run): the prompt both
# measure, the llama-bench rate reader, and the per-file medians of a run log whose lines read
# "round R FILE KIND VALUE".

# The 557-token Austen prompt (SmolLM2's tokenizer) both scripts give zerospeed.
ab_prompt() { head -c 2500 "$1/data/corpora/austen.txt" | tail -c 2390; }

# tokens/s of one llama-bench run (avg_ts, the csv's second-last column): llama_bench_ts BENCH
# FILE THREADS ARGS... (ARGS: -p 512 -n 0, or -p 0 -n 64 -d 512).
llama_bench_ts() {
    local bench=$1 file=$2 t=$3
    shift 3
    "$bench" -m "$file" "$@" -t "$t" -r 1 -o csv </dev/null 2>/dev/null | tail -1 |
        awk -F, '{gsub(/"/, ""); print $(NF - 1)}'
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# The median of KIND's values for FILE (a basename without .gguf) in LOG: ab_col LOG FILE KIND.
ab_col() { awk -v q="$2" -v c="$3" '$3==q && $4==c {print $5}' "$1" | median; }
