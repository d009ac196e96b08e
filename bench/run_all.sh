#!/usr/bin/env bash
# Runs every benchmark; each prints nnopt against its peer measured in the same run.
set -euo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/.."
bench/train_speed.sh "$BUILD"
