#!/usr/bin/env bash
# Installs what nnopt needs on Debian 12 (only what is missing), then
# configures and builds. Usage: scripts/setup.sh [build-dir]
set -euo pipefail
BUILD_DIR=${1:-build}
PACKAGES=(
  build-essential cmake ccache pkg-config
  libtorch-dev              # LibTorch 1.13 (C++ API)
  libopenblas0-openmp       # fast BLAS for fp32 linear layers (see docs/architecture.md)
  dataset-fashion-mnist     # the embedded default data set
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev zlib1g-dev
  libgtest-dev googletest   # the test suite
  python3-torch python3-numpy  # the reference peer in tests and benchmarks
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
JOBS=${NNOPT_JOBS:-$(nproc)}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" -j"$JOBS"
