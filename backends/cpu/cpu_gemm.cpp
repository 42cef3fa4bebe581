// CPU matrix products: every one goes through OpenBLAS (sgemm/dgemm), batched by looping over the batch.
#include <cblas.h>

#include <vector>

#include "backends/cpu/cpu_backend.h"

namespace skipgrad {

namespace {
// An r x c row-major block of bf16 with row stride ld, widened into a contiguous float buffer (and back).
void widen(const bf16* x, int64_t r, int64_t c, int64_t ld, std::vector<float>& out) {
  out.resize((size_t)(r * c));
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++) out[(size_t)(i * c + j)] = (float)x[i * ld + j];
}
void narrow(const std::vector<float>& x, int64_t r, int64_t c, bf16* out, int64_t ld) {
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++) out[i * ld + j] = bf16(x[(size_t)(i * c + j)]);
}

// bfloat16 operands and result, float32 arithmetic (what cuBLAS does with CUDA_R_16BF and CUBLAS_COMPUTE_32F): each
// batch entry's matrices are widened to float, multiplied by sgemm and the result rounded once into C (or, with
// c_float32, sgemm works on C itself).
void gemm_bf16(const GemmArgs& g) {
  std::vector<float> a, b, c;
  const int64_t ar = g.trans_a ? g.k : g.m, ac = g.trans_a ? g.m : g.k;
  const int64_t br = g.trans_b ? g.n : g.k, bc = g.trans_b ? g.k : g.n;
  for (int64_t i = 0; i < g.batch; i++) {
    const int64_t oa = batch_offset(i, g.batch_inner, g.stride_a, g.stride_a_outer),
                  ob = batch_offset(i, g.batch_inner, g.stride_b, g.stride_b_outer),
                  oc = batch_offset(i, g.batch_inner, g.stride_c, g.stride_c_outer);
    widen(static_cast<const bf16*>(g.a) + oa, ar, ac, g.lda, a);
    widen(static_cast<const bf16*>(g.b) + ob, br, bc, g.ldb, b);
    // C as sgemm sees it: float32 C itself, or bf16 C widened into c (its values only when beta reads them)
    float* cf = nullptr;
    int64_t ldc = g.ldc;
    bf16* cp = nullptr;
    if (g.c_float32) {
      cf = static_cast<float*>(g.c) + oc;
    } else {
      cp = static_cast<bf16*>(g.c) + oc;
      if (g.beta != 0) widen(cp, g.m, g.n, g.ldc, c);
      else c.assign((size_t)(g.m * g.n), 0.f);
      cf = c.data();
      ldc = g.n;
    }
    cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
                (int)g.m, (int)g.n, (int)g.k, (float)g.alpha, a.data(), (int)ac, b.data(), (int)bc, (float)g.beta,
                cf, (int)ldc);
    if (cp) narrow(c, g.m, g.n, cp, g.ldc);
  }
}
}  // namespace

void CpuBackend::gemm(const GemmArgs& g) {
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  check_gemm_dtypes("gemm", g);
  if (g.m == 0 || g.n == 0) return;
  check_gemm_sizes("gemm", g, "OpenBLAS");
  if (g.dtype == DType::BF16) return gemm_bf16(g);
  for (int64_t b = 0; b < g.batch; b++) {
    const int64_t oa = batch_offset(b, g.batch_inner, g.stride_a, g.stride_a_outer),
                  ob = batch_offset(b, g.batch_inner, g.stride_b, g.stride_b_outer),
                  oc = batch_offset(b, g.batch_inner, g.stride_c, g.stride_c_outer);
    if (g.dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, ta, tb, (int)g.m, (int)g.n, (int)g.k, (float)g.alpha,
                  static_cast<const float*>(g.a) + oa, (int)g.lda, static_cast<const float*>(g.b) + ob, (int)g.ldb,
                  (float)g.beta, static_cast<float*>(g.c) + oc, (int)g.ldc);
    } else {
      cblas_dgemm(CblasRowMajor, ta, tb, (int)g.m, (int)g.n, (int)g.k, g.alpha,
                  static_cast<const double*>(g.a) + oa, (int)g.lda, static_cast<const double*>(g.b) + ob, (int)g.ldb,
                  g.beta, static_cast<double*>(g.c) + oc, (int)g.ldc);
    }
  }
}

}  // namespace skipgrad
