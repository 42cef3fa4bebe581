#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ with clang (the sanitized build folder of scripts/sanitize.sh, build-asan) and runs each one on its
# seed corpus (fuzz/corpus/<target>/) for a fixed number of executions. Any crash, sanitizer report, leak, timeout
# or uncaught non-skipgrad exception fails the script; the input is left in build-asan/fuzz/artifacts/.
#
# Usage: scripts/fuzz.sh               2000 executions per target (CI)
#        scripts/fuzz.sh 1000000       a longer run
#        SKIPGRAD_FUZZ_SECONDS=300 scripts/fuzz.sh   run each target for 300 s instead
#        SKIPGRAD_FUZZ_TARGETS="tsv safetensors" scripts/fuzz.sh   a subset
# New interesting inputs go to build-asan/fuzz/corpus/<target>/, never into the committed seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2000}
seconds=${SKIPGRAD_FUZZ_SECONDS:-}
read -r -a targets <<< "${SKIPGRAD_FUZZ_TARGETS:-safetensors tsv graph_json config_json}"

source scripts/sanitize_env.sh  # the same clang build folder as scripts/sanitize.sh (build-asan)
build=$SKIPGRAD_ASAN_BUILD_DIR
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

# An allocation that fails must be reported as a crash, not return null.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:allocator_may_return_null=0"
export OMP_NUM_THREADS=1
if [ -n "$seconds" ]; then limit=(-max_total_time="$seconds"); else limit=(-runs="$runs"); fi
mkdir -p "$build/fuzz/artifacts"
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz/corpus/$t"
  log="$build/fuzz/$t.log"
  echo "== fuzz_$t ${limit[*]} (log: $log)"
  rc=0
  "$build/fuzz/fuzz_$t" "${limit[@]}" -dict="fuzz/dict/$t.dict" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$build/fuzz/artifacts/$t-" -print_final_stats=1 \
    "$build/fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz_$t FAILED (exit $rc); the input is in $build/fuzz/artifacts/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)|DONE' "$log" || true
done
echo "fuzz: all targets clean"
