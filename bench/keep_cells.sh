#!/bin/sh
# Keeps the finished runs of a study folder (`nnopt compare quant|prune` OUT)
# in the repository, so that a long comparison continues on another machine:
#   bench/keep_cells.sh save OUT NAME     OUT -> bench/results/NAME
#   bench/keep_cells.sh restore NAME OUT  bench/results/NAME -> OUT (runs OUT lacks)
# Kept: study.json, the tables, and per run result.json and scales.json; not
# model files (QAT checkpoints, int8 models: no binaries in git). A run that
# saved an int8 model (8/8 cells that lower; the latency column times it) is
# therefore not kept and runs again after a restore. Run from the repository root.
set -e
[ $# -eq 3 ] || { echo "usage: $0 save OUT NAME | restore NAME OUT" >&2; exit 2; }
case "$1" in
  save) src=$2; dst=bench/results/$3 ;;
  restore) src=bench/results/$2; dst=$3 ;;
  *) echo "$0: unknown action '$1' (save or restore)" >&2; exit 2 ;;
esac
[ -f "$src/study.json" ] || { echo "$0: $src/study.json is missing: not a study folder" >&2; exit 1; }
mkdir -p "$dst"
[ -f "$dst/study.json" ] || cp "$src/study.json" "$dst/study.json"
if [ "$1" = save ]; then
  for f in compare.txt compare.csv compare.json; do [ -f "$src/$f" ] && cp "$src/$f" "$dst/$f"; done
fi
n=0
for r in $(cd "$src" && find . -name result.json | sort); do
  d=$(dirname "$r")
  [ "$1" = restore ] && [ -f "$dst/$r" ] && continue
  [ "$1" = save ] && [ -f "$src/$d/int8.nnopt" ] && continue
  mkdir -p "$dst/$d"
  for f in scales.json result.json; do  # result.json last: it marks the run done
    [ -f "$src/$d/$f" ] && cp "$src/$d/$f" "$dst/$d/$f.tmp" && mv "$dst/$d/$f.tmp" "$dst/$d/$f"
  done
  n=$((n + 1))
done
echo "$0: $1: $n runs from $src to $dst"
