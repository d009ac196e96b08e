#!/bin/sh
# nnopt int8 (bench_int8: W8A8 PTQ lowered to onednn) vs the same trained model
# quantized by PyTorch Python's torch.ao (bench/int8_peer.py, FX static PTQ,
# onednn qconfig and engine), same threads, same calibration images, one run.
# Usage: bench/int8_vs_torchao.sh [BUILD_DIR=build] [CHECKPOINT=/work/runs/r20/model.nnopt] [THREADS=2] [REPEATS=50] [MODEL=resnet20]
# MODEL: the zoo name the checkpoint was trained as (the peer rebuilds it from tests/py/zoo_reference.py).
# Run it on a quiet machine (flock /tmp/nnopt-run.lock ...): it prints latencies.
set -e
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CKPT=${2:-/work/runs/r20/model.nnopt}
THREADS=${3:-2}
REPEATS=${4:-50}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
MODEL=${5:-resnet20}
. bench/build_bench.sh && build_bench "$BUILD" bench_int8 nnopt_cli
"$BUILD/nnopt" export "$CKPT" --format torchscript --out "$TMP/fp32.pt" > /dev/null
"$BUILD/bench_int8" "$CKPT" "$THREADS" "$REPEATS" | tee "$TMP/nnopt.txt"
/usr/bin/python3 bench/int8_peer.py "$MODEL" "$TMP/fp32.pt" "$THREADS" "$REPEATS" > "$TMP/peer.json"
/usr/bin/python3 - "$TMP/nnopt.txt" "$TMP/peer.json" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
peer = json.load(open(sys.argv[2]))
acc = re.search(r"int8 ([0-9.]+) %", text)
print("\n%s, %d threads, engine %s, torch %s" % ("nnopt vs torch.ao", peer["threads"], peer["engine"], peer["torch"]))
print("test accuracy int8: nnopt %s %%, torch.ao %.2f %% (fp32 %.2f %%)" % (acc.group(1) if acc else "?", peer["acc_int8"], peer["acc_fp32"]))
print("%-6s %14s %16s %22s" % ("batch", "nnopt int8 ms", "torch.ao int8 ms", "torch.ao / nnopt"))
for line in text.splitlines():
    m = re.match(r"^(1|64)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s", line)
    if m:
        b, ours = m.group(1), float(m.group(4))
        theirs = peer["int8_ms_b" + b]
        print("%-6s %14.3f %16.3f %21.2fx" % (b, ours, theirs, theirs / ours))
PY
