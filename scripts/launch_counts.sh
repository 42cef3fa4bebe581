#!/usr/bin/env bash
# Kernel launches and GEMMs per training step of the issue-6 model, per kernel, without a GPU: bench/cuda_step on
# the CUDA emulator in skip-work mode (launches and GEMMs are checked and counted, not run), once with 1 timed
# round and once with 2; the difference is one step (warm-up and setup cancel out). See docs/cuda_benchmark.md.
#
#   scripts/launch_counts.sh [BUILD_DIR] [TOPOLOGY]    BUILD_DIR: default build-emu, configured with
#                                                      -DSKIPGRAD_CUDA_EMULATOR=ON -DSKIPGRAD_BENCH=ON;
#                                                      TOPOLOGY: default post_ln
# Environment: SHAPE (cuda_step's --shape, default the issue-6 model), WARMUP (2), PRECISION (fp32; bf16: autocast).
set -euo pipefail
build=${1:-build-emu}
topology=${2:-post_ln}
step="$build/bench/cuda_step"
[[ -x "$step" ]] || { echo "launch_counts: $step not found (configure $build with -DSKIPGRAD_CUDA_EMULATOR=ON" \
  "-DSKIPGRAD_BENCH=ON and build cuda_step)" >&2; exit 1; }
shape_args=()
[[ -n "${SHAPE:-}" ]] && shape_args=(--shape "$SHAPE")
counts() {  # one run; prints "count kernel" lines and a "total launches gemms" line
  SKIPGRAD_CUDA_EMULATOR_SKIP_WORK=1 OMP_NUM_THREADS=1 "$step" --device cuda --precision "${PRECISION:-fp32}" --warmup "${WARMUP:-2}" \
    --rounds "$1" --steps 1 --no-ceiling --topologies "$topology" "${shape_args[@]}" 2>&1 |
    awk '/kernel launches,/ { print "total", $5, $8; next } /^ +[0-9]+  / { n = $1; $1 = ""; sub(/^ /, ""); print n, $0 }'
}
one=$(counts 1)
two=$(counts 2)
echo "# launches per $topology ${PRECISION:-fp32} step (emulator, skip-work mode: rounds 2 minus rounds 1)"
awk 'NR == FNR { a[substr($0, index($0, " ") + 1)] = $1; next }
     { k = substr($0, index($0, " ") + 1); d = $1 - a[k]; if (d) printf "%6d  %s\n", d, k }' \
  <(grep -v '^total' <<<"$one") <(grep -v '^total' <<<"$two") | sort -rn
read -r _ l1 g1 <<<"$(grep '^total' <<<"$one")"
read -r _ l2 g2 <<<"$(grep '^total' <<<"$two")"
echo "$((l2 - l1)) kernel launches, $((g2 - g1)) cuBLAS GEMMs per step"
