#!/bin/sh
# Channel-number structure search vs a uniform per-layer ratio on the resnet20
# Fashion-MNIST checkpoint (94.68 % test), docs/results.md "Pruning: structure
# search": `nnopt prune search` (ABCPruner, Lin et al. 2020) at 50 % of the
# MACs removed, 3 seeds, --compare-uniform.
# Protocol: channels kept by l1 within each group; bee colony 6 food sources,
# 3 cycles, scout limit 3, levels 10 (k/10 of a group kept); fitness =
# accuracy on 1000 held-out training images after 1 epoch of fine-tuning on
# 3000 training images (SGD lr 0.01 cosine, batch 128, from the pretrained
# filters); the winner and the uniform model (same fraction of every group,
# at most the winner's MACs) then get the same 2 epochs on the whole training
# split (crop + flip) with the same seed; test accuracy, params, MACs and
# latency at batch 1 / 64 (alternating rounds with the unpruned model).
# Time (2 quiet cores, --threads 2): a fitness evaluation ~4-5 s (measured
# ~2 s per 1000 fitness images on one thread), ~45 per seed (6 + 3 x 12 + scouts,
# fewer when the colony revisits a structure) -> ~3.5 min per seed; fine-tunes
# 2 models x 2 epochs x ~70 s per seed -> ~5 min; in all ~25 min. On a busy
# machine use THREADS=1: two threads competing with other jobs run many times
# slower.
# Resumable: the same command again skips finished seeds (OUT/seed<k>/result.json),
# replays an interrupted search from OUT/seed<k>/search/fitness.jsonl and resumes
# the fine-tunes from their checkpoints. Table: OUT/search.{txt,csv,json}.
# Usage: bench/prune_search_r20.sh [CHECKPOINT] [OUT] [extra nnopt flags, e.g. for a smoke run]
#   (from the repository root; NNOPT=path/to/nnopt to use another binary; it holds the
#   machine run lock, RUN_LOCK=/tmp/nnopt-run.lock by default)
set -e
CK=${1:-/work/runs/r20/model.nnopt}
OUT=${2:-/work/runs/prune-search}
[ $# -ge 2 ] && shift 2 || shift $#
NNOPT=${NNOPT:-./build/nnopt}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
flock "${RUN_LOCK:-/tmp/nnopt-run.lock}" nice -n 5 "$NNOPT" prune search "$CK" --target macs=0.5 --criterion l1 \
  --colony 6 --cycles 3 --scout-limit 3 --levels 10 \
  --fitness-epochs 1 --fitness-limit 3000 --val-size 1000 \
  --finetune-epochs 2 --lr 0.01 --batch-size 128 --crop-padding 2 --hflip \
  --seeds 0,1,2 --compare-uniform --latency-rounds 5 --latency-repeats 20 \
  --threads "$THREADS" --progress lines --out "$OUT" "$@" 2> "$OUT/log.txt"
cat "$OUT/search.txt"
