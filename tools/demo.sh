#!/usr/bin/env bash
# `make demo`: the main job on its bundled default. Until the training stack lands this is the
# machine check: backends, kernel correctness and matmul throughput.
set -euo pipefail
build=${1:-build}
"$build/bin/zerospeed" doctor
