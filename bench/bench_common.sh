# Shared setup of the benchmark scripts: a scratch directory removed at exit ($work) and a
# 512-token BPE tokenizer ($work/tok) and token dataset ($work/data) made from the head of the
# bundled Austen corpus. $src is the repository root.
# Usage (after setting $bin to the zerospeed binary): source bench/bench_common.sh NAME BYTES VAL
#   NAME: the scratch directory's prefix; BYTES: how much of the corpus ("all" for the whole);
#   VAL: the validation fraction given to `zerospeed data prepare`.
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "/tmp/zs_$1.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ "$2" = all ]; then
    cp "$src/data/corpora/austen.txt" "$work/text.txt"
else
    head -c "$2" "$src/data/corpora/austen.txt" > "$work/text.txt"
fi
"$bin" tokenizer train --input "$work/text.txt" --vocab-size 512 --output "$work/tok" >/dev/null 2>&1
"$bin" data prepare --tokenizer "$work/tok" --input "$work/text.txt" --output "$work/data" \
    --val-fraction "$3" >/dev/null 2>&1
