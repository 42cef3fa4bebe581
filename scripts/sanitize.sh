#!/usr/bin/env bash
# The whole doctest suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, then each libFuzzer
# target for a short fixed number of executions, from ONE clang build folder (default build-asan): the fuzz
# configuration (-DSKIPGRAD_FUZZ=ON, fuzz/flags.cmake) instruments everything with ASan + UBSan, so the test binary
# built there is the sanitized one and no second build is needed. Any report is fatal.
#
# Usage: scripts/sanitize.sh                    (configure, build, every suite through CTest, then scripts/fuzz.sh)
#        scripts/sanitize.sh --test-suite=nn    (extra arguments go to skipgrad_tests; no fuzzing)
#        SKIPGRAD_FUZZ_RUNS=0 scripts/sanitize.sh   (the tests only)
#        SKIPGRAD_ASAN_BUILD_DIR=dir scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/sanitize_env.sh  # configures "$SKIPGRAD_ASAN_BUILD_DIR" and exports the sanitizer options
# cuda_step and index_bench: their GPU paths run on the CUDA emulator as the CTest entries cuda_step_emulated and
# index_bench_emulated (bench/CMakeLists.txt)
cmake --build "$SKIPGRAD_ASAN_BUILD_DIR" -j "$(nproc)" --target skipgrad_tests cuda_step index_bench

if [ $# -gt 0 ]; then
  exec "$SKIPGRAD_ASAN_BUILD_DIR"/skipgrad_tests --force-colors=0 "$@"
fi
ctest --test-dir "$SKIPGRAD_ASAN_BUILD_DIR" --output-on-failure -j "$(nproc)"
runs=${SKIPGRAD_FUZZ_RUNS:-2000}
if [ "$runs" -gt 0 ]; then scripts/fuzz.sh "$runs"; fi
