#!/usr/bin/env bash
# The deps check (check_deps.sh) checked: it passes on tools/install_deps.sh as it is, and fails,
# naming the package, when a package the build needs is taken out of a copy of the script
# (libcpp-httplib-dev, whose absence once broke `make demo` on every fresh machine, and
# nlohmann-json3-dev). Usage: check_deps_test.sh BUILD_DIR
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
script=$here/../../tools/install_deps.sh
build=${1:?usage: check_deps_test.sh BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

out=$("$here/check_deps.sh" "$build" "$script"); rc=$?
if [ $rc -eq 2 ]; then echo "$out"; exit 1; fi
[ $rc -eq 0 ] && echo "ok   install_deps.sh as it is: $out" || {
    echo "FAIL install_deps.sh as it is: exit $rc"; echo "$out"; fail=1; }

for pkg in libcpp-httplib-dev nlohmann-json3-dev; do
    grep -qw -- "$pkg" "$script" || { echo "FAIL $script does not name $pkg"; fail=1; continue; }
    sed "s/\(^\|[[:space:]]\)$pkg\([[:space:]]\|$\)/\1\2/g" "$script" >"$tmp/install_deps.sh"
    if grep -qw -- "$pkg" "$tmp/install_deps.sh"; then echo "FAIL could not remove $pkg"; fail=1; continue; fi
    out=$("$here/check_deps.sh" "$build" "$tmp/install_deps.sh"); rc=$?
    if [ $rc -eq 1 ] && grep -q "^  $pkg " <<<"$out"; then
        echo "ok   without $pkg: exit 1 naming it"
    else
        echo "FAIL without $pkg: exit $rc, expected 1 naming $pkg:"; echo "$out"; fail=1
    fi
done
exit $fail
