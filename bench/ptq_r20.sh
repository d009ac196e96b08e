#!/bin/sh
# Post-training quantization of the resnet20 fp32 checkpoint on Fashion-MNIST:
# every figure of the "Post-training quantization" section of docs/results.md.
# Usage: bench/ptq_r20.sh [CHECKPOINT] [OUT]   (run from the repository root)
# Each run writes OUT/<name>/report.json; the summary goes to OUT/summary.txt.
set -e
CK=${1:-/work/runs/r20/model.nnopt}
OUT=${2:-/work/runs/ptq}
NNOPT=${NNOPT:-./build/nnopt}
mkdir -p "$OUT"
# Timed runs (latency) take the machine's run lock; with ACCURACY_ONLY=1 the
# runs skip the latency measurement and run at the lowest priority without
# the lock (accuracy does not depend on the load).
run() {
  name=$1; shift
  [ -f "$OUT/$name/report.json" ] && { echo "== $name: done already" >&2; return 0; }
  echo "== $name: nnopt quantize $CK $* --out $OUT/$name" >&2
  if [ -n "$ACCURACY_ONLY" ]; then
    nice -n 19 "$NNOPT" quantize "$CK" "$@" --no-latency --progress off --out "$OUT/$name" \
      > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log" >&2; return 0; }
  else
    flock /tmp/nnopt-run.lock nice -n 5 "$NNOPT" quantize "$CK" "$@" --progress off --out "$OUT/$name" \
      > "$OUT/$name.log" 2>&1 || { echo "$name failed, see $OUT/$name.log" >&2; return 0; }
  fi
}
run w8a8_minmax_pc      --method minmax --wbits 8 --abits 8 --per-channel
run w8a8_dfq_pc         --method dfq --wbits 8 --abits 8 --per-channel
run w4a8_rtn_pc         --method minmax --wbits 4 --abits 8 --per-channel --weight-mse --no-latency
run w4a8_adaround_pc    --method adaround --wbits 4 --abits 8 --per-channel --adaround-iters 1000 --no-latency
run w8a8_dfq_pt         --method dfq --wbits 8 --abits 8
run w8a8_dfq_pc_calib   --method dfq --wbits 8 --abits 8 --per-channel --dfq-act calibrate
run mixed_150k          --method minmax --wbits 8 --abits 8 --per-channel --weight-mse --size-budget 150 --mixed-bits 2,4,8 --no-latency
run w8a8_minmax_pt      --method minmax --wbits 8 --abits 8
run w8a8_minmax_pc_bc   --method minmax --wbits 8 --abits 8 --per-channel --bias-correction
run w4a8_rtn_pc_bc      --method minmax --wbits 4 --abits 8 --per-channel --weight-mse --bias-correction --no-latency
run w3a8_rtn_pc         --method minmax --wbits 3 --abits 8 --per-channel --weight-mse --no-latency
run w3a8_adaround_pc    --method adaround --wbits 3 --abits 8 --per-channel --adaround-iters 1000 --no-latency
run w8a8_dfq_pt_absorb  --method dfq --wbits 8 --abits 8 --absorb-high-bias
run w8a8_percentile_pc  --method percentile --wbits 8 --abits 8 --per-channel
run w8a8_mse_pc         --method mse --wbits 8 --abits 8 --per-channel
run w8a8_kl_pc          --method kl --wbits 8 --abits 8 --per-channel
python3 - "$OUT" > "$OUT/summary.txt" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'run':22s} {'fp32':>7s} {'fq':>7s} {'drop':>6s} {'int8':>7s} {'agree':>7s} {'lat1 x':>7s} {'lat64 x':>8s} {'secs':>6s}")
for name in sorted(os.listdir(out)):
    p = os.path.join(out, name, "report.json")
    if not os.path.exists(p): continue
    j = json.load(open(p))
    lat = j.get("latency", {})
    f = lambda k: f"{100*j[k]:.2f}" if k in j else "-"
    print(f"{name:22s} {f('fp32_accuracy'):>7s} {f('fake_quant_accuracy'):>7s} {j['drop_pt']:6.2f} "
          f"{f('int8_accuracy'):>7s} {f('int8_fake_quant_top1_agreement'):>7s} "
          f"{lat.get('1',{}).get('speedup',0):7.2f} {lat.get('64',{}).get('speedup',0):8.2f} {j['seconds']:6.0f}")
PY
cat "$OUT/summary.txt"
