#!/bin/sh
# The two open goals of issue 4 on the resnet20 Fashion-MNIST checkpoint,
# declared before they run (docs/results.md, "Next runs for issue 4"):
#  1. blocks: ABCPruner structure search at 50 % of the MACs with a predicted
#     2x speed-up at batch 1 and 64 (2 threads), residual branches allowed to
#     go (--remove-blocks); the winner fine-tuned 15 epochs taught by the
#     unpruned model (kd:T=4,alpha=0.9, the recipe of bench/kd_recipe.sh);
#     then its latency against the original, BN folded, at 1 and 2 threads
#     (bench_prune_latency). Goal: drop <= 0.5 pt and speed-up >= 0.8 x the
#     MAC ratio at batch 1 and 64.
#  2. agp: global magnitude 90 % sparsity, AGP over the first 2/3 of 20
#     epochs, taught by the unpruned model (same KD spec). Goal: drop <= 0.3 pt.
#  3. keep (session 10): a structure chosen from measured latencies
#     (bench_structure_latency, docs/results.md): stage 1 keeps one of its
#     three blocks, stages 2 and 3 keep 3/4 of their channels (24 and 48);
#     L1 picks the channels; one shot + the same 15-epoch KD fine-tune; then
#     bench_prune_latency at 1 and 2 threads.
# Time (2 quiet cores): search ~50 min, agp ~50 min.
# Usage: bench/prune_goals_r20.sh [BUILD] [RUNS] [blocks|keep|keep5|agp|all]
#   (RUNS/r20/model.nnopt is the checkpoint: nnopt train --config configs/resnet20_fmnist.yaml --out RUNS/r20)
# Each part is skipped when its result exists; the search resumes from its memo.
set -e
BUILD=${1:-build}
RUNS=${2:-runs}
WHAT=${3:-all}
CK="$RUNS/r20/model.nnopt"
KD="kd:T=4,alpha=0.9"
. "$(dirname "$0")/build_bench.sh" && build_bench "$BUILD" bench_prune_latency
FT="--lr 0.01 --crop-padding 2 --hflip"
# bench_prune_latency of MODEL against the checkpoint at 1 and 2 threads, into DIR/latency_t*.txt.
latency() {
  for thr in 1 2; do
    "$BUILD"/bench_prune_latency "$CK" "$1" $thr 5 20 | tee "$2/latency_t$thr.txt"
  done
}
# One shot to the per-group channel counts KEEP, 15 epochs of KD fine-tune, then latency.
keep_run() {
  OUT=$1
  if [ ! -f "$OUT/prune.json" ]; then
    "$BUILD"/nnopt prune "$CK" --criterion l1 --granularity channel --keep "$2" --schedule oneshot \
      --finetune-epochs 15 --distill "$KD" $FT --latency-rounds 5 --latency-threads 1,2 \
      --progress lines --out "$OUT" > "$OUT.txt" 2> "$OUT.log" || { tail -3 "$OUT.log"; exit 1; }
  fi
  cat "$OUT.txt"
  latency "$OUT/model.nnopt" "$OUT"
}
if [ "$WHAT" = blocks ] || [ "$WHAT" = all ]; then
  OUT="$RUNS/prune-blocks"
  "$BUILD"/nnopt prune search "$CK" --target macs=0.5,speedup=2 --remove-blocks --latency-batch 1,64 \
    --threads 2 --latency-threads 2 --colony 8 --cycles 4 --fitness-limit 5000 --val-size 2000 \
    --finetune-epochs 15 --distill "$KD" $FT --latency-rounds 5 --latency-repeats 20 \
    --seeds 0 --progress lines --out "$OUT" 2> "$OUT.log" > "$OUT.txt" || { cat "$OUT.log" | tail -3; exit 1; }
  cat "$OUT.txt"
  latency "$OUT/seed0/search/model.nnopt" "$OUT"
fi
if [ "$WHAT" = keep ]; then
  # S4 (session 10): layer1.1 and layer1.2 dropped, stages 2 and 3 at 24 and 48.
  KEEP="layer1.1.conv1=0,layer1.2.conv1=0,layer2.0.conv2=24,layer2.0.conv1=24,layer2.1.conv1=24,layer2.2.conv1=24"
  keep_run "$RUNS/prune-keep-s4" "$KEEP,layer3.0.conv2=48,layer3.0.conv1=48,layer3.1.conv1=48,layer3.2.conv1=48"
fi
if [ "$WHAT" = keep5 ]; then
  # S5 (session 11): four residual branches dropped (two in stage 1, the last
  # of stages 2 and 3), stage 3 at 56 of 64 channels: 2.04x fewer MACs like
  # S4 but fewer conv calls; bench_structure_latency resnet20 2 gave 1.74x
  # (b1) / 1.90x (b64) on random weights against S4's 1.61x / 1.98x.
  KEEP="layer1.1.conv1=0,layer1.2.conv1=0,layer2.2.conv1=0,layer3.2.conv1=0"
  keep_run "$RUNS/prune-keep-s5" "$KEEP,layer3.0.conv2=56,layer3.0.conv1=56,layer3.1.conv1=56"
fi
if [ "$WHAT" = agp ] || [ "$WHAT" = all ]; then
  OUT="$RUNS/prune-agp90-kd"
  if [ ! -f "$OUT/prune.json" ]; then
    "$BUILD"/nnopt prune "$CK" --criterion magnitude --granularity unstructured --target sparsity=0.9 \
      --schedule agp --finetune-epochs 20 --distill "$KD" $FT --latency-rounds 3 --latency-threads 1,2 \
      --progress lines --out "$OUT" > "$OUT.txt" 2> "$OUT.log"
  fi
  cat "$OUT.txt" 2>/dev/null || true
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('agp90+kd: test %.2f %% (drop %.2f pt), %.1f %% zero' % (100*j['after']['test_accuracy'], j['accuracy_drop_pt'], 100*j['weight_sparsity']))" "$OUT/prune.json"
fi
