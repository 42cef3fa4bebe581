#!/usr/bin/env bash
# The main job: install what is missing, build, train the toy translation model and print its results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${SKIPGRAD_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)"
# Train Post-LN, Pre-LN and ResiDual on the German→English number-words corpus with the same seed and time budget,
# then print test BLEU, losses and sample translations (docs/translate.md). Extra arguments go to `compare`.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec "$build"/skipgrad-translate compare --corpus numbers --topologies post_ln,pre_ln,resi_dual \
  --minutes 2 --eval-every 0 --beam 1 --test-sentences 300 "$@"
