#!/usr/bin/env python3
"""Loads every fixture under tests/fixtures/{hf,smollm2} back with the safetensors package and
prints one markdown row per file (size, tensor count, dtypes); exits non-zero if any file fails
to load, holds a non-finite float, or a reference file lacks library versions in __metadata__.
Usage: python tools/reference/check_fixtures.py
"""

import json
import sys

import torch
from safetensors import safe_open

import refcommon as rc


def main() -> int:
    root = rc.REPO / "tests" / "fixtures"
    files = sorted(list((root / "hf").glob("*/*")) + list((root / "smollm2").glob("*")))
    bad = 0
    print("| file | bytes | tensors | dtypes |")
    print("| --- | ---: | ---: | --- |")
    for path in files:
        rel = path.relative_to(rc.REPO)
        if path.suffix == ".json":
            json.loads(path.read_text())
            print(f"| {rel} | {path.stat().st_size} | - | json |")
            continue
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            dtypes = set()
            for k in f.keys():
                t = f.get_tensor(k)
                dtypes.add(str(t.dtype).replace("torch.", ""))
                if t.is_floating_point() and not torch.isfinite(t).all():
                    print(f"{rel}: {k} has non-finite values", file=sys.stderr)
                    bad += 1
            n = len(list(f.keys()))
        if "reference" in path.name and "transformers" not in meta:
            print(f"{rel}: no library versions in __metadata__", file=sys.stderr)
            bad += 1
        print(f"| {rel} | {path.stat().st_size} | {n} | {', '.join(sorted(dtypes))} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
