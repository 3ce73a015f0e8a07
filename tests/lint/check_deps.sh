#!/usr/bin/env bash
# deps_complete: every Debian package whose headers the build compiled against is installed by
# tools/install_deps.sh, or is a dependency of a package it installs. A package missing from the
# install script breaks a fresh machine while every machine that already has it stays green (this
# is how a missing libcpp-httplib-dev once broke `make demo` for every new user).
#
#   check_deps.sh BUILD_DIR [INSTALL_SCRIPT]      exit 0: complete; 1: packages missing (named);
#                                                 2: the check cannot run (says why)
# How: ninja's dependency log lists every header each object was compiled with; the system ones
# (/usr/..., not /usr/local, which no Debian package owns) are mapped to their package with
# `dpkg -S`; the script's package names are every word of it that names an installed package,
# closed under `apt-cache depends --recurse` (what `apt-get install` would bring along).
set -uo pipefail
build=${1:?usage: check_deps.sh BUILD_DIR [INSTALL_SCRIPT]}
script=${2:-$(cd "$(dirname "$0")/../.." && pwd)/tools/install_deps.sh}
for tool in ninja dpkg dpkg-query apt-cache; do
    command -v "$tool" >/dev/null || { echo "deps check: '$tool' not found (Debian only)"; exit 2; }
done
[ -f "$build/build.ninja" ] || { echo "deps check: $build has no build.ninja (configure with -G Ninja)"; exit 2; }
[ -f "$script" ] || { echo "deps check: no install script $script"; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ninja -C "$build" -t deps 2>/dev/null | awk '/^    \//{print $1}' | grep -E '^/usr/' |
    grep -vE '^/usr/local/' | sort -u >"$tmp/headers"
[ -s "$tmp/headers" ] || { echo "deps check: ninja lists no system headers for $build (not built yet?)"; exit 2; }
# dpkg knows a file by the path its package installed, which may differ from the path the
# compiler saw by symlinks (/usr/include/x86_64-linux-gnu/mpi -> /usr/lib/.../openmpi/include):
# a header counts as owned when either path is. One dpkg -S call over all paths.
: >"$tmp/pairs"
while IFS= read -r f; do printf '%s\t%s\n' "$f" "$(readlink -f "$f")" >>"$tmp/pairs"; done <"$tmp/headers"
cut -f1,2 --output-delimiter=$'\n' "$tmp/pairs" | sort -u | xargs -r dpkg -S 2>/dev/null |
    awk -F': ' '{print $2 "\t" $1}' >"$tmp/owner_of"  # path <TAB> pkg[, pkg...]
orphans=0
: >"$tmp/used"
while IFS=$'\t' read -r f r; do
    owner=$(awk -F'\t' -v a="$f" -v b="$r" '$1 == a || $1 == b {print $2; exit}' "$tmp/owner_of")
    if [ -z "$owner" ]; then
        echo "deps check: $f is owned by no Debian package (installed by hand?)"
        orphans=1
        continue
    fi
    tr ',' '\n' <<<"$owner" | sed 's/^ *//; s/:.*//; s/ *$//' >>"$tmp/used"
done <"$tmp/pairs"
sort -u -o "$tmp/used" "$tmp/used"

grep -oE '[a-z0-9][a-z0-9.+-]+' "$script" | sort -u >"$tmp/words"
dpkg-query -W -f='${Package}\n' | sort -u >"$tmp/installed"
comm -12 "$tmp/words" "$tmp/installed" >"$tmp/listed"
xargs -r apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances <"$tmp/listed" 2>/dev/null |
    sed -n 's/^ *\(Pre\)\?Depends: <\?\([^ >:]*\).*/\2/p; s/^\([a-z0-9][^ :]*\)$/\1/p' |
    sort -u >"$tmp/closure"
sed 's/:.*//' "$tmp/listed" "$tmp/closure" | sort -u >"$tmp/covered"
missing=$(comm -23 "$tmp/used" "$tmp/covered")
if [ -n "$missing" ]; then
    echo "deps check: the build compiled against headers of these Debian packages, which $script" \
        "does not install (add them to its package list):"
    for p in $missing; do
        echo "  $p (e.g. $(awk -F'\t' -v p="$p" 'index(", " $2 ",", " " p ":") || index(", " $2 ",", " " p ",") {print $1; exit}' "$tmp/owner_of"))"
    done
    exit 1
fi
[ $orphans -eq 0 ] || exit 1
echo "deps check: ok ($(wc -l <"$tmp/used") packages provide the $(wc -l <"$tmp/headers") system" \
    "headers the build used; all installed by $(basename "$script"))"
