"""Check GGUF files written by `zerospeed convert --to gguf --quantize TYPE` against the gguf
package's reference quantizer (gguf.quants, llama.cpp's own Python port of ggml-quants.c):
every matrix of the output must be, byte for byte, gguf.quants.quantize of the source tensor's
values (gguf.quants.dequantize of its blocks, or its float data), and every other tensor must
hold the source's values as F32.

Usage: python check_gguf_quantize.py SOURCE.gguf OUT.gguf [OUT.gguf ...]
Prints one ok/FAIL line per file; exits 1 on any failure.
"""
import sys

import numpy as np
from gguf import GGUFReader
from gguf import quants

src_path, *outs = sys.argv[1:]
src = {t.name: t for t in GGUFReader(src_path).tensors}
failed = False
for path in outs:
    bad, n_quant = [], 0
    for t in GGUFReader(path).tensors:
        s = src[t.name]
        values = quants.dequantize(s.data, s.tensor_type).astype(np.float32)
        if t.tensor_type.name in ("F32",):
            if not np.array_equal(np.asarray(t.data, dtype=np.float32).reshape(values.shape), values):
                bad.append(t.name + " (f32 values)")
            continue
        n_quant += 1
        want = quants.quantize(values, t.tensor_type)
        if not np.array_equal(np.asarray(t.data).reshape(want.shape), want):
            bad.append(f"{t.name} ({t.tensor_type.name})")
    ok = not bad and n_quant > 0
    failed |= not ok
    print(("ok   " if ok else "FAIL ") + f"{path}: {n_quant} quantized tensors"
          + (" bit-identical to gguf.quants" if ok else f"; differ: {bad[:5]}"))
sys.exit(1 if failed else 0)
