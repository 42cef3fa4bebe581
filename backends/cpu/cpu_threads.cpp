#include "backends/threads.h"

#include <cblas.h>
#include <omp.h>

#include "tensor/error.h"

namespace skipgrad {

void set_num_threads(int n) {
  check(n >= 1, "set_num_threads", ": need at least 1 thread, got ", n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

}  // namespace skipgrad
