#!/usr/bin/env bash
# Builds and runs skipgrad's CPU benchmarks; writes a Markdown report to stdout, progress and raw logs to stderr
# and $OUT_DIR. See docs/performance.md for the method.
#
#   scripts/bench.sh [--quick] [--no-ops] [--no-step] [--no-vs] [--profile] [--install]
#     --quick    fewer rounds (vs_libtorch 3 rounds x 3 steps, no torch.compile), shorter Google Benchmark runs
#     --profile  also `perf record` step_profile (pre_ln, 1 thread) and list the top symbols
#     --install  first install what the comparison needs: Debian libtorch-dev and linux-perf (scripts/setup.sh),
#                and PyPI torch + numpy in the venv $BENCH_VENV (default ~/venv-torch; ~3.5 GB: the default
#                Linux wheel pulls the CUDA packages), which then serves as SKIPGRAD_BENCH_PYTHON
# Environment: BUILD_DIR (default build-bench), OUT_DIR (default $BUILD_DIR/bench-out), THREADS (default "1,2"),
#   SKIPGRAD_BENCH_PYTHON (a python3 with a current PyPI `torch`; default: python3; PyTorch is left out of the
#   table when it cannot import torch), VS_ARGS (extra vs_libtorch arguments).
#
# Settings applied to EVERY framework (DESIGN.md "CPU speed"):
#   OMP_WAIT_POLICY=passive            OpenMP workers sleep instead of spinning against OpenBLAS's threads
#   GLIBC_TUNABLES mmap_threshold=32 MiB, trim_threshold=2 GiB
#                                      glibc keeps freed step memory instead of unmapping/trimming it every op
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
OUT_DIR=${OUT_DIR:-$BUILD_DIR/bench-out}
THREADS=${THREADS:-1,2}
PYTHON=${SKIPGRAD_BENCH_PYTHON:-python3}
QUICK=0 OPS=1 STEP=1 VS=1 PROFILE=0 INSTALL=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    --no-ops) OPS=0 ;;
    --no-step) STEP=0 ;;
    --no-vs) VS=0 ;;
    --profile) PROFILE=1 ;;
    --install) INSTALL=1 ;;
    *) echo "bench.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

if [[ $INSTALL == 1 ]]; then
  SKIPGRAD_SETUP_EXTRA="libtorch-dev linux-perf" "$ROOT/scripts/setup.sh" >&2
  BENCH_VENV=${BENCH_VENV:-$HOME/venv-torch}
  [[ -x $BENCH_VENV/bin/python ]] || python3 -m venv "$BENCH_VENV" >&2
  "$BENCH_VENV/bin/python" -c "import torch, numpy" 2>/dev/null || "$BENCH_VENV/bin/pip" install -q torch numpy >&2
  PYTHON=${SKIPGRAD_BENCH_PYTHON:-$BENCH_VENV/bin/python}
fi

export OMP_WAIT_POLICY=passive
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648
mkdir -p "$OUT_DIR"
log() { echo "bench.sh: $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

log "building in $BUILD_DIR"
cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSKIPGRAD_CUDA=OFF -DSKIPGRAD_TESTS=OFF \
  -DSKIPGRAD_BENCH=ON -DSKIPGRAD_EXAMPLES=${SKIPGRAD_EXAMPLES:-ON} >"$OUT_DIR/cmake.log" 2>&1 ||
  { cat "$OUT_DIR/cmake.log" >&2; exit 1; }
targets=(step_profile)
for t in bench_ops bench_step vs_libtorch; do
  grep -q "^$t:" <(make -C "$BUILD_DIR" help 2>/dev/null | sed 's/^\.\.\. //; s/$/:/') && targets+=("$t")
done
make -C "$BUILD_DIR" -j2 "${targets[@]}" >"$OUT_DIR/make.log" 2>&1 || { tail -30 "$OUT_DIR/make.log" >&2; exit 1; }
have() { [[ -x $BUILD_DIR/bench/$1 ]]; }

# Google Benchmark JSON -> Markdown rows: name | time | unit | counters
gb_table() {
  python3 - "$1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("| benchmark | time | GFLOP/s | other counters |")
print("|---|---|---|---|")
skip = {"name", "run_name", "run_type", "repetitions", "repetition_index", "threads", "iterations", "real_time",
        "cpu_time", "time_unit", "family_index", "per_family_instance_index", "aggregate_name", "aggregate_unit"}
for b in d["benchmarks"]:
    other = ", ".join(f"{k} {v:.4g}" for k, v in b.items() if k not in skip and k != "GFLOP/s"
                      and isinstance(v, (int, float)))
    gf = f"{b['GFLOP/s']:.1f}" if "GFLOP/s" in b else ""
    t = b["real_time"]
    print(f"| {b['name'].removesuffix('/real_time')} | {t:.1f} {b['time_unit']} | {gf} | {other} |" if t >= 10 else
          f"| {b['name'].removesuffix('/real_time')} | {t:.3g} {b['time_unit']} | {gf} | {other} |")
EOF
}

echo "# skipgrad CPU benchmarks"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores" \
  "($(grep -o -m1 -w avx512f /proc/cpuinfo || echo 'no avx512f'))"
echo "- load average at start: $(load) (uptime: $(uptime | sed 's/.*up/up/'))"
echo "- OMP_WAIT_POLICY=$OMP_WAIT_POLICY GLIBC_TUNABLES=$GLIBC_TUNABLES"
echo

min_time=""
[[ $QUICK == 1 ]] && min_time="--benchmark_min_time=0.1"
if [[ $OPS == 1 ]] && have bench_ops; then
  for t in ${THREADS//,/ }; do
    log "bench_ops --threads=$t (load $(load))"
    echo "## Ops, $t thread(s) (load before: $(load))"
    echo
    "$BUILD_DIR/bench/bench_ops" --threads="$t" $min_time --benchmark_out="$OUT_DIR/ops_t$t.json" \
      --benchmark_out_format=json >"$OUT_DIR/ops_t$t.txt" 2>&1
    gb_table "$OUT_DIR/ops_t$t.json"
    echo
  done
fi
if [[ $STEP == 1 ]] && have bench_step; then
  for t in ${THREADS//,/ }; do
    log "bench_step --threads=$t (load $(load))"
    echo "## Whole steps, $t thread(s) (load before: $(load))"
    echo
    "$BUILD_DIR/bench/bench_step" --threads="$t" $min_time --benchmark_out="$OUT_DIR/step_t$t.json" \
      --benchmark_out_format=json >"$OUT_DIR/step_t$t.txt" 2>&1
    gb_table "$OUT_DIR/step_t$t.json"
    echo
  done
fi
if [[ $VS == 1 ]]; then
  if have vs_libtorch; then
    vs=(--threads "$THREADS" --python "$PYTHON")
    [[ $QUICK == 1 ]] && vs+=(--rounds 3 --steps 3 --warmup 2 --no-compile)
    log "vs_libtorch ${vs[*]} ${VS_ARGS:-} (load $(load)); this takes a while"
    # shellcheck disable=SC2086
    "$BUILD_DIR/bench/vs_libtorch" "${vs[@]}" ${VS_ARGS:-} 2>"$OUT_DIR/vs_libtorch.err" | tee "$OUT_DIR/vs_libtorch.md" |
      sed 's/^# /## /' || log "vs_libtorch failed: see $OUT_DIR/vs_libtorch.err"
    echo
  else
    echo "vs_libtorch was not built (no libtorch: apt-get install libtorch-dev)."
  fi
fi
if [[ $PROFILE == 1 ]]; then
  if command -v perf >/dev/null; then
    log "perf record step_profile pre_ln (load $(load))"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 perf record -q -o "$OUT_DIR/perf.data" \
      "$BUILD_DIR/bench/step_profile" pre_ln 6 256 32 32 4 >"$OUT_DIR/step_profile.txt" 2>&1
    echo "## Profile: step_profile pre_ln, 1 thread, 4 steps (perf, self time)"
    echo
    cat "$OUT_DIR/step_profile.txt" | sed 's/^/    /'
    echo
    echo '```'
    # self time per symbol; template names cut at 140 characters
    perf report -i "$OUT_DIR/perf.data" --no-children --percent-limit 0.5 --sort dso,symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | sed 's/ \+- \+- *$//; s/  */ /g' | cut -c1-160 | head -40
    echo '```'
  else
    echo "perf is not installed (apt-get install linux-perf): no profile."
  fi
fi
echo
echo "- load average at end: $(load)"
