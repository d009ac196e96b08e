#!/usr/bin/env bash
# Training throughput, nnopt vs PyTorch Python, same model/data/batch/threads/BLAS,
# measured in the same run. Usage: bench/train_speed.sh [build-dir] [threads]
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-$(nproc)}
cd "$(dirname "$0")/.."
printf '%-9s %8s %6s %14s %14s %7s\n' model batch thr "nnopt img/s" "pytorch img/s" ratio
for spec in "lenet5 300" "resnet20 40"; do
  set -- $spec
  model=$1; batches=$2
  n=$("$BUILD"/bench_train "$model" "$batches" 128 "$THREADS")
  p=$(/usr/bin/python3 bench/train_peer.py "$model" "$batches" 128 "$THREADS")
  /usr/bin/python3 - "$n" "$p" <<'PY'
import json, sys
n, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("%-9s %8d %6d %14.0f %14.0f %6.2fx" % (n["model"], n["batch_size"], n["threads"],
      n["images_per_sec"], p["images_per_sec"], n["images_per_sec"] / p["images_per_sec"]))
PY
done
