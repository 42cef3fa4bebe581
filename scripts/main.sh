#!/usr/bin/env bash
# The main job: install what is missing, build, run the headline example and print its results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${SKIPGRAD_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)"
exec "$build"/examples/mlp_demo "$@"
