#include "backends/threads.h"

#include <cblas.h>
#include <unistd.h>
#include <omp.h>

#include <cstdlib>

#include "tensor/error.h"

namespace skipgrad {

void ensure_passive_omp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

void set_num_threads(int n) {
  check(n >= 1, "set_num_threads", ": need at least 1 thread, got ", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace skipgrad
