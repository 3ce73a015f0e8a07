#!/usr/bin/env bash
# Fails when a src/ layer includes a header from a layer above it (docs/ARCHITECTURE.md is the
# contract; this table mirrors it). Tests (*_test.cpp) and the test helpers may include anything.
set -euo pipefail
cd "$(dirname "$0")/../.."

declare -A uses=(
    [base]=""
    [core]="base"
    [ops]="core"
    [backends]="ops"
    [comm]="core"
    [io]="core"
    [parallel]="ops comm"
    [models]="parallel io"
    [optim]="ops"
    [zero]="comm io models optim"
    [train]="zero optim models"
    [infer]="models"
    [serve]="infer"
    [cli]="serve train infer zero optim models parallel io comm backends ops core base"
)

closure() {  # all layers reachable from $1 (itself included)
    local seen=" $1 " queue=("$1")
    while [ ${#queue[@]} -gt 0 ]; do
        local cur=${queue[0]}
        queue=("${queue[@]:1}")
        for d in ${uses[$cur]}; do
            if [[ "$seen" != *" $d "* ]]; then seen+="$d "; queue+=("$d"); fi
        done
    done
    echo "$seen"
}

fail=0
for dir in src/*/; do
    layer=$(basename "$dir")
    if [ -z "${uses[$layer]+x}" ]; then
        echo "layer check: src/$layer is not in the layer table (add it to docs/ARCHITECTURE.md and here)"
        fail=1
        continue
    fi
    allowed=$(closure "$layer")
    while IFS= read -r line; do
        file=${line%%:*}
        case "$file" in *_test.cpp|*_test_util.h|*_fuzz.cpp) continue ;; esac
        inc=$(sed -E 's/.*#include "([^/"]+)\/.*/\1/' <<<"$line")
        [ "$inc" = "$line" ] && continue
        if [[ "$allowed" != *" $inc "* ]]; then
            echo "layer check: $file includes $inc/ but $layer may only use:$allowed"
            fail=1
        fi
    done < <(grep -rn --include='*.h' --include='*.cpp' --include='*.cu' --include='*.cuh' \
                 '^#include "' "$dir" || true)
done
[ $fail -eq 0 ] && echo "layer check: ok"
exit $fail
