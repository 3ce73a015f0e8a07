#!/usr/bin/env bash
# The reference-oracle venv (tools/reference/requirements.txt: torch, transformers, deepspeed, ...
# pinned) that tests and benchmarks compare against: created or updated when the pins change,
# cached outside the repository, never a build dependency. Prints the venv's python. Idempotent.
# About 5.6 GB: PyPI's Linux torch wheel pulls its CUDA runtime wheels although only the CPU is
# used (torch imports them at start-up, so they cannot be left out).
#   ZS_CACHE (default ~/.cache/zerospeed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req=$root/tools/reference/requirements.txt
cache=${ZS_CACHE:-$HOME/.cache/zerospeed}
venv=$cache/venv
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.zs-pins" 2>/dev/null)" = "$want" ]; then
    echo "$venv/bin/python"
    exit 0
fi
mkdir -p "$cache"
# An existing venv (one made by hand from tools/reference/README.md, or from older pins) is
# brought to the pins by pip, which downloads only what differs.
if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import sys" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
fi
echo "reference_venv: installing tools/reference/requirements.txt into $venv (about 5.6 GB the first time)" >&2
DS_BUILD_OPS=0 "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" >"$venv/.zs-pins"
echo "$venv/bin/python"
