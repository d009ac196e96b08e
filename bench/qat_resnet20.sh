#!/bin/sh
# QAT of the resnet20 fp32 checkpoint (94.68 % on Fashion-MNIST test) with
# bench_qat: fold BN, attach W/A quantizers (first/last layer 8-bit, weights
# per channel, activations u-b affine with the mse observer), calibrate on
# 8 batches, run_qat, test accuracy. Results: runs/qat/<name>/result.json and
# one JSON line each in runs/qat/results.jsonl. Runs one at a time under the
# shared run lock. Usage: bench/qat_resnet20.sh [NAME...] (default: all)
set -e
cd "$(dirname "$0")/.."
B=build/bench_qat
. bench/build_bench.sh && build_bench build bench_qat
OUT=${QAT_OUT:-/work/runs/qat}
mkdir -p "$OUT"
run() {
  name=$1; shift
  echo "== $name: $B $*" >&2
  flock /tmp/nnopt-run.lock nice -n 5 $B --model /work/runs/r20/model.nnopt --out "$OUT/$name" "$@" \
    | tee -a "$OUT/results.jsonl"
}
ALL=" $* "
sel() { [ -z "$(echo $ALL)" ] || echo "$ALL" | grep -q " $1 "; }
sel w4a4_lsq     && run w4a4_lsq     --method lsq  --wbits 4 --abits 4 --epochs 5 --lr 0.01
sel w2a2_apot    && run w2a2_apot    --method apot --wbits 2 --abits 2 --epochs 5 --lr 0.01
sel w2a2_lsq     && run w2a2_lsq     --method lsq  --wbits 2 --abits 2 --epochs 5 --lr 0.01
sel w8a8_lsq     && run w8a8_lsq     --method lsq  --wbits 8 --abits 8 --epochs 1 --lr 0.001
sel w4a4_lsq_kd  && run w4a4_lsq_kd  --method lsq  --wbits 4 --abits 4 --epochs 5 --lr 0.01 --kd 1
sel w2a2_lsq_kd  && run w2a2_lsq_kd  --method lsq  --wbits 2 --abits 2 --epochs 5 --lr 0.01 --kd 1
sel w2a2_apot_kd && run w2a2_apot_kd --method apot --wbits 2 --abits 2 --epochs 5 --lr 0.01 --kd 1
sel w2a2_lsq_e15 && run w2a2_lsq_e15 --method lsq  --wbits 2 --abits 2 --epochs 15 --lr 0.01
sel w2a2_lsq_e15_fbn && run w2a2_lsq_e15_fbn --method lsq --wbits 2 --abits 2 --epochs 15 --lr 0.01 --freeze-bn 12
# Progressive initialization (bench_qat --init): 4 -> 3 -> 2 bits, each stage
# from the previous one's learned weights and clipping ranges.
sel w3a3_lsq_from4 && run w3a3_lsq_from4 --method lsq --wbits 3 --abits 3 --epochs 5 --lr 0.01 --init "$OUT/w4a4_lsq_kd"
sel w2a2_lsq_from3_e15_fbn && run w2a2_lsq_from3_e15_fbn --method lsq --wbits 2 --abits 2 --epochs 15 --lr 0.01 --freeze-bn 12 --init "$OUT/w3a3_lsq_from4"
exit 0
