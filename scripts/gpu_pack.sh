#!/usr/bin/env bash
# Here, on the build machine (nvcc, no GPU): builds what a GPU session runs, for sm_90, and packs it into .gpu/
# (git-ignored) for the device tool to carry. The GPU machine has CUDA 13, its driver and PyTorch but no apt, so
# .gpu/ holds the stripped binaries and, as one .tar.xz, every shared library they load that is neither glibc's nor
# CUDA's (OpenBLAS, libgomp, libstdc++, ICU, SentencePiece, fmt, ...): about 20 MiB, under the carry limit of 64.
# scripts/gpu_run.sh unpacks and runs it there (docs/cuda.md, "On a lent GPU").
#
#   scripts/gpu_pack.sh            build folder build-gpu (SKIPGRAD_GPU_BUILD_DIR to change), then .gpu/
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SKIPGRAD_GPU_BUILD_DIR:-build-gpu}
# x86-64-v3 (AVX2, FMA) rather than -march=native: the binaries run on the GPU machine's processor, not this one.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSKIPGRAD_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DSKIPGRAD_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3 -DSKIPGRAD_BENCH_LIBTORCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target skipgrad_tests skipgrad-translate skipgrad-graph cuda_step mlp_demo \
  index_bench skipgrad-lm

bins=("$build/skipgrad_tests" "$build/skipgrad-translate" "$build/skipgrad-graph" "$build/bench/cuda_step"
      "$build/examples/mlp_demo" "$build/bench/index_bench" "$build/skipgrad-lm")
rm -rf .gpu
mkdir -p .gpu/bin .gpu/lib
cp "${bins[@]}" .gpu/bin/
strip .gpu/bin/*
# The libraries the GPU machine lacks: all that ldd resolves, but the C library family (that machine's glibc is
# newer than Debian 12's 2.36, so ours runs there) and CUDA's runtime, cuBLAS and driver (taken from that machine).
ldd "${bins[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux-x86-64|libcuda|libcudart|libcublas|libcublasLt|libnvidia-[a-z-]+)\.so' |
  while read -r lib; do cp -L "$lib" .gpu/lib/; done
tar -C .gpu -cJf .gpu/lib.tar.xz lib
rm -rf .gpu/lib
# The tests find their data under the absolute source folder and run the translate binary by its build path, both
# compiled in; gpu_run.sh recreates those paths there.
echo "$PWD" >.gpu/source_dir
echo "$build" >.gpu/build_dir
git describe --always --dirty >.gpu/commit 2>/dev/null || echo unknown >.gpu/commit  # gpu_run.sh compares it
ls -l .gpu .gpu/bin
du -sh .gpu
echo "gpu_pack.sh: done; carry .gpu with the device tool and run scripts/gpu_run.sh there"
