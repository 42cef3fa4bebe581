// CPU matrix products: every one goes through OpenBLAS (sgemm/dgemm), batched by looping over the batch.
#include <cblas.h>

#include "backends/cpu/cpu_backend.h"

namespace skipgrad {

void CpuBackend::gemm(const GemmArgs& g) {
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  if (g.m == 0 || g.n == 0) return;
  for (int64_t b = 0; b < g.batch; b++) {
    const int64_t oa = batch_offset(b, g.batch_inner, g.stride_a, g.stride_a_outer),
                  ob = batch_offset(b, g.batch_inner, g.stride_b, g.stride_b_outer),
                  oc = batch_offset(b, g.batch_inner, g.stride_c, g.stride_c_outer);
    if (g.dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, ta, tb, (int)g.m, (int)g.n, (int)g.k, (float)g.alpha,
                  static_cast<const float*>(g.a) + oa, (int)g.lda, static_cast<const float*>(g.b) + ob, (int)g.ldb,
                  (float)g.beta, static_cast<float*>(g.c) + oc, (int)g.ldc);
    } else if (g.dtype == DType::F64) {
      cblas_dgemm(CblasRowMajor, ta, tb, (int)g.m, (int)g.n, (int)g.k, g.alpha,
                  static_cast<const double*>(g.a) + oa, (int)g.lda, static_cast<const double*>(g.b) + ob, (int)g.ldb,
                  g.beta, static_cast<double*>(g.c) + oc, (int)g.ldc);
    } else {
      fail("gemm", ": expected float32 or float64, got ", dtype_name(g.dtype));
    }
  }
}

}  // namespace skipgrad
