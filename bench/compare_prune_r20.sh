#!/bin/sh
# The pruning comparison table of docs/results.md: every channel criterion of
# `nnopt compare prune` (l1, l2, fpgm, bn, taylor, hrank, random) at 30 / 50 /
# 70 % of the MACs removed on the resnet20 Fashion-MNIST checkpoint (94.68 %
# test), one protocol: global ranking (each group's scores over their mean),
# at most 0.9 of a group removed; taylor and hrank on the same 4 seeded
# batches of 64 training images; one shot, then 1 epoch of fine-tuning (SGD lr
# 0.01 Nesterov, cosine, weight decay 5e-4, batch 128, crop + flip, seed 0);
# test accuracy (drop vs unpruned), params, MACs, latency at batch 1 / 64 and
# the speed-up, timed in alternating rounds with the unpruned model.
# Time (2 quiet cores, --threads 2): 21 fine-tune epochs of the pruned models
# (~85 s at -30 %, ~65 s at -50 %, ~45 s at -70 % of a ~110 s full epoch) ~23 min,
# plus per run a test evaluation and the latency rounds (~15 s) ~5 min: ~30 min.
# On a busy machine use THREADS=1 (two threads competing with other jobs run
# many times slower; the latency figures need a quiet machine anyway).
# Resumable: finished runs (OUT/<criterion>/macs<R>/seed0/result.json) are
# skipped and an interrupted fine-tune continues from its checkpoint; give the
# same command again. Table: OUT/compare.{txt,csv,json}.
# Usage: bench/compare_prune_r20.sh [CHECKPOINT] [OUT] [extra nnopt flags, e.g. for a smoke run]
#   (from the repository root; NNOPT=path/to/nnopt to use another binary; it holds the
#   machine run lock, RUN_LOCK=/tmp/nnopt-run.lock by default)
set -e
CK=${1:-/work/runs/r20/model.nnopt}
OUT=${2:-/work/runs/compare-prune}
[ $# -ge 2 ] && shift 2 || shift $#
NNOPT=${NNOPT:-./build/nnopt}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
flock "${RUN_LOCK:-/tmp/nnopt-run.lock}" nice -n 5 "$NNOPT" compare prune "$CK" \
  --criteria l1,l2,fpgm,bn,taylor,hrank,random --macs 0.3,0.5,0.7 \
  --finetune-epochs 1 --lr 0.01 --batch-size 128 --crop-padding 2 --hflip --seeds 0 \
  --importance-batches 4 --latency-rounds 3 --latency-repeats 20 \
  --threads "$THREADS" --progress lines --out "$OUT" "$@" 2> "$OUT/log.txt"
cat "$OUT/compare.txt"
