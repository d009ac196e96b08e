#!/usr/bin/env bash
# Born-again generations (docs/results.md): lenet5 at half width, generation 1
# trained alone, generation 2 taught by generation 1 (kd:T=4,alpha=0.9), the
# recipe of bench/distill_compare.sh, three seeds; prints one line per seed.
# Usage: bench/born_again.sh [build-dir] [runs-dir]
# WIDTH and EPOCHS (defaults 0.5 and 6) as in bench/distill_compare.sh; other
# values write to runs-dir/born-again-w<WIDTH>-e<EPOCHS>. ALPHA (default 0.9)
# is the soft-target weight of generation 2; ALPHA=1 is the loss of
# Born-Again Networks (Furlanello et al. 2018: the student matches the
# teacher's outputs only) and writes to ...-a1.
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-runs}
WIDTH=${WIDTH:-0.5}
EPOCHS=${EPOCHS:-6}
ALPHA=${ALPHA:-0.9}
DIR="$RUNS"/born-again
if [ "$WIDTH" != 0.5 ] || [ "$EPOCHS" != 6 ]; then DIR="$RUNS/born-again-w$WIDTH-e$EPOCHS"; fi
if [ "$ALPHA" != 0.9 ]; then DIR="$DIR-a$ALPHA"; fi
mkdir -p "$DIR"
for seed in 0 1 2; do
  out="$DIR/seed$seed"
  if [ ! -f "$out/result.json" ]; then
    "$BUILD"/nnopt distill --generations 2 --student lenet5 --width "$WIDTH" --loss kd:T=4,alpha=$ALPHA \
      --epochs "$EPOCHS" --batch-size 128 --optimizer adam --lr 0.002 --weight-decay 0 --schedule cosine \
      --seed "$seed" --progress lines --json --out "$out" > "$out.json.tmp"
    mv "$out.json.tmp" "$out/result.json"
  fi
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); a=j['generation_test_accuracy']; print('seed %s: ' % sys.argv[2] + '  '.join('gen%d %.2f %%' % (i+1, 100*v) for i, v in enumerate(a)))" "$out/result.json" "$seed"
done
