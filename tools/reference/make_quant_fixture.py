"""Writes tests/fixtures/quant/blocks.safetensors: GGUF block-quantized rows and their values as
the `gguf` package (llama.cpp's own Python reference, gguf.quants) encodes and decodes them.

For Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (which gguf.quants can quantize): `<type>.input` f32 [R, K]
seeded normal rows (one all-zero row, one constant row), `<type>.blocks` u8 [R, row bytes] =
gguf.quants.quantize(input), `<type>.dequant` f32 [R, K] = gguf.quants.dequantize(blocks).
For Q4_K, Q5_K and Q6_K (decoded, not encoded, by gguf 0.19): `<type>.blocks` are seeded random
bytes with finite f16 scales, `<type>.dequant` their gguf decoding. core/quant_test.cpp checks
zerospeed's decoders (and quantizers) against these.

    ~/.cache/zerospeed/venv/bin/python tools/reference/make_quant_fixture.py
"""

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants

import refcommon as rc

OUT = rc.REPO / "tests" / "fixtures" / "quant" / "blocks.safetensors"
ROWS, COLS = 4, 512


def main() -> None:
    rng = np.random.default_rng(301)
    tensors = {}
    for name in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]:
        x = (rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32)
        x[1] = 0.0
        x[2, :] = 0.25
        x[3, :40] += 1.5  # an outlier stretch
        blocks = quants.quantize(x, T[name])
        deq = quants.dequantize(blocks, T[name]).astype(np.float32)
        key = name.lower()
        tensors[f"{key}.input"] = torch.from_numpy(x)
        tensors[f"{key}.blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
        tensors[f"{key}.dequant"] = torch.from_numpy(np.ascontiguousarray(deq))
    # K-quants: random payloads; the f16 scale fields set to finite positive values.
    f16_fields = {"Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
    for name, fields in f16_fields.items():
        block_elems, block_bytes = quants.GGML_QUANT_SIZES[T[name]]
        nb = COLS // block_elems
        raw = rng.integers(0, 256, (ROWS, nb, block_bytes), dtype=np.uint8)
        for off in fields:
            scales = rng.uniform(0.001, 0.05, (ROWS, nb)).astype(np.float16)
            raw[:, :, off : off + 2] = scales.view(np.uint8).reshape(ROWS, nb, 2)
        blocks = raw.reshape(ROWS, nb * block_bytes)
        deq = quants.dequantize(blocks, T[name]).astype(np.float32)
        key = name.lower()
        tensors[f"{key}.blocks"] = torch.from_numpy(np.ascontiguousarray(blocks))
        tensors[f"{key}.dequant"] = torch.from_numpy(np.ascontiguousarray(deq))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rc.save_tensors(tensors, OUT, rc.metadata(script="tools/reference/make_quant_fixture.py"))
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
