#!/usr/bin/env bash
# Training throughput, nnopt vs PyTorch Python: the same model, data, batch,
# optimizer, threads and BLAS, measured in the same run. Each side runs ROUNDS
# times, alternating, and the median images/s is compared (this VM's speed
# drifts by +-20 % from run to run). nnopt runs twice per round: as it trains
# by default (activations channels-last) and with LibTorch's default NCHW
# order (the "nnopt nchw" column), so the two effects can be told apart.
# Usage: bench/train_speed.sh [build-dir] [threads] [rounds]
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-$(nproc)}
ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
. bench/build_bench.sh && build_bench "$BUILD" bench_train
printf '%-9s %6s %4s %6s %12s %12s %14s %7s %11s\n' model batch thr rounds "nnopt img/s" "nnopt nchw" "pytorch img/s" ratio "nchw ratio"
for spec in "lenet5 300" "resnet20 40"; do
  set -- $spec
  model=$1; batches=$2
  runs=()
  for r in $(seq "$ROUNDS"); do
    runs+=("$("$BUILD"/bench_train "$model" "$batches" 128 "$THREADS")")
    runs+=("$(NNOPT_MEMORY_FORMAT=contiguous "$BUILD"/bench_train "$model" "$batches" 128 "$THREADS")")
    runs+=("$(/usr/bin/python3 bench/train_peer.py "$model" "$batches" 128 "$THREADS")")
  done
  /usr/bin/python3 - "$ROUNDS" "${runs[@]}" <<'PY'
import json, statistics, sys
rounds = int(sys.argv[1])
rs = [json.loads(a) for a in sys.argv[2:]]
med = lambda xs: statistics.median(r["images_per_sec"] for r in xs)
n = [r for r in rs if r["impl"] == "nnopt" and r["memory_format"] == "channels_last"]
c = [r for r in rs if r["impl"] == "nnopt" and r["memory_format"] == "contiguous"]
p = [r for r in rs if r["impl"] != "nnopt"]
mn, mc, mp = med(n), med(c), med(p)
print("%-9s %6d %4d %6d %12.0f %12.0f %14.0f %6.2fx %10.2fx" % (n[0]["model"], n[0]["batch_size"],
      n[0]["threads"], rounds, mn, mc, mp, mn / mp, mc / mp))
PY
done
