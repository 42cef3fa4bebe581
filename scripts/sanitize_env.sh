# Sourced by scripts/sanitize.sh and scripts/fuzz.sh: installs clang when missing (scripts/setup.sh lists it), configures the one sanitized
# clang build folder ($SKIPGRAD_ASAN_BUILD_DIR, default build-asan) and exports the sanitizer options.
# -O1 -g: fast enough to run the suite and to fuzz, still with usable stack traces.
SKIPGRAD_ASAN_BUILD_DIR=${SKIPGRAD_ASAN_BUILD_DIR:-build-asan}
scripts/setup.sh
CC=clang CXX=clang++ cmake -S . -B "$SKIPGRAD_ASAN_BUILD_DIR" -DSKIPGRAD_FUZZ=ON -DSKIPGRAD_TESTS=ON \
  -DSKIPGRAD_EXAMPLES=ON -DSKIPGRAD_BENCH=ON -DSKIPGRAD_BENCH_LIBTORCH=OFF -DSKIPGRAD_CUDA=OFF \
  -DSKIPGRAD_CUDA_EMULATOR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" >/dev/null

# halt_on_error: the first report ends the process with a failure (UBSan is built with -fno-sanitize-recover).
# detect_leaks: LeakSanitizer at exit. No suppressions are needed: OpenBLAS, OpenMP, ICU and SentencePiece
# report nothing.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# OpenBLAS's own threads on top of OpenMP's only add noise (and time) here; no spinning OpenMP threads.
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
