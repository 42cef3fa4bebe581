#!/usr/bin/env bash
# The test command: install what is missing, build (CUDA backend included when nvcc is present: GPU tests skip
# without a device), run the whole doctest suite through CTest; then the same suite under ASan + UBSan + LSan and
# each fuzz target for 2000 executions (scripts/sanitize.sh, its own clang build folder; docs/reliability.md).
# SKIPGRAD_SANITIZE=0 skips that second part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${SKIPGRAD_BUILD_DIR:-build}
jobs=$(nproc)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # no spinning OpenMP threads against OpenBLAS
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSKIPGRAD_BENCH_LIBTORCH=OFF >/dev/null  # libtorch side-by-side: scripts/bench.sh
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" --output-on-failure -j "$jobs"
if [ "${SKIPGRAD_SANITIZE:-1}" != 0 ]; then
  scripts/sanitize.sh
fi
