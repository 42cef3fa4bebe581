#!/usr/bin/env bash
# The whole doctest suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, in its own build
# folder (default build-asan). Any report is fatal: the test that triggers it fails, and so does this script.
#
# Usage: scripts/sanitize.sh                  (configure, build, run every suite through CTest)
#        scripts/sanitize.sh --test-suite=nn  (extra arguments go to skipgrad_tests instead of CTest)
#        SKIPGRAD_ASAN_BUILD_DIR=dir scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SKIPGRAD_ASAN_BUILD_DIR:-build-asan}
jobs=$(nproc)

# -O1: fast enough to run the suite, still with usable stack traces.
cmake -S . -B "$build" -DSKIPGRAD_SANITIZE=ON -DSKIPGRAD_CUDA=OFF -DSKIPGRAD_BENCH=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" >/dev/null
cmake --build "$build" -j "$jobs" --target skipgrad_tests

# halt_on_error: the first report ends the process with a failure (UBSan is also built with
# -fno-sanitize-recover). detect_leaks: LeakSanitizer at exit. No suppressions are needed: OpenBLAS, OpenMP,
# ICU and SentencePiece report nothing.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# OpenBLAS's own threads on top of OpenMP's only add noise (and time) here.
export OPENBLAS_NUM_THREADS=1

if [ $# -gt 0 ]; then
  exec "$build"/skipgrad_tests --force-colors=0 "$@"
fi
ctest --test-dir "$build" --output-on-failure -j "$jobs"
