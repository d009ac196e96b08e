#!/usr/bin/env bash
# The pre-declared KD recipe of issue 5 (docs/results.md), in two phases so
# that nothing is chosen on the test set:
#  1. selection: lenet5 (width 1) taught by the resnet20 checkpoint with
#     kd:T=t,alpha=a for t in {2, 4, 8}, a in {0.5, 0.9}; 20 epochs, seed 0,
#     5 000 training images held out; the pair with the best validation
#     accuracy (best_val_accuracy of `nnopt distill --val-size 5000`) wins;
#  2. test: `nnopt compare distill --methods alone,kd --kd <winner>`, 3 seeds,
#     30 epochs, the whole training split, test accuracy mean ± std.
# Recipe otherwise that of bench/distill_compare.sh (Adam lr 0.002, cosine,
# batch 128, no weight decay). Resumable: finished runs are skipped.
# Usage: bench/kd_recipe.sh [build-dir] [runs-dir]
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-runs}
DIR="$RUNS"/kd-recipe
mkdir -p "$DIR"/select
RECIPE="--student lenet5 --width 1 --batch-size 128 --optimizer adam --lr 0.002 --weight-decay 0 --schedule cosine"
for t in 2 4 8; do
  for a in 0.5 0.9; do
    out="$DIR/select/T$t-a$a"
    [ -f "$out/result.json" ] && continue
    "$BUILD"/nnopt distill --teacher "$RUNS"/r20/model.nnopt $RECIPE --loss kd:T=$t,alpha=$a --epochs 20 \
      --val-size 5000 --seed 0 --progress off --json --out "$out" > "$out.json.tmp"
    mv "$out.json.tmp" "$out/result.json"
  done
done
WIN=$(/usr/bin/python3 - "$DIR/select" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = []
for name in sorted(os.listdir(d)):
    f = os.path.join(d, name, "result.json")
    if os.path.isfile(f):
        rows.append((json.load(open(f))["best_val_accuracy"], name))
for v, name in rows:
    print("  %s: val %.2f %%" % (name, 100 * v), file=sys.stderr)
v, name = max(rows)
t, a = name[1:].split("-a")
print("kd:T=%s,alpha=%s" % (t, a))
PY
)
echo "selected on validation: $WIN"
"$BUILD"/nnopt compare distill --teacher "$RUNS"/r20/model.nnopt $RECIPE --methods alone,kd --kd "$WIN" \
  --epochs 30 --seeds 0,1,2 --progress lines --out "$DIR/test"
