#!/bin/sh
# Pruning measurements on the resnet20 Fashion-MNIST checkpoint (docs/results.md, "Pruning").
# usage: bench/prune_r20.sh NNOPT_BINARY RUNS_DIR [CHECKPOINT]
# Each run writes RUNS_DIR/<name>/prune.json (before/after params, MACs, size,
# latency at batch 1 and 64, test accuracy) and a log RUNS_DIR/<name>.log.
# Run it under the machine's run lock:  flock /tmp/nnopt-run.lock nice -n 5 bench/prune_r20.sh ...
set -e
BIN=${1:?nnopt binary}
RUNS=${2:?runs folder}
CKPT=${3:-/work/runs/r20/model.nnopt}
mkdir -p "$RUNS"
FT="--lr 0.01 --crop-padding 2 --hflip --progress lines --latency-rounds 5 --latency-threads 1,2"

# Structured: 50 % of the MACs, L1 filter norm, the same fraction of every
# dependency group (kept channels a multiple of 4), one shot, 10 fine-tune epochs.
"$BIN" prune "$CKPT" --criterion l1 --granularity channel --target macs=0.5 --schedule oneshot \
  --per-layer --channel-multiple 4 --finetune-epochs 10 $FT --out "$RUNS/ch_l1_macs50" \
  > "$RUNS/ch_l1_macs50.log" 2>&1

# Unstructured: 90 % of the conv/linear weights by global magnitude, AGP over
# the first 2/3 of 8 fine-tune epochs; compressed checkpoint.
"$BIN" prune "$CKPT" --criterion magnitude --granularity unstructured --target sparsity=0.9 --schedule agp \
  --finetune-epochs 8 $FT --out "$RUNS/un_agp90" > "$RUNS/un_agp90.log" 2>&1
