// CPU thread count: one setting honoured by both of the CPU backend's thread pools, OpenMP (our kernels) and
// OpenBLAS (matrix products). Without a call, each uses its own default (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS,
// else the number of cores). OpenBLAS's count is the process's; OpenMP keeps its count per thread, so it applies to
// the calling thread (and the threads it starts later are back at OpenMP's default: call it in each).
//
// Our own kernels give bitwise the same results at any thread count (each output element is computed by one
// thread, in a fixed order). OpenBLAS's matrix products do not: on Debian's OpenBLAS 0.3.21 a [1024,256]@[256,1024]
// sgemm differs in the last bits between 1 and 2 threads. So a training run is bitwise reproducible for a fixed
// thread count (docs/reliability.md, "Reproducibility"; tests/test_reliability.cpp).
#pragma once

namespace skipgrad {

void set_num_threads(int n);  // n >= 1
int get_num_threads();        // OpenMP's current maximum

// Call first thing in main: OpenMP worker threads that spin while OpenBLAS's own threads want the same cores cost
// 2-8x per training step on a 2-core machine (docs/performance.md). libgomp reads OMP_WAIT_POLICY only when it is
// loaded, so when the variable is unset this sets it to "passive" and re-executes the program once with the same
// argv (set OMP_WAIT_POLICY yourself to keep another policy). Returns only when nothing was re-executed.
void ensure_passive_omp(char** argv);

}  // namespace skipgrad
