"""Shared helpers for the reference-fixture scripts in tools/reference/.

These scripts run only in the reference virtualenv (see README.md); nothing here is imported by
the C++ build or by `make test`. Helpers: repository paths, library-version metadata for
safetensors headers, a deterministic torch set-up, and a loader for the tiny HF fixture models.
"""

import hashlib
import json
import os
import pathlib
import platform
import struct

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import save_file

REPO = pathlib.Path(__file__).resolve().parents[2]
HF_FIXTURES = REPO / "tests" / "fixtures" / "hf"
CACHE = pathlib.Path(os.environ.get("ZS_CACHE", pathlib.Path.home() / ".cache" / "zerospeed"))


def setup_torch() -> None:
    """CPU, float32, deterministic kernels, a fixed thread count."""
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def versions() -> dict:
    """Library versions, recorded in every reference file's __metadata__."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def metadata(**extra) -> dict:
    """safetensors metadata must be str -> str."""
    out = {"generator": "zerospeed tools/reference"}
    out.update(versions())
    out.update({k: str(v) for k, v in extra.items()})
    return out


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tiny(name: str):
    """Loads tests/fixtures/hf/<name>/ (written by make_hf_fixtures.py) in float32, eager attention."""
    path = HF_FIXTURES / name
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    return model


def contiguous(tensors: dict) -> dict:
    """safetensors.torch.save_file wants contiguous, non-shared tensors."""
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}


def save_tensors(tensors: dict, path, meta: dict) -> None:
    """save_file, then rewrite the JSON header with sorted keys: safetensors stores __metadata__
    from a hash map, so its order (and the file's bytes) would change on every run."""
    save_file(contiguous(tensors), path, metadata=meta)
    raw = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
