#!/usr/bin/env python3
"""Single-thread encode throughput (MB/s) of the reference tokenizers on the same corpus and the
same vocabulary files as bench/tokenizer_bench.cpp: tiktoken (r50k_base = GPT-2's BPE,
cl100k_base), Hugging Face tokenizers (Llama-3 and Mistral tokenizer.json) and sentencepiece
(Llama-2 tokenizer.model). Prints one JSON line per case with the token count, so the run also
shows both sides produced the same number of tokens.

  python bench/peers/tokenizer_peers.py [--corpus data/corpora/austen.txt] [--reps 3]
"""
import argparse
import base64
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

# tiktoken's published split patterns for these two encodings.
R50K = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
          r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")


def ranks(path):
    out = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                out[base64.b64decode(tok)] = int(rank)
    return out


def cases():
    import tiktoken

    def tk(name, pat):
        enc = tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=ranks(
            os.path.join(FIX, "tiktoken", name + ".tiktoken")), special_tokens={})
        return lambda s: enc.encode_ordinary(s)

    yield "tiktoken_r50k", tk("r50k_base", R50K)
    yield "tiktoken_cl100k", tk("cl100k_base", CL100K)
    from tokenizers import Tokenizer

    for fam in ("llama3", "mistral"):
        t = Tokenizer.from_file(os.path.join(FIX, fam, "tokenizer.json"))
        yield "hf_tokenizers_" + fam, (lambda t: lambda s: t.encode(s, add_special_tokens=False).ids)(t)
        # HF is slow on one 4 MB string; also time it the way it is usually fed (line by line,
        # one thread): the token count then differs slightly where lines are split.
        yield "hf_tokenizers_" + fam + "_lines", (lambda t: lambda s: [
            i for e in t.encode_batch(s.splitlines(keepends=True), add_special_tokens=False) for i in e.ids])(t)
    try:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=os.path.join(FIX, "llama2", "tokenizer.model"))
        yield "sentencepiece_llama2", lambda s: sp.encode(s)
    except ImportError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(ROOT, "data", "corpora", "austen.txt"))
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    text = open(a.corpus, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    for name, enc in cases():
        n = len(enc(text))
        best = min(_time(enc, text) for _ in range(a.reps))
        print(json.dumps({"name": name, "MB_per_s": mb / best, "tokens": n, "seconds": best}), flush=True)


def _time(enc, text):
    t0 = time.perf_counter()
    enc(text)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
