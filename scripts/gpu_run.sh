#!/usr/bin/env bash
# There, on a lent GPU machine (the device tool; .gpu/ made here by scripts/gpu_pack.sh and carried): unpacks the
# binaries and libraries, then runs the parts of issue 6 named on the command line, each one's log under $OUT
# (what comes back from the machine; gpu-out/ when OUT is unset). Fits the device tool's 10-minute calls when the
# parts are split, e.g. `info cuda tests` in one call and `translate graph bench` in the next.
#
#   scripts/gpu_run.sh [info] [cuda] [sanitize] [tests] [translate] [graph] [bench]
#                                               (no argument: all of them but sanitize)
#
#   info       nvidia-smi, the CUDA libraries found, the packed commit
#   cuda       the `cuda` test suite: every op CPU vs CUDA forward and backward, Adam, the host-wait count of a
#              training step, the translation example on both devices (tests/test_cuda.cpp,
#              tests/test_device_training.cpp)
#   sanitize   the `cuda` suite under compute-sanitizer: memcheck (out-of-bounds and misaligned accesses, CUDA API
#              errors) on all of it, racecheck and synccheck (shared-memory hazards, barriers) on the cases of the
#              row kernels and reductions; what the CUDA emulator cannot see. Needs the machine's
#              compute-sanitizer (seen working on the Firecracker runtime, refused on gVisor: KINDS.md)
#   tests      the whole test suite (CPU suites included)
#   translate  skipgrad-translate train --device cuda for TRANSLATE_STEPS (300) steps on the numbers corpus,
#              with evaluations, then a beam-5 test BLEU
#   graph      skipgrad-graph dump/paths --device cuda and a small report measured on the GPU
#   bench      scripts/bench_cuda.sh with the packed cuda_step (ROUNDS, RUN_ARGS as that script reads them)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
[[ -d .gpu/bin ]] || { echo "gpu_run.sh: no .gpu/bin: run scripts/gpu_pack.sh on the build machine and carry .gpu"; exit 2; }

# ---- unpack: the libraries, the binaries where the build put them, the source path the tests were compiled with
mkdir -p /tmp/skipgrad-gpu && tar -C /tmp/skipgrad-gpu -xJf .gpu/lib.tar.xz
build=$(cat .gpu/build_dir)
mkdir -p "$build/bench"
cp .gpu/bin/skipgrad_tests .gpu/bin/skipgrad-translate .gpu/bin/skipgrad-graph "$build/"
cp .gpu/bin/cuda_step "$build/bench/"
src=$(cat .gpu/source_dir)
if [[ $src != "$ROOT" && ! -e $src ]]; then mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"; fi
# CUDA's runtime and cuBLAS from this machine: the toolkit's folder, else the pip wheels next to PyTorch.
cuda_libs=/usr/local/cuda/lib64
if ! ls $cuda_libs/libcublas.so.13* >/dev/null 2>&1; then
  cuda_libs=$(dirname "$(find / -xdev -name 'libcublas.so.13*' 2>/dev/null | head -1)")
fi
cudart_dir=$(dirname "$(find "$cuda_libs" / -xdev -name 'libcudart.so.13*' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH=/tmp/skipgrad-gpu/lib:$cuda_libs:$cudart_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMP_WAIT_POLICY=passive
parts=("$@")
((${#parts[@]})) || parts=(info cuda tests translate graph bench)
status=0
run() {  # run NAME COMMAND...: output to the screen and to $OUT/NAME.log; remembers a failure
  local name=$1
  shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  ((rc == 0)) || status=1
}

for part in "${parts[@]}"; do
  case $part in
    info)
      run info bash -c "nvidia-smi; echo; echo commit \$(cat .gpu/commit); echo LD_LIBRARY_PATH=\$LD_LIBRARY_PATH;
                        ldd $build/skipgrad_tests | grep -E 'cuda|cublas|openblas|not found'" ;;
    cuda) run cuda "$build/skipgrad_tests" --test-suite=cuda --duration=true ;;
    sanitize)
      cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
      if [[ -z $cs ]]; then
        echo "gpu_run.sh: compute-sanitizer not found on this machine"; status=1
      else
        rows='*softmax*,*norm*,*reduction*,*cross entropy*,*every op of the op table*'
        run memcheck "$cs" --tool memcheck --leak-check no --error-exitcode 3 "$build/skipgrad_tests" --test-suite=cuda
        run racecheck "$cs" --tool racecheck --error-exitcode 3 "$build/skipgrad_tests" --test-suite=cuda \
          "--test-case=$rows"
        run synccheck "$cs" --tool synccheck --error-exitcode 3 "$build/skipgrad_tests" --test-suite=cuda \
          "--test-case=$rows"
      fi ;;
    tests) run tests "$build/skipgrad_tests" ;;
    translate)
      run translate "$build/skipgrad-translate" train --device cuda --steps "${TRANSLATE_STEPS:-300}" \
        --eval-every 100 --save-every 100 --quiet --out "$OUT/translate_run" --data-dir /tmp/skipgrad-data ;;
    graph)
      run graph bash -c "$build/skipgrad-graph dump --device cuda --topology resi_dual --layers 2 --format json \
          -o $OUT/graph_resi_dual.json && $build/skipgrad-graph paths --device cuda --topology post_ln --layers 3 &&
        $build/skipgrad-graph report --device cuda --topologies post_ln,pre_ln --depths 6 --seeds 1 --steps 0,20 \
          -o $OUT/analysis_report_gpu.md" ;;
    bench) run bench env CUDA_STEP="$build/bench/cuda_step" LOG_DIR="$OUT/bench" scripts/bench_cuda.sh "$build" ;;
    *) echo "gpu_run.sh: unknown part '$part'"; status=2 ;;
  esac
done
rm -rf "$OUT/translate_run"/*.safetensors  # checkpoints would not come back (size); metrics.jsonl does
exit $status
