#!/usr/bin/env bash
# Installs the Debian packages skipgrad needs, only those that are missing; does nothing when all are there.
# Usage: scripts/setup.sh            (build + test dependencies)
#        SKIPGRAD_SETUP_EXTRA="pkg ..." scripts/setup.sh   (more packages)
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  python3 xz-utils         # benchmark tables, the GPU pack (scripts/bench_cuda.sh, gpu_pack.sh) and their test
  libopenblas-dev          # BLAS for every CPU matrix product
  libopenblas0-openmp      # its OpenMP build, linked by GCC builds: one thread pool with our loops (CMakeLists.txt)
  doctest-dev              # tests
  libbenchmark-dev         # bench/
  nlohmann-json3-dev       # graph JSON, checkpoint headers
  libcli11-dev             # command-line tools
  graphviz                 # rendering graph dumps (optional at run time)
  trans-de-en              # the Ding German-English dictionary: the translation corpus
  libicu-dev               # number spell-out for the smoke corpus
  gnuplot-nox              # loss-curve plots of `skipgrad-translate sweep` (optional at run time)
  libsentencepiece-dev sentencepiece   # subword vocabularies
  clang libclang-rt-dev libomp-dev     # the sanitized test build and the libFuzzer targets (scripts/sanitize.sh)
)
# shellcheck disable=SC2206
packages+=(${SKIPGRAD_SETUP_EXTRA:-})

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  echo "setup: done"
fi

# Independent references used only by tests (never by the library): PyPI's safetensors reads our checkpoints.
if command -v python3 >/dev/null && ! python3 -c "import safetensors, numpy" 2>/dev/null; then
  python3 -m pip install -q safetensors numpy 2>/dev/null || echo "setup: pip could not install safetensors (its test will skip)"
fi
