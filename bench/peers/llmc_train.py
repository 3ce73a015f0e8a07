#!/usr/bin/env python3
"""Harness for llm.c's CPU trainer (train_gpt2.c, fp32), built by you from its public source
outside this repository: give the binary's path. Nothing of llm.c lives here; this script only
writes the inputs its trainer reads, in llm.c's file formats, into a scratch directory:

  gpt2_124M.bin  int32[256] header (magic 20240326, version 3, maxT 1024, V 50257, L 12, NH 12,
                 C 768, Vp 50304) then the fp32 parameters in llm.c's order (wte, wpe, ln1w, ln1b,
                 qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw,
                 lnfb), randomly initialised as GPT-2 is (N(0, 0.02), LayerNorm 1/0, biases 0)
  dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin
                 int32[256] header (magic 20240520, version 1, n tokens) then uint16 token ids:
                 GPT-2 tokens of the given text (tokenized with `zerospeed tokenize`)

train_gpt2.c trains with B = 4, T = 64 (the shapes of bench/train/ and docs/BENCHMARKS.md). The
script runs it with OMP_NUM_THREADS threads, reads its "step N: train loss L (took X ms)" lines,
stops it after --steps steps and prints one JSON line: {"name": "llm.c", "tokens_per_s", ...}
over the steps after the first --warmup.

  python bench/peers/llmc_train.py --llmc /path/to/llm.c/train_gpt2 --zerospeed build/bin/zerospeed
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np


def write_model(path, rng):
    maxT, V, L, NH, C, Vp = 1024, 50257, 12, 12, 768, 50304
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
    sizes = [
        ("wte", Vp * C, "w"), ("wpe", maxT * C, "w"), ("ln1w", L * C, "one"), ("ln1b", L * C, "zero"),
        ("qkvw", L * 3 * C * C, "w"), ("qkvb", L * 3 * C, "zero"), ("attprojw", L * C * C, "w"),
        ("attprojb", L * C, "zero"), ("ln2w", L * C, "one"), ("ln2b", L * C, "zero"),
        ("fcw", L * 4 * C * C, "w"), ("fcb", L * 4 * C, "zero"), ("fcprojw", L * C * 4 * C, "w"),
        ("fcprojb", L * C, "zero"), ("lnfw", C, "one"), ("lnfb", C, "zero"),
    ]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for _, n, kind in sizes:
            if kind == "w":
                a = (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)
            elif kind == "one":
                a = np.ones(n, dtype=np.float32)
            else:
                a = np.zeros(n, dtype=np.float32)
            f.write(a.tobytes())
    return sum(n for _, n, _ in sizes)


def write_tokens(path, ids):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [20240520, 1, len(ids)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(ids, dtype=np.uint16).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llmc", required=True, help="llm.c's train_gpt2 binary")
    ap.add_argument("--zerospeed", required=True, help="build/bin/zerospeed (for tokenizing)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--text", default=os.path.join(root, "data/corpora/austen.txt"))
    ap.add_argument("--tokenizer", default=os.path.join(root, "tests/fixtures/tokenizers/gpt2"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="llmc_")
    rng = np.random.default_rng(1234)
    n_params = write_model(os.path.join(work, "gpt2_124M.bin"), rng)
    with open(args.text, "rb") as f:
        text = f.read()
    ids = json.loads(subprocess.run([args.zerospeed, "tokenize", "--tokenizer", args.tokenizer],
                                    input=text, capture_output=True, check=True).stdout)
    d = os.path.join(work, "dev/data/tinyshakespeare")
    os.makedirs(d)
    split = len(ids) * 9 // 10
    write_tokens(os.path.join(d, "tiny_shakespeare_train.bin"), ids[:split])
    write_tokens(os.path.join(d, "tiny_shakespeare_val.bin"), ids[split:])

    proc = subprocess.Popen([os.path.abspath(args.llmc)], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    times = []
    pat = re.compile(r"step (\d+): train loss ([0-9.]+) \(took ([0-9.]+) ms\)")
    for line in proc.stdout:
        m = pat.search(line)
        if m:
            times.append(float(m.group(3)) / 1000)
            print(line.rstrip(), file=sys.stderr)
            if len(times) >= args.steps:
                break
    proc.kill()
    proc.wait()
    timed = times[args.warmup:]
    if not timed:
        sys.exit("llm.c printed no timed steps")
    B, T = 4, 64
    s = sum(timed) / len(timed)
    print(json.dumps({"name": "llm.c", "tokens_per_s": B * T / s, "s_per_step": s, "batch": B,
                      "seq": T, "params": n_params,
                      "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0)}))


if __name__ == "__main__":
    main()
