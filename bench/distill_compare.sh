#!/usr/bin/env bash
# The distillation comparison of docs/results.md: lenet5 at half width taught
# by the resnet20 checkpoint of the foundation issue (and, for the ensemble
# row, by resnet20 + lenet5), 6 epochs, 3 seeds, every method under one
# protocol. Adam, not SGD: lenet5 has no batch norm, and with SGD lr 0.05 the
# larger gradients of KD at T = 4 (alpha 0.9 or 1) killed the student (10 % after
# 3 short epochs, while CE alone reached 84 %); Adam's per-parameter step size
# does not depend on the loss scale, so one recipe serves every loss.
# Resumable: run it again to continue after an interruption.
# Usage: bench/distill_compare.sh [build-dir] [runs-dir]
# WIDTH and EPOCHS (defaults 0.5 and 6, the table of docs/results.md) pick
# another student width / schedule; the study then goes to
# runs-dir/compare-distill-w<WIDTH>-e<EPOCHS> (a study refuses a changed
# protocol). The session-3 pilots point to WIDTH=1 EPOCHS=20.
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-runs}
WIDTH=${WIDTH:-0.5}
EPOCHS=${EPOCHS:-6}
OUT="$RUNS"/compare-distill
if [ "$WIDTH" != 0.5 ] || [ "$EPOCHS" != 6 ]; then OUT="$RUNS/compare-distill-w$WIDTH-e$EPOCHS"; fi
"$BUILD"/nnopt compare distill --teacher "$RUNS"/r20/model.nnopt \
  --ensemble "$RUNS"/r20/model.nnopt,"$RUNS"/lenet5/model.nnopt \
  --student lenet5 --width "$WIDTH" --epochs "$EPOCHS" --batch-size 128 --optimizer adam --lr 0.002 \
  --weight-decay 0 --schedule cosine --seeds 0,1,2 --progress lines \
  --out "$OUT"
