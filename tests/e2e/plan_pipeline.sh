#!/usr/bin/env bash
# e2e: `zerospeed plan pipeline` prints the closed-form bubble for 1F1B and interleaved and the
# Zero Bubble idle times (period - work = (p-1)(F+B-W) for zb-h1), writes a well-formed timeline
# SVG with one box per compute instruction, and refuses bad arguments naming them.
# Usage: plan_pipeline.sh <zerospeed binary>
set -uo pipefail
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # name condition-output...
    if [ "$2" = yes ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fail=1; fi
}

out=$("$bin" plan pipeline --stages 4 --micro-batches 8 --policy 1f1b 2>&1)
# (p-1)/(m+p-1) = 3/11
want=$(awk 'BEGIN { printf "%.2f%%", 100 * 3 / 11 }')
check "1f1b bubble" "$(grep -q "bubble $want (theory (p-1)/(Vm+p-1) = $want)" <<<"$out" && echo yes)" "$out"

out=$("$bin" plan pipeline --stages 4 --micro-batches 8 --policy interleaved --chunks 2 2>&1)
want=$(awk 'BEGIN { printf "%.2f%%", 100 * 3 / 19 }')
check "interleaved bubble" "$(grep -q "bubble $want (theory" <<<"$out" && echo yes)" "$out"

# zb-h1 with F=2 B=1 W=1: work per rank 8 * 4 = 32, period 32 + 3 * (2 + 1 - 1) = 38.
out=$("$bin" plan pipeline --stages 4 --micro-batches 8 --policy zb-h1 --f 2 --b 1 --w 1 \
    --svg "$tmp/t.svg" 2>&1)
check "zb-h1 period" "$(grep -q "period 38, work per rank 32" <<<"$out" && echo yes)" "$out"
boxes=$(grep -c "<rect x=.*<title>" "$tmp/t.svg")
check "svg boxes" "$([ "$boxes" = $((4 * 8 * 3)) ] && echo yes)" "got $boxes boxes"
check "svg parses" "$(python3 -c "import sys,xml.dom.minidom as m; m.parse(sys.argv[1])" \
    "$tmp/t.svg" && echo yes)" "bad XML"

out=$("$bin" plan pipeline --stages 4 --micro-batches 6 --policy interleaved --chunks 2 2>&1)
rc=$?
check "interleaved m % p refused" "$([ $rc = 1 ] && grep -q "must be a multiple of the stages" \
    <<<"$out" && echo yes)" "rc $rc: $out"
out=$("$bin" plan pipeline --policy 2f2b 2>&1)
rc=$?
check "unknown policy refused" "$([ $rc = 1 ] && grep -q "\-\-policy: unknown pipeline schedule '2f2b'" \
    <<<"$out" && echo yes)" "rc $rc: $out"
exit $fail
