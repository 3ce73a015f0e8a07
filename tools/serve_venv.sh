#!/usr/bin/env bash
# A small Python venv for the serving conformance test (tests/e2e/serve_openai.sh): the official
# `openai` client, `jsonschema` and `pyyaml` from PyPI (test assets only; never a build
# dependency). Cached outside the repository; prints the venv's python. Idempotent.
#   ZS_CACHE (default ~/.cache/zerospeed)
set -euo pipefail
cache=${ZS_CACHE:-$HOME/.cache/zerospeed}
venv=$cache/venv-serve
want="openai==3.57.0 jsonschema==4.26.0 pyyaml==6.0.3"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.zs-pins" 2>/dev/null)" = "$want" ]; then
    echo "$venv/bin/python"
    exit 0
fi
mkdir -p "$cache"
rm -rf "$venv"
python3 -m venv "$venv" >&2
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $want >&2
echo "$want" >"$venv/.zs-pins"
echo "$venv/bin/python"
