#!/bin/sh
# Data-free quantization ablation on the resnet20 fp32 checkpoint: W4A8 with
# per-tensor weights (where equalization matters), each DFQ step on and off.
# Usage: bench/ptq_r20_ablation.sh [CHECKPOINT] [OUT]; ACCURACY_ONLY as in ptq_r20.sh.
set -e
CK=${1:-/work/runs/r20/model.nnopt}
OUT=${2:-/work/runs/ptq}
NNOPT=${NNOPT:-./build/nnopt}
mkdir -p "$OUT"
run() {
  name=$1; shift
  [ -f "$OUT/$name/report.json" ] && { echo "== $name: done already" >&2; return 0; }
  echo "== $name: nnopt quantize $CK $* --out $OUT/$name" >&2
  if [ -n "$ACCURACY_ONLY" ]; then
    nice -n 19 "$NNOPT" quantize "$CK" "$@" --no-latency --progress off --out "$OUT/$name" \
      > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log" >&2; return 0; }
  else
    flock /tmp/nnopt-run.lock nice -n 5 "$NNOPT" quantize "$CK" "$@" --no-latency --progress off \
      --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log" >&2; return 0; }
  fi
}
run w4a8_pt_minmax          --method minmax --wbits 4 --abits 8
run w4a8_pt_dfq             --method dfq --wbits 4 --abits 8
run w4a8_pt_dfq_no_cle      --method dfq --wbits 4 --abits 8 --no-equalize
run w4a8_pt_dfq_no_bc       --method dfq --wbits 4 --abits 8 --no-analytic-bias-correction
run w4a8_pt_dfq_neither     --method dfq --wbits 4 --abits 8 --no-equalize --no-analytic-bias-correction
run w4a8_pt_dfq_absorb      --method dfq --wbits 4 --abits 8 --absorb-high-bias
for f in "$OUT"/w4a8_pt_*/report.json; do
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-2], round(100*j['fake_quant_accuracy'],2), round(j['drop_pt'],2))" "$f"
done
