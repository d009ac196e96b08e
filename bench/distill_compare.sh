#!/usr/bin/env bash
# The distillation comparison of docs/results.md: lenet5 at half width taught
# by the resnet20 checkpoint of the foundation issue (and, for the ensemble
# row, by resnet20 + lenet5), 10 epochs, 3 seeds, every method under one
# protocol. Resumable: run it again to continue after an interruption.
# Usage: bench/distill_compare.sh [build-dir] [runs-dir]
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-runs}
"$BUILD"/nnopt compare distill --teacher "$RUNS"/r20/model.nnopt \
  --ensemble "$RUNS"/r20/model.nnopt,"$RUNS"/lenet5/model.nnopt \
  --student lenet5 --width 0.5 --epochs 10 --batch-size 128 --lr 0.05 --nesterov \
  --weight-decay 5e-4 --schedule cosine --seeds 0,1,2 --progress lines \
  --out "$RUNS"/compare-distill
