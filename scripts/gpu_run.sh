#!/usr/bin/env bash
# There, on a lent GPU machine (the device tool; .gpu/ made here by scripts/gpu_pack.sh and carried): unpacks the
# binaries and libraries, then runs the parts of issue 6 named on the command line, in that order, inside one time
# budget, so that the whole check fits one call of a lease of 15 device minutes (docs/cuda.md, "On a lent GPU").
#
#   scripts/gpu_run.sh [PART...]      no PART: info cuda bench index mlp lm translate tests graph sanitize
#
#   info       nvidia-smi, the CUDA libraries found, the packed commit
#   cuda       the `cuda` test suite: every op CPU vs CUDA forward and backward, the gradient checks on the GPU,
#              Adam, the host-wait count of a training step, the translation example on both devices
#   tests      the whole test suite (without the `cuda` suite when `cuda` is among the parts)
#   index      bench/index_bench --device cuda: topk (each kernel's side of its switches), sort and sampling draws
#              at decoding shapes, median ms per call (docs/translate.md "Sampling", autograd/ops.h topk)
#   mlp        examples/mlp_demo --device cuda: the smallest example, 2000 steps, exits 0 when the fit converged
#   lm         skipgrad-lm --device cuda on README.md: pre_ln and hybrid_norm LMs with RoPE and with learned
#              positions, 200 steps each; exits 0 when every one learned
#   translate  skipgrad-translate train --device cuda for TRANSLATE_STEPS (300) steps on the numbers corpus,
#              with evaluations, then a beam-5 test BLEU; TRANSLATE_AUTOCAST=bf16 trains in bf16 mixed precision;
#              the loss is read every TRANSLATE_SYNC_EVERY (10) steps (--sync-every: no host wait in between);
#              TRANSLATE_ARGS adds options ("--norm dyt --dyt-stats-every 50": DyT's kernels and its statistics' copies)
#   graph      skipgrad-graph dump/paths --device cuda, a small report measured on the GPU, and `cost` (each
#              topology's profiled step at the issue-6 size: time by phase, norms' share, activation memory)
#   bench      scripts/bench_cuda.sh with the packed cuda_step: rounds until ROUNDS (3) or until the budget would
#              not hold another one, then its table
#   sanitize   the `cuda` suite under compute-sanitizer: racecheck and synccheck on the row kernels' and
#              reductions' cases (a third of what is left each), then memcheck on all of it (the rest; needs the
#              machine's compute-sanitizer: Firecracker, not gVisor)
#
# Environment: BUDGET_S (480): seconds for all the parts together; each part runs under `timeout` with what is left,
# and at most its cap: CAP_CUDA_S (150), CAP_BENCH_S (240), index 40, mlp 60, lm 60, CAP_TRANSLATE_S (150),
# CAP_TESTS_S (120),
# CAP_GRAPH_S (90), CAP_SANITIZE_S (each of its 3 tools; unset: as above), so that a part
# that hangs on its first run on hardware leaves time to the others. A part that would get under MIN_PART_S (20),
# bench under BENCH_MIN_S (90), is skipped and says so. Pass the device tool a timeout_s ~60 s above BUDGET_S.
# What comes back ($OUT, gpu-out/ when OUT is unset; the device tool returns at most 8 files): summary.md (each
# part's exit status and seconds, the benchmark's table), results.tar.gz (every log, the bench's runs.jsonl, the
# translation run's metrics, the graph files) and traces.tar.gz (the profiles' Chrome traces; dropped if over
# MAX_TRACES_BYTES, 15 MiB), all rewritten after every part, so a call cut short keeps them.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
BUDGET_S=${BUDGET_S:-480}
MIN_PART_S=${MIN_PART_S:-20}
MAX_TRACES_BYTES=${MAX_TRACES_BYTES:-$((15 << 20))}  # the device tool returns no file over 16 MiB
mkdir -p "$OUT"
[[ -d .gpu/bin ]] || { echo "gpu_run.sh: no .gpu/bin: run scripts/gpu_pack.sh on the build machine and carry .gpu"; exit 2; }
build=$(cat .gpu/build_dir)
[[ ! -f $build/CMakeCache.txt ]] || {
  echo "gpu_run.sh: $build is a build folder here: this script runs on the GPU machine, where it puts the packed" \
    "binaries in its place"; exit 2; }
packed=$(cat .gpu/commit)
here=$(git rev-parse --short HEAD 2>/dev/null || true)
[[ -z $here || $here == "${packed%-dirty}" ]] || echo "gpu_run.sh: WARNING: .gpu was packed at $packed, the checkout is at $here"

# ---- unpack: the libraries, the binaries where the build put them, the source path the tests were compiled with
mkdir -p /tmp/skipgrad-gpu
tar -C /tmp/skipgrad-gpu -xJf .gpu/lib.tar.xz 2>/dev/null ||  # no xz: Python's tarfile reads it too
  python3 -c "import tarfile; tarfile.open('.gpu/lib.tar.xz').extractall('/tmp/skipgrad-gpu')" ||
  { echo "gpu_run.sh: cannot unpack .gpu/lib.tar.xz"; exit 2; }
mkdir -p "$build/bench" "$build/examples"
cp .gpu/bin/skipgrad_tests .gpu/bin/skipgrad-translate .gpu/bin/skipgrad-graph .gpu/bin/skipgrad-lm "$build/"
cp .gpu/bin/cuda_step .gpu/bin/index_bench "$build/bench/"
cp .gpu/bin/mlp_demo "$build/examples/"
src=$(cat .gpu/source_dir)
if [[ $src != "$ROOT" && ! -e $src ]]; then mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"; fi
# CUDA's runtime and cuBLAS from this machine: the toolkit's folders first, else the pip wheels next to PyTorch.
find_lib() {  # the folder of the first $1 found (CUDA_LIB_DIRS: where to look instead)
  local f
  # shellcheck disable=SC2086
  f=$(find -H ${CUDA_LIB_DIRS:-/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /opt /usr/lib \
        /usr/local/lib} -name "$1" 2>/dev/null | head -1)
  [[ -n $f ]] && dirname "$f"
}
cublas_dir=$(find_lib 'libcublas.so.13*') || { echo "gpu_run.sh: no libcublas.so.13 on this machine"; exit 2; }
cudart_dir=$(find_lib 'libcudart.so.13*') || { echo "gpu_run.sh: no libcudart.so.13 on this machine"; exit 2; }
# PyTorch keeps the machine's own libraries (the packed ones include Debian's libstdc++): scripts/bench_cuda.sh
export PYTHON_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH=/tmp/skipgrad-gpu/lib:$cublas_dir:$cudart_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=passive

parts=("$@")
((${#parts[@]})) || parts=(info cuda bench index mlp lm translate tests graph sanitize)
has_part() { local p; for p in "${parts[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
RES=/tmp/skipgrad-gpu/results  # everything a part writes; packed into $OUT after each part
rm -rf "$RES" && mkdir -p "$RES"
deadline=$((SECONDS + BUDGET_S))
status=0
summary=()

pack() {  # $OUT/summary.md and $OUT/results.tar.gz as they stand, each replaced whole (a cut call keeps the last)
  {
    echo "# gpu_run.sh: commit $(cat .gpu/commit), parts: ${parts[*]}, budget ${BUDGET_S} s"
    echo
    echo "| part | exit | seconds |"
    echo "|---|---|---|"
    printf '%s\n' "${summary[@]}"
    if [[ -f $RES/bench/table.md ]]; then echo; cat "$RES/bench/table.md"; fi
    if [[ -s $RES/index.log ]]; then echo; echo "## index_bench on the GPU"; echo; cat "$RES/index.log"; fi
    if [[ -s $RES/cost_gpu.md ]]; then echo; echo "## skipgrad-graph cost on the GPU"; echo; cat "$RES/cost_gpu.md"; fi
  } >"$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
  # The Chrome traces go apart, so that a large trace cannot push the logs over the device tool's limit on one file
  tar -C "$RES" --exclude='*.safetensors' --exclude='*.trace.json' -czf "$OUT/results.tar.gz.tmp" . &&
    mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
  (cd "$RES" && find . -name '*.trace.json' -print0 | tar --null -T - -czf "$OUT/traces.tar.gz.tmp") &&
    mv "$OUT/traces.tar.gz.tmp" "$OUT/traces.tar.gz"
  if [[ -f $OUT/traces.tar.gz ]] && (($(stat -c %s "$OUT/traces.tar.gz") > MAX_TRACES_BYTES)); then
    echo "gpu_run.sh: traces.tar.gz over $((MAX_TRACES_BYTES >> 20)) MiB, not returned (the traces are in no other file)"
    rm -f "$OUT/traces.tar.gz"
  fi
}
# run NAME CAP MIN COMMAND...: under `timeout` with the budget left, at most CAP seconds (0: no cap), skipped when
# under MIN is left; output to the screen and to RES/NAME.log
run() {
  local name=$1 cap=$2 min=$3
  shift 3
  local left=$((deadline - SECONDS)) limit why="budget ran out"
  if ((left < min)); then
    echo "=== $name: skipped: ${left} s of the ${BUDGET_S} s budget left (it needs ${min})"
    summary+=("| $name | skipped (out of time) | 0 |")
    status=1
    return
  fi
  limit=$left
  if ((cap > 0 && cap < left)); then limit=$cap why="its cap of ${cap} s"; fi
  echo "=== $name (${left} s left, ${limit} s for it): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RES/$name.log"
  local rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && echo "=== $name: stopped: $why"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  summary+=("| $name | $rc$( ((rc == 124 || rc == 137)) && echo " (stopped: $why)") | $((SECONDS - t0)) |")
  ((rc == 0)) || status=1
  pack
}

tests=$build/skipgrad_tests
for part in "${parts[@]}"; do
  case $part in
    info)
      run info 60 "$MIN_PART_S" bash -c "nvidia-smi; echo; echo commit $packed; echo LD_LIBRARY_PATH=\$LD_LIBRARY_PATH
        ldd $tests | grep -E 'cuda|cublas|openblas'; ! ldd $build/skipgrad* $build/bench/cuda_step $build/examples/mlp_demo | grep 'not found'" ;;
    cuda) run cuda "${CAP_CUDA_S:-150}" "$MIN_PART_S" "$tests" --test-suite=cuda --duration=true ;;
    tests)
      exclude=()
      has_part cuda && exclude=(--test-suite-exclude=cuda)
      run tests "${CAP_TESTS_S:-120}" "$MIN_PART_S" "$tests" "${exclude[@]}" ;;
    index) run index 40 "$MIN_PART_S" "$build/bench/index_bench" --device cuda ;;
    mlp) run mlp 60 "$MIN_PART_S" "$build/examples/mlp_demo" --device cuda ;;
    lm)
      run lm 60 "$MIN_PART_S" bash -c "for p in rope learned alibi t5; do $build/skipgrad-lm --device cuda \
          --text README.md --topologies pre_ln,hybrid_norm --positions \$p --steps 200 --warmup 20 --eval-every 0 \
          --sample 40 || exit; done" ;;
    translate)
      run translate "${CAP_TRANSLATE_S:-150}" "$MIN_PART_S" "$build/skipgrad-translate" train --device cuda \
        --steps "${TRANSLATE_STEPS:-300}" --autocast "${TRANSLATE_AUTOCAST:-off}" --eval-every 100 --save-every 100 \
        --sync-every "${TRANSLATE_SYNC_EVERY:-10}" ${TRANSLATE_ARGS:-} \
        --quiet --out "$RES/translate_run" \
        --data-dir /tmp/skipgrad-data ;;
    graph)
      run graph "${CAP_GRAPH_S:-90}" "$MIN_PART_S" bash -c "set -o pipefail; $build/skipgrad-graph dump --device cuda \
          --topology resi_dual --layers 2 --format json -o $RES/graph_resi_dual.json &&
        $build/skipgrad-graph paths --device cuda --topology post_ln --layers 3 &&
        $build/skipgrad-graph report --device cuda --topologies post_ln,pre_ln --depths 6 --seeds 1 --steps 0,20 \
          -o $RES/analysis_report_gpu.md &&
        $build/skipgrad-graph cost --device cuda --topologies post_ln,pre_ln,resi_dual,hybrid_norm,deep_norm \
          --layers 6 --d-model 512 --heads 8 --ffn 2048 --vocab 8000 --batch 64 --len 64 --trace-dir $RES/cost \
          | tee $RES/cost_gpu.md" ;;
    bench)
      # bench_cuda.sh starts no round that would end past its deadline, ~15 s before this part's end
      cap=${CAP_BENCH_S:-240}
      left=$((deadline - SECONDS))
      run bench "$cap" "${BENCH_MIN_S:-90}" env CUDA_STEP="$build/bench/cuda_step" LOG_DIR="$RES/bench" \
        DEADLINE_S=$(((cap > 0 && cap < left ? cap : left) - 15)) scripts/bench_cuda.sh "$build" ;;
    sanitize)
      cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
      if [[ -z $cs ]]; then
        echo "gpu_run.sh: compute-sanitizer not found on this machine"
        summary+=("| sanitize | not found | 0 |")
        status=1
      else
        rows='*softmax*,*norm*,*reduction*,*cross entropy*,*every op of the op table*'
        # racecheck and synccheck (the only checks of shared-memory hazards and barriers on hardware; short test
        # list) first, a third of what is left each, so that memcheck over the whole suite cannot starve them
        third=$(((deadline - SECONDS) / 3))
        cap=${CAP_SANITIZE_S:-$third}
        run racecheck "$cap" "$MIN_PART_S" "$cs" --tool racecheck --error-exitcode 3 "$tests" --test-suite=cuda \
          "--test-case=$rows"
        run synccheck "$cap" "$MIN_PART_S" "$cs" --tool synccheck --error-exitcode 3 "$tests" --test-suite=cuda \
          "--test-case=$rows"
        run memcheck "${CAP_SANITIZE_S:-0}" "$MIN_PART_S" "$cs" --tool memcheck --leak-check no --error-exitcode 3 \
          "$tests" --test-suite=cuda
      fi ;;
    *) echo "gpu_run.sh: unknown part '$part'"; summary+=("| $part | unknown part | 0 |"); status=2 ;;
  esac
done
pack
echo
cat "$OUT/summary.md"
exit $status
