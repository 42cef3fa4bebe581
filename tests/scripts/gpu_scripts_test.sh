#!/usr/bin/env bash
# The GPU check's plumbing without a GPU: scripts/gpu_run.sh and scripts/bench_cuda.sh run over stub binaries in a
# scratch copy, to check what a 15-minute lease depends on (docs/cuda.md, "On a lent GPU"): a part that outruns the
# budget is stopped and marked, the parts after it are skipped, summary.md, results.tar.gz and traces.tar.gz are in
# $OUT after every part and are all that is there (the device tool returns 8 files at most), and the benchmark starts no round
# that its DEADLINE_S would not hold, yet prints its table. Run by CTest (gpu_scripts); takes ~10 s.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
root=$(mktemp -d /tmp/gpu_scripts_test.XXXXXX)
trap 'rm -rf "$root"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
expect() { grep -qF -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "$1 lacks '$2'"; }; }

mkdir -p "$root/scripts" "$root/bench" "$root/.gpu/bin" "$root/lib"
cp "$src/scripts/gpu_run.sh" "$src/scripts/bench_cuda.sh" "$root/scripts/"
stub() { printf '#!/usr/bin/env bash\n%s\n' "$2" >"$1" && chmod +x "$1"; }
# the whole suite sleeps past any budget here; the cuda suite returns at once
stub "$root/.gpu/bin/skipgrad_tests" 'echo "stub skipgrad_tests $*"; [[ $* != *exclude=cuda* ]] || sleep 61'
# translate leaves a profile's Chrome trace in its --out folder: it must come back in traces.tar.gz, not results
stub "$root/.gpu/bin/skipgrad-translate" 'echo "stub translate $*"; while (($#)); do [[ $1 != --out ]] || {
  mkdir -p "$2" && echo "{}" >"$2/profile_step1.trace.json"; }; shift; done'
stub "$root/.gpu/bin/mlp_demo" 'echo "stub mlp_demo $*"'
stub "$root/.gpu/bin/skipgrad-lm" 'echo "stub lm $*"'
stub "$root/.gpu/bin/skipgrad-graph" 'echo "stub graph $*"; sleep 61'
row='{"kind": "step", "topology": "post_ln", "precision": "fp32", "round_ms": [10, 12, 11], "host_ms": 1.0,
 "peak_alloc_mib": 5, "device_used_mib": null, "loss_initial": 4.0, "loss_after_update": 3.9'
device='{"kind": "device", "framework": "skipgrad", "device": "stub", "batch": 2, "tgt_len": 4, "step_tflop": 0.001}'
stub "$root/.gpu/bin/cuda_step" "sleep 2; echo '$device'; echo '$(tr -d '\n' <<<"$row"), \"framework\": \"skipgrad\"}'"
# PyTorch's loss is NaN (null in JSON): the table shows "–" for it
stub "$root/bench/pytorch_cuda_step.py" "print('$(tr -d '\n' <<<"$row" | sed 's/"loss_initial": 4.0/"loss_initial": null/'), \"framework\": \"pytorch\"}')"
tar -C "$root" -cJf "$root/.gpu/lib.tar.xz" lib
echo build-stub >"$root/.gpu/build_dir"
echo "$root" >"$root/.gpu/source_dir"
echo stub >"$root/.gpu/commit"
mkdir "$root/cudalib" && touch "$root/cudalib/libcublas.so.13" "$root/cudalib/libcudart.so.13"
export CUDA_LIB_DIRS=$root/cudalib

# 1. gpu_run.sh: info and cuda run; tests is stopped at its cap of 2 s and translate still runs; graph outruns what
# is left of the 6 s budget; bench is skipped (it needs BENCH_MIN_S)
out=$root/out
rc=0
OUT=$out BUDGET_S=6 MIN_PART_S=1 CAP_TESTS_S=2 BENCH_MIN_S=30 "$root/scripts/gpu_run.sh" info cuda tests mlp lm \
  translate graph bench >"$root/run.log" 2>&1 || rc=$?
((rc == 1)) || { cat "$root/run.log"; fail "gpu_run.sh exited $rc, expected 1 (a part failed)"; }
expect "$out/summary.md" "| info | 0 |"
expect "$out/summary.md" "| cuda | 0 |"
expect "$out/summary.md" "| tests | 124 (stopped: its cap of 2 s) |"
expect "$out/summary.md" "| mlp | 0 |"
expect "$out/summary.md" "| lm | 0 |"
expect "$out/summary.md" "| translate | 0 |"
expect "$out/summary.md" "| graph | 124 (stopped: budget ran out) |"
expect "$out/summary.md" "| bench | skipped (out of time) | 0 |"
expect "$root/run.log" "=== tests: stopped: its cap of 2 s"
[[ $(ls -A "$out") == $'results.tar.gz\nsummary.md\ntraces.tar.gz' ]] || fail "\$OUT holds $(ls -A "$out" | tr '\n' ' ')"
mkdir "$root/results" && tar -C "$root/results" -xzf "$out/results.tar.gz"
[[ -z $(find "$root/results" -name '*.trace.json') ]] || fail "results.tar.gz holds a Chrome trace"
tar -tzf "$out/traces.tar.gz" | grep -qx './translate_run/profile_step1.trace.json' || fail "traces.tar.gz lacks the trace"
expect "$root/results/cuda.log" "stub skipgrad_tests --test-suite=cuda --duration=true"
expect "$root/results/tests.log" "stub skipgrad_tests --test-suite-exclude=cuda"
expect "$root/results/mlp.log" "stub mlp_demo --device cuda"
expect "$root/results/lm.log" \
  "stub lm --device cuda --text README.md --topologies pre_ln,hybrid_norm --positions learned"
expect "$root/results/lm.log" \
  "stub lm --device cuda --text README.md --topologies pre_ln,hybrid_norm --positions alibi"
expect "$root/results/translate.log" "stub translate train --device cuda"
for c in /proc/[0-9]*/cmdline; do  # the stopped parts' children are gone too (timeout signals its process group)
  [[ $(tr '\0' ' ' 2>/dev/null <"$c") != "sleep 61 " ]] || fail "a stopped part left its child running"
done
# on the build machine, where the build folder is real, it refuses to put the packed binaries into it
touch "$root/build-stub/CMakeCache.txt"
rc=0
OUT=$out "$root/scripts/gpu_run.sh" info >"$root/refuse.log" 2>&1 || rc=$?
((rc == 2)) || fail "gpu_run.sh over a build folder exited $rc, expected 2"
expect "$root/refuse.log" "is a build folder here"

# sanitize: racecheck and synccheck (a third of the time left each) before memcheck, which takes the rest
rm "$root/build-stub/CMakeCache.txt"
mkdir "$root/sanbin"
stub "$root/sanbin/compute-sanitizer" 'echo "stub sanitizer $2"'
rc=0
PATH=$root/sanbin:$PATH OUT=$root/out_san BUDGET_S=30 MIN_PART_S=1 "$root/scripts/gpu_run.sh" sanitize \
  >"$root/san.log" 2>&1 || rc=$?
((rc == 0)) || { cat "$root/san.log"; fail "gpu_run.sh sanitize exited $rc"; }
[[ $(grep -o '^=== [a-z]* (' "$root/san.log" | tr -d '=( ' | tr '\n' ' ') == 'racecheck synccheck memcheck ' ]] ||
  { cat "$root/san.log"; fail "sanitize's tools ran in the wrong order"; }
expect "$root/san.log" "=== racecheck (30 s left, 10 s for it)"

# 2. bench_cuda.sh: each round takes >= 2 s, so DEADLINE_S=3 holds one of the 5; the table comes all the same
if command -v python3 >/dev/null; then
  DEVICE=cpu ROUNDS=5 DEADLINE_S=3 CUDA_STEP="$root/.gpu/bin/cuda_step" LOG_DIR="$root/bench_out" \
    "$root/scripts/bench_cuda.sh" "$root/build-stub" >"$root/bench.log" 2>&1 || { cat "$root/bench.log"; fail "bench_cuda.sh failed"; }
  expect "$root/bench.log" "round 2/5 not started"
  expect "$root/bench.log" "| post_ln | fp32 | skipgrad | 11.00 [10.50–11.50] |"
  expect "$root/bench.log" "| post_ln | fp32 | pytorch | 11.00"
  expect "$root/bench.log" "| post_ln | fp32 | pytorch | – | – | 3.900000 | 0.0e+00 |"
  expect "$root/bench_out/table.md" "skipgrad: 1 runs"
else
  echo "gpu_scripts_test: no python3: bench_cuda.sh's table not checked"  # scripts/setup.sh installs it
fi
echo "gpu_scripts_test: passed"
