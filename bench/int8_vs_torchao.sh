#!/bin/sh
# nnopt int8 (bench_int8: W8A8 PTQ lowered to onednn) vs the same trained model
# quantized by PyTorch Python's torch.ao (bench/int8_peer.py, FX static PTQ,
# onednn qconfig and engine), same threads, same calibration images. The two
# programs run in turn ROUNDS times (nnopt, peer, nnopt, peer, ...) and the
# medians over the rounds are compared, so a slow spell of the machine falls on
# both alike.
# Usage: bench/int8_vs_torchao.sh [BUILD_DIR=build] [CHECKPOINT=/work/runs/r20/model.nnopt] [THREADS=2] [REPEATS=50] [MODEL=resnet20] [ROUNDS=3]
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
ROUNDS=${6:-3}
. bench/build_bench.sh && build_bench "$BUILD" bench_int8 nnopt_cli
"$BUILD/nnopt" export "$CKPT" --format torchscript --out "$TMP/fp32.pt" > /dev/null
r=1
while [ "$r" -le "$ROUNDS" ]; do
  echo "== round $r of $ROUNDS"
  "$BUILD/bench_int8" "$CKPT" "$THREADS" "$REPEATS" | tee "$TMP/nnopt.$r.txt"
  /usr/bin/python3 bench/int8_peer.py "$MODEL" "$TMP/fp32.pt" "$THREADS" "$REPEATS" | tee "$TMP/peer.$r.json"
  r=$((r + 1))
done
/usr/bin/python3 - "$TMP" "$ROUNDS" <<'PY'
import json, re, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
ours = {"1": [], "64": []}
theirs = {"1": [], "64": []}
for r in range(1, rounds + 1):
    text = open("%s/nnopt.%d.txt" % (tmp, r)).read()
    peer = json.load(open("%s/peer.%d.json" % (tmp, r)))
    for line in text.splitlines():
        m = re.match(r"^(1|64)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s", line)
        if m:
            ours[m.group(1)].append(float(m.group(4)))
    for b in ours:
        theirs[b].append(peer["int8_ms_b" + b])
acc = re.search(r"int8 ([0-9.]+) %", text)
print("\n%s, %d threads, engine %s, torch %s; medians of %d rounds" % ("nnopt vs torch.ao", peer["threads"], peer["engine"], peer["torch"], rounds))
print("test accuracy int8: nnopt %s %%, torch.ao %.2f %% (fp32 %.2f %%)" % (acc.group(1) if acc else "?", peer["acc_int8"], peer["acc_fp32"]))
print("%-6s %14s %16s %22s" % ("batch", "nnopt int8 ms", "torch.ao int8 ms", "torch.ao / nnopt"))
for b in ("1", "64"):
    if len(ours[b]) != rounds:
        raise SystemExit("int8_vs_torchao: bench_int8 printed no batch-%s row in some round" % b)
    o, t = statistics.median(ours[b]), statistics.median(theirs[b])
    print("%-6s %14.3f %16.3f %21.2fx" % (b, o, t, t / o))
PY
