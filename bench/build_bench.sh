# Sourced by the bench scripts: builds the benchmark programs they run, which
# the default build leaves out. Usage: build_bench BUILD_DIR TARGET...
build_bench() {
  _dir=$1; shift
  cmake --build "$_dir" -j"${NNOPT_JOBS:-$(nproc)}" --target "$@" > /dev/null \
    || { echo "bench: building $* in $_dir failed (run scripts/setup.sh $_dir first)" >&2; exit 1; }
}
