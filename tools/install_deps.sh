#!/usr/bin/env bash
# Install the Debian packages zerospeed builds and tests with, when any is missing.
# Usage: tools/install_deps.sh [extra packages...]   (runs apt-get as root; sudo otherwise)
set -euo pipefail

pkgs=(
    build-essential cmake ninja-build pkg-config git
    libgtest-dev libgmock-dev libbenchmark-dev
    libdnnl-dev libopenblas-openmp-dev libfmt-dev nlohmann-json3-dev libcli11-dev
    libcpp-httplib-dev libboost-dev libssl-dev libpcre2-dev liburing-dev libxxhash-dev libopenmpi-dev openmpi-bin
    clang-format libonnx-testdata iproute2 curl
    slurm-wlm munge
    python3 python3-venv python3-pip
)
pkgs+=("$@")

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "zerospeed: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "zerospeed: need root to install: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
