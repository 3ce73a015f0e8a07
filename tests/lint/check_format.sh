#!/usr/bin/env bash
# clang-format --dry-run --Werror over every tracked C++/CUDA file (.clang-format is the style).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v clang-format >/dev/null; then
    echo "format check: clang-format not installed (tools/install_deps.sh installs it)"
    exit 1
fi
if git rev-parse --git-dir >/dev/null 2>&1; then
    files=$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')
else
    files=$(find src tests bench -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')
fi
[ -z "$files" ] && exit 0
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
echo "format check: ok ($(wc -w <<<"$files") files)"
