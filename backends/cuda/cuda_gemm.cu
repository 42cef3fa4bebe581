// CUDA matrix products: every one is a cuBLAS strided-batched GEMM.
//
// cuBLAS is column-major. A row-major matrix with leading dimension ld is, read column-major, its transpose,
// so the row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: swap the operands
// (and m with n), keep the transpose flags. A batch stride of 0 reuses one matrix, which cuBLAS allows.
// float32 GEMMs use plain FP32 unless TF32 is switched on with CudaBackend::set_allow_tf32.
#include <climits>

#include "backends/cuda/cuda_common.cuh"

namespace skipgrad {

void CudaBackend::gemm(const GemmArgs& g) {
  const char* op = "gemm";
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch})
    check(v >= 0 && v <= INT_MAX, op, ": size ", v, " does not fit cuBLAS's int (m=", g.m, " n=", g.n, " k=", g.k,
          " batch=", g.batch, ")");
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = (int)g.m, n = (int)g.n, k = (int)g.k, batch = (int)g.batch;
  // cuBLAS checks ld >= max(1, rows) even when a dimension is 0.
  const int lda = (int)std::max<int64_t>(g.lda, 1), ldb = (int)std::max<int64_t>(g.ldb, 1),
            ldc = (int)std::max<int64_t>(g.ldc, 1);
  if (g.dtype == DType::F32) {
    const float alpha = (float)g.alpha, beta = (float)g.beta;
    SG_CUBLAS_CHECK(op, cublasSgemmStridedBatched(cublas_, tb, ta, n, m, k, &alpha, static_cast<const float*>(g.b),
                                                  ldb, g.stride_b, static_cast<const float*>(g.a), lda, g.stride_a,
                                                  &beta, static_cast<float*>(g.c), ldc, g.stride_c, batch));
  } else if (g.dtype == DType::F64) {
    const double alpha = g.alpha, beta = g.beta;
    SG_CUBLAS_CHECK(op, cublasDgemmStridedBatched(cublas_, tb, ta, n, m, k, &alpha, static_cast<const double*>(g.b),
                                                  ldb, g.stride_b, static_cast<const double*>(g.a), lda, g.stride_a,
                                                  &beta, static_cast<double*>(g.c), ldc, g.stride_c, batch));
  } else {
    fail(op, ": expected float32 or float64, got ", dtype_name(g.dtype));
  }
}

}  // namespace skipgrad
