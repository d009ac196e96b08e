#!/bin/sh
# The quantization comparison table of docs/results.md: every method of
# `nnopt compare quant` (minmax, percentile, mse, kl, dfq, adaround, dorefa,
# pact, lsq, lsq+, apot) at W/A 8/8, 4/4, 3/3, 2/2 on the resnet20 fp32
# checkpoint (94.55 % on the Fashion-MNIST test split), one protocol:
#   per-channel weights, first and last layer at 8 bits;
#   calibration on the first 8 batches of 64 training images (512 images),
#   activation observer mse for the dfq / adaround / QAT starting point;
#   AdaRound 1000 Adam steps per layer (4/4, 3/3, 2/2; n/a at 8/8);
#   QAT 5 epochs, SGD momentum 0.9 lr 0.01 cosine, weight decay 1e-4, batch
#   128, seed 0, no augmentation (bench/qat_resnet20.sh's recipe differs: it
#   adds Nesterov, random crops and flips);
#   int8 latency (batch 1 and 64) of every method that lowers at 8/8.
# Long: 5 QAT methods x 4 settings x 5 epochs of resnet20 plus 3 AdaRound
# runs (~16 min each on the shared machine). It is resumable: every finished
# run is kept in OUT/<method>/w<W>a<A>/result.json and an interrupted QAT run
# continues from its checkpoint, so give the same command again after an
# interruption. It holds the machine's run lock (the latency figures need a
# quiet machine). The table: OUT/compare.{txt,csv,json}.
# Usage: bench/compare_quant_r20.sh [CHECKPOINT] [OUT]   (from the repository root)
# METHODS=apot BITS=8/8 runs only those cells of the same study (same protocol,
# same folder; the full command then reuses them). bench/keep_cells.sh keeps
# finished runs in the repository (bench/results/compare-quant) between machines.
set -e
CK=${1:-/work/runs/r20/model.nnopt}
OUT=${2:-/work/runs/compare-quant}
NNOPT=${NNOPT:-./build/nnopt}
mkdir -p "$OUT"
flock /tmp/nnopt-run.lock nice -n 5 "$NNOPT" compare quant "$CK" \
  --methods "${METHODS:-minmax,percentile,mse,kl,dfq,adaround,dorefa,pact,lsq,lsq+,apot}" \
  --bits "${BITS:-8/8,4/4,3/3,2/2}" --per-channel --first-last-bits 8 \
  --calib-batches 8 --batch-size 64 --act-observer mse --adaround-iters 1000 \
  --epochs 5 --lr 0.01 --weight-decay 1e-4 --schedule cosine --qat-batch-size 128 --seed 0 \
  --threads 2 --progress lines --out "$OUT" 2> "$OUT/log.txt"
cat "$OUT/compare.txt"
