#!/usr/bin/env bash
# CTest `consumer_find_package`: install the skipgrad just built into a temporary prefix, build tests/consumer (a
# project outside the tree, find_package(skipgrad)) against it, and run it.
#   consumer_test.sh <skipgrad build folder> <scratch folder>
set -euo pipefail
build=$1 scratch=$2
src=$(cd "$(dirname "$0")/../consumer" && pwd)
rm -rf "$scratch" && mkdir -p "$scratch"
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
# only the package, never the source tree: the consumer must find every header under the prefix
cmake -S "$src" -B "$scratch/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/build" >/dev/null
"$scratch/build/consumer"
