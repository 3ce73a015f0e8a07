#!/usr/bin/env bash
# e2e: `zerospeed tokenize` on golden case 0 of tests/fixtures/tokenizers/tokenizers.json (ids from
# js-tiktoken for GPT-2 and sentencepiece 0.1.97 for Llama-2), the reverse with --decode, and bad
# inputs that must exit 1 with a message naming the problem.
# Usage: tokenize_cli.sh <zerospeed binary> <fixtures/tokenizers dir>
set -uo pipefail
bin=$1
fx=$2
fail=0
text='Hello world, this is a test of the tokenizer.'

expect_eq() {  # name got want
    if [ "$2" != "$3" ]; then
        echo "FAIL $1: got '$2', want '$3'"
        fail=1
    else
        echo "ok   $1"
    fi
}
expect_error() {  # name expected-substring command...
    local name=$1 want=$2
    shift 2
    local err rc
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 1 ] || [[ "$err" != *"$want"* ]]; then
        echo "FAIL $name: exit $rc, stderr '$err' (want exit 1 and '$want')"
        fail=1
    else
        echo "ok   $name"
    fi
}

got=$(printf '%s' "$text" | "$bin" tokenize --tokenizer "$fx/gpt2")
expect_eq gpt2_encode "$got" "[15496, 995, 11, 428, 318, 257, 1332, 286, 262, 11241, 7509, 13]"
got=$(printf '%s' "$text" | "$bin" tokenize --tokenizer "$fx/llama2/tokenizer.model" --add-special)
expect_eq llama2_encode_bos "$got" "[1, 15043, 3186, 29892, 445, 338, 263, 1243, 310, 278, 5993, 3950, 29889]"
got=$(echo "[1, 15043, 3186, 29892, 445, 338, 263, 1243, 310, 278, 5993, 3950, 29889]" |
      "$bin" tokenize --tokenizer "$fx/llama2" --decode --skip-special)
expect_eq llama2_decode "$got" "$text"

expect_error missing_file "$fx/nope/tokenizer.json" \
    "$bin" tokenize --tokenizer "$fx/nope/tokenizer.json" </dev/null
expect_error bad_json "expected a JSON array of token ids" \
    "$bin" tokenize --tokenizer "$fx/gpt2" --decode <<<"[1, 2"
expect_error not_an_id "element 1" \
    "$bin" tokenize --tokenizer "$fx/gpt2" --decode <<<'[1, "two"]'
expect_error id_out_of_range "element 1 = 50257 is outside the vocabulary" \
    "$bin" tokenize --tokenizer "$fx/gpt2" --decode <<<"[1, 50257]"
exit $fail
