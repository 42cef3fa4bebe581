// CUDA matrix products: a cuBLAS strided-batched GEMM each (batched over pointer arrays when two batch dims do not
// collapse to one stride: attention's heads inside projections), except a linear layer's, which go through
// cuBLASLt with the bias work in the GEMM's epilogue where cuBLASLt has a kernel for it.
//
// cuBLAS is column-major. A row-major matrix with leading dimension ld is, read column-major, its transpose,
// so the row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T: swap the operands
// (and m with n), keep the transpose flags. A batch stride of 0 reuses one matrix, which cuBLAS allows.
// float32 GEMMs go through the ...Ex entry points with the compute type of set_float32_matmul_precision (FP32
// unless TF32 or BF16 tensor cores are asked for), bfloat16 ones too (CUDA_R_16BF, CUBLAS_COMPUTE_32F); float64 ones
// through cublasDgemm{StridedBatched,Batched}.
#include <array>
#include <climits>
#include <memory>

#include "backends/cuda/cuda_common.cuh"

namespace skipgrad {

namespace {
// Two batch dims (GemmArgs::batch_inner) that collapse to one stride per operand: true, with the strides.
bool one_batch_stride(const GemmArgs& g, int64_t& sa, int64_t& sb, int64_t& sc) {
  sa = g.stride_a, sb = g.stride_b, sc = g.stride_c;
  const int64_t inner = g.batch_inner;
  if (inner <= 0 || g.batch <= inner) return true;  // one batch dim, or one outer entry
  if (inner == 1) {
    sa = g.stride_a_outer, sb = g.stride_b_outer, sc = g.stride_c_outer;
    return true;
  }
  return g.stride_a_outer == inner * g.stride_a && g.stride_b_outer == inner * g.stride_b &&
         g.stride_c_outer == inner * g.stride_c;
}

cublasComputeType_t f32_compute(MatmulPrecision p) {
  switch (p) {
    case MatmulPrecision::TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case MatmulPrecision::FP32: break;
  }
  return CUBLAS_COMPUTE_32F;
}

// The largest power of two, at most 256, that divides the address.
int64_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int64_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// Whether every entry of a batched GEMM over pointer arrays starts 16-byte aligned: cuBLAS cannot look inside
// the arrays, and in a tensor-core mode its kernels may fault on entries that are not (cublasGemmBatchedEx's
// documentation asks for 16 bytes). Attention's heads are entries at multiples of the head size.
bool batch_entries_aligned_16(const GemmArgs& g) {
  const int64_t elem = (int64_t)dtype_size(g.dtype), c_elem = (int64_t)dtype_size(g.c_dtype());
  for (const void* p : {g.a, g.b, static_cast<const void*>(g.c)})
    if (alignment_of(p) < 16) return false;
  for (int64_t stride : {g.stride_a, g.stride_a_outer, g.stride_b, g.stride_b_outer})
    if (stride * elem % 16 != 0) return false;
  return g.stride_c * c_elem % 16 == 0 && g.stride_c_outer * c_elem % 16 == 0;
}

struct BatchLayout {
  int64_t batch, inner, sa, sa_outer, sb, sb_outer, sc, sc_outer, elem_bytes, c_elem_bytes;
};

// The pointer arrays of a batched GEMM whose entries are not one stride apart: ptrs[i], ptrs[batch + i] and
// ptrs[2 batch + i] are entry i of A, B and C.
__global__ void batch_pointers_kernel(const char* a, const char* b, char* c, BatchLayout l, uint64_t* ptrs) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < l.batch; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t outer = i / l.inner, inner = i % l.inner;  // as batch_offset (backends/backend.h)
    ptrs[i] = reinterpret_cast<uint64_t>(a + (outer * l.sa_outer + inner * l.sa) * l.elem_bytes);
    ptrs[l.batch + i] = reinterpret_cast<uint64_t>(b + (outer * l.sb_outer + inner * l.sb) * l.elem_bytes);
    ptrs[2 * l.batch + i] = reinterpret_cast<uint64_t>(c + (outer * l.sc_outer + inner * l.sc) * l.c_elem_bytes);
  }
}

}  // namespace

// The pointer arrays of a GEMM with two batch dims that are not one stride apart, on the device: [A entries,
// B entries, C entries]; written by a kernel unless an earlier GEMM with the same operands and layout left them.
uint64_t* CudaBackend::pointer_arrays(const GemmArgs& g, Tensor& scratch) {
  const BatchLayout l{g.batch, g.batch_inner, g.stride_a, g.stride_a_outer, g.stride_b, g.stride_b_outer,
                      g.stride_c, g.stride_c_outer, (int64_t)dtype_size(g.dtype), (int64_t)dtype_size(g.c_dtype())};
  const size_t bytes = (size_t)(3 * g.batch) * sizeof(uint64_t);
  uint64_t* p = nullptr;
  if (bytes > kPointerArenaBytes) {
    scratch = Tensor::empty({3 * g.batch}, DType::I64, Device::cuda());
    p = static_cast<uint64_t*>(scratch.data_ptr());
  } else {
    const PointerArraysKey key{(int64_t)(uintptr_t)g.a, (int64_t)(uintptr_t)g.b, (int64_t)(uintptr_t)g.c,
                               l.batch, l.inner, l.sa, l.sa_outer, l.sb, l.sb_outer, l.sc, l.sc_outer,
                               l.elem_bytes, l.c_elem_bytes};
    auto it = pointer_arrays_.find(key);
    if (it != pointer_arrays_.end()) {
      pointer_array_reuses_++;
      return reinterpret_cast<uint64_t*>(pointer_arena_ + it->second);
    }
    const size_t need = (bytes + 255) / 256 * 256;
    if (pointer_arena_used_ + need > kPointerArenaBytes) {
      pointer_arrays_.clear();
      pointer_arena_used_ = 0;
    }
    p = reinterpret_cast<uint64_t*>(pointer_arena_ + pointer_arena_used_);
    pointer_arrays_.emplace(key, pointer_arena_used_);
    pointer_arena_used_ += need;
  }
  batch_pointers_kernel<<<cuda::grid_for(g.batch), cuda::kThreads, 0, stream_>>>(
      static_cast<const char*>(g.a), static_cast<const char*>(g.b), static_cast<char*>(g.c), l, p);
  SG_CUDA_LAUNCH_CHECK("gemm");
  pointer_array_writes_++;
  return p;
}

void CudaBackend::gemm(const GemmArgs& g) {
  const char* op = "gemm";
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  check_gemm_sizes(op, g, "cuBLAS");
  check_gemm_dtypes(op, g);
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = (int)g.m, n = (int)g.n, k = (int)g.k, batch = (int)g.batch;
  // cuBLAS checks ld >= max(1, rows) even when a dimension is 0.
  const int lda = (int)std::max<int64_t>(g.lda, 1), ldb = (int)std::max<int64_t>(g.ldb, 1),
            ldc = (int)std::max<int64_t>(g.ldc, 1);
  int64_t stride_a, stride_b, stride_c;
  const bool strided = one_batch_stride(g, stride_a, stride_b, stride_c);
  // Two batch dims that are not one stride apart: cuBLAS's batched GEMM over pointer arrays; A', B', C' below are
  // the arrays of cuBLAS's operands (its A is our B, as above). Their entries must be 16-byte aligned on tensor
  // cores (batch_entries_aligned_16): float32 ones that are not run in CUBLAS_COMPUTE_32F, bfloat16 ones, which have
  // no compute type without tensor cores, as one GEMM each.
  const bool aligned = strided || batch_entries_aligned_16(g);
  if (g.dtype != DType::F64) {  // float32 (in the precision set), or bfloat16 in (and out) with float32 accumulation
    const bool bf = g.dtype == DType::BF16;
    const cudaDataType_t type = bf ? CUDA_R_16BF : CUDA_R_32F, c_type = g.c_float32 ? CUDA_R_32F : type;
    const float alpha = (float)g.alpha, beta = (float)g.beta;
    const cublasComputeType_t compute =
        bf || !aligned ? CUBLAS_COMPUTE_32F : f32_compute(float32_matmul_precision());
    if (strided) {
      SG_CUBLAS_CHECK(op, cublasGemmStridedBatchedEx(cublas_, tb, ta, n, m, k, &alpha, g.b, type, ldb, stride_b, g.a,
                                                     type, lda, stride_a, &beta, g.c, c_type, ldc, stride_c, batch,
                                                     compute, CUBLAS_GEMM_DEFAULT));
    } else if (aligned || !bf) {
      Tensor scratch;  // only for pointer arrays too big for the arena
      uint64_t* p = pointer_arrays(g, scratch);
      SG_CUBLAS_CHECK(op, cublasGemmBatchedEx(cublas_, tb, ta, n, m, k, &alpha,
                                              reinterpret_cast<const void**>(p + batch), type, ldb,
                                              reinterpret_cast<const void**>(p), type, lda, &beta,
                                              reinterpret_cast<void**>(p + 2 * batch), c_type, ldc, batch, compute,
                                              CUBLAS_GEMM_DEFAULT));
    } else {
      const int64_t elem = (int64_t)dtype_size(g.dtype), c_elem = (int64_t)dtype_size(g.c_dtype());
      auto bytes = [&](int64_t i, int64_t stride, int64_t stride_outer, int64_t e) {  // where entry i starts
        return batch_offset(i, g.batch_inner, stride, stride_outer) * e;
      };
      for (int64_t i = 0; i < g.batch; i++) {
        const char* a = static_cast<const char*>(g.a) + bytes(i, g.stride_a, g.stride_a_outer, elem);
        const char* b = static_cast<const char*>(g.b) + bytes(i, g.stride_b, g.stride_b_outer, elem);
        char* c = static_cast<char*>(g.c) + bytes(i, g.stride_c, g.stride_c_outer, c_elem);
        SG_CUBLAS_CHECK(op, cublasGemmEx(cublas_, tb, ta, n, m, k, &alpha, b, type, ldb, a, type, lda, &beta, c,
                                         c_type, ldc, compute, CUBLAS_GEMM_DEFAULT));
      }
    }
  } else {
    const double alpha = g.alpha, beta = g.beta;
    Tensor scratch;
    uint64_t* p = strided ? nullptr : pointer_arrays(g, scratch);
    if (strided)
      SG_CUBLAS_CHECK(op, cublasDgemmStridedBatched(cublas_, tb, ta, n, m, k, &alpha, static_cast<const double*>(g.b),
                                                    ldb, stride_b, static_cast<const double*>(g.a), lda, stride_a,
                                                    &beta, static_cast<double*>(g.c), ldc, stride_c, batch));
    else
      SG_CUBLAS_CHECK(op, cublasDgemmBatched(cublas_, tb, ta, n, m, k, &alpha,
                                             reinterpret_cast<const double**>(p + batch), ldb,
                                             reinterpret_cast<const double**>(p), lda, &beta,
                                             reinterpret_cast<double**>(p + 2 * batch), ldc, batch));
  }
}

// ---- cuBLASLt: GEMMs with a bias epilogue ----
// In cuBLAS's column-major terms (as above) a row-major C = op(A) op(B) is D' (n x m) = op(A') op(B') with
// A' = our B and B' = our A, so
//   forward  C = op(A) op(B) + bias[col]: CUBLASLT_EPILOGUE_BIAS adds a vector over D''s rows, i.e. our columns;
//   backward bias_grad[i] = sum_k op(A)[i, k]: CUBLASLT_EPILOGUE_BGRADB sums op(B') = op(A)^T over k into a
//            vector over D''s columns, i.e. our rows.
// The cuBLASLt heuristic picks its kernel for the operands' alignment (256 bytes unless told less), so the
// alignments are part of a plan's key and go into the preference.

namespace {
void check_lt(cublasStatus_t st, const char* call, const GemmArgs& g) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail("gemm", ": cuBLASLt error ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") in ", call,
         " (m=", g.m, " n=", g.n, " k=", g.k, " lda=", g.lda, " ldb=", g.ldb, " ldc=", g.ldc, ")");
}
}  // namespace

struct CudaBackend::LtPlan {
  // What the heuristic's answer depends on: epilogue, precision, transposes, sizes, leading dims, alignments of
  // A, B, C and the bias.
  using Key = std::array<int64_t, 14>;
  Key key{};
  bool usable = false;  // false: cuBLASLt declined the configuration
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // cuBLASLt's A, B, and C = D
  cublasLtMatmulAlgo_t algo{};

  static Key key_of(const GemmArgs& g, cublasLtEpilogue_t epilogue, MatmulPrecision p, const void* bias) {
    return {(int64_t)epilogue, ((int64_t)p * 16 + (int64_t)g.dtype) * 2 + g.c_float32, g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb,
            g.ldc, alignment_of(g.a), alignment_of(g.b), alignment_of(g.c), alignment_of(bias)};
  }
};

CudaBackend::LtPlan* CudaBackend::make_lt_plan(const GemmArgs& g, cublasLtEpilogue_t epilogue, void* bias) {
  const char* op = "gemm";
  auto plan = std::make_unique<LtPlan>();
  plan->key = LtPlan::key_of(g, epilogue, float32_matmul_precision(), bias);
  // bfloat16 operands, bias and result compute in float32 on tensor cores (scales stay float32); with c_float32 the
  // result and the bias (gradient) are float32 (cuBLASLt's bias has D's type unless told otherwise).
  const bool bf = g.dtype == DType::BF16;
  const cudaDataType_t type = bf ? CUDA_R_16BF : CUDA_R_32F, d_type = g.c_float32 ? CUDA_R_32F : type;
  const cublasComputeType_t compute = bf ? CUBLAS_COMPUTE_32F : f32_compute(float32_matmul_precision());
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F));
  const int32_t ta = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const uint32_t epi = epilogue;
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                     sizeof(bias)));
  // A' = our B: op(A') is n x k; B' = our A: op(B') is k x m; D' is n x m.
  const uint64_t m = g.m, n = g.n, k = g.k;
  SG_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&plan->a, type, g.trans_b ? k : n, g.trans_b ? n : k, g.ldb));
  SG_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&plan->b, type, g.trans_a ? m : k, g.trans_a ? k : m, g.lda));
  SG_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&plan->d, d_type, n, m, g.ldc));
  cublasLtMatmulPreference_t pref = nullptr;
  SG_CUBLAS_CHECK(op, cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = kLtWorkspaceBytes;
  const uint32_t align_a = (uint32_t)alignment_of(g.b), align_b = (uint32_t)alignment_of(g.a),
                 align_d = (uint32_t)alignment_of(g.c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                           sizeof(workspace));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, 4);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, 4);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, 4);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, 4);
  // A bf16 result: split-K partial sums in float32 only (not in D's type, nor in place in D), as cuBLAS's math
  // mode says for its own GEMMs (cuda_device.cu)
  const uint32_t reduction = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  if (st == CUBLAS_STATUS_SUCCESS && d_type == CUDA_R_16BF)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction,
                                              sizeof(reduction));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(cublaslt_, plan->desc, plan->a, plan->b, plan->d, plan->d, pref, 1, &result,
                                        &found);
  cublasLtMatmulPreferenceDestroy(pref);
  // No kernel for this configuration (NOT_SUPPORTED, or INVALID_VALUE for an epilogue, type and transpose
  // combination this cuBLASLt lacks) is an answer: the caller falls back to cuBLAS and its own bias kernels.
  plan->usable = st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS &&
                 result.workspaceSize <= kLtWorkspaceBytes;
  plan->algo = result.algo;
  lt_plans_.push_back(plan.release());
  return lt_plans_.back();
}

void CudaBackend::destroy_lt_plans() {
  for (LtPlan* p : lt_plans_) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    for (cublasLtMatrixLayout_t l : {p->a, p->b, p->d})
      if (l) cublasLtMatrixLayoutDestroy(l);
    delete p;
  }
  lt_plans_.clear();
}

bool CudaBackend::gemm_lt(const GemmArgs& g, cublasLtEpilogue_t epilogue, void* bias) {
  const char* op = "gemm";
  if ((g.dtype != DType::F32 && g.dtype != DType::BF16) || g.batch != 1 || g.beta != 0 || g.m == 0 || g.n == 0 ||
      g.k == 0)
    return false;
  for (int64_t v : {g.lda, g.ldb, g.ldc})
    if (v > INT_MAX) return false;
  // Sizes past 65535 * 32 per dim stay with cuBLAS: older cuBLASLt bias epilogues failed at run time on such shapes
  // (EXECUTION_FAILED, which is no "not supported" to fall back on), and PyTorch keeps the same bound
  for (int64_t v : {g.m, g.n, g.k})
    if (v > kLtMaxDim) return false;
  // cuBLASLt takes alignment promises for A, B, C and D but none for the bias vector, and its kernels may read it
  // in 16-byte vectors: a bias at an odd offset (a view) runs unfused. Parameters from the allocator are aligned.
  if (alignment_of(bias) < 16) return false;
  const LtPlan::Key key = LtPlan::key_of(g, epilogue, float32_matmul_precision(), bias);
  LtPlan* plan = nullptr;
  for (LtPlan* p : lt_plans_)
    if (p->key == key) {
      plan = p;
      break;
    }
  if (!plan) plan = make_lt_plan(g, epilogue, bias);
  if (!plan->usable) return false;
  SG_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                     sizeof(bias)));
  const float alpha = (float)g.alpha, beta = 0.f;
  const cublasStatus_t st = cublasLtMatmul(cublaslt_, plan->desc, &alpha, g.b, plan->a, g.a, plan->b, &beta, g.c,
                                           plan->d, g.c, plan->d, &plan->algo, lt_workspace_, kLtWorkspaceBytes,
                                           stream_);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {  // declined at run time after all: nothing was queued
    plan->usable = false;
    return false;
  }
  check_lt(st, "cublasLtMatmul", g);
  return true;
}

// cuBLASLt's bias (gradient) has C's dtype; another one runs unfused (Backend's defaults convert).
void CudaBackend::gemm_bias(const GemmArgs& g, const Tensor& bias, Tensor& c) {
  if (bias.dtype() == g.c_dtype() && gemm_lt(g, CUBLASLT_EPILOGUE_BIAS, bias.data_ptr())) {
    fused_bias_gemms_++;
    return;
  }
  if (g.dtype != DType::F64) unfused_bias_gemms_++;  // float64 never goes to cuBLASLt
  Backend::gemm_bias(g, bias, c);
}

void CudaBackend::gemm_bias_grad(const GemmArgs& g, const Tensor& a, Tensor& bias_grad) {
  if (bias_grad.dtype() == g.c_dtype() && gemm_lt(g, CUBLASLT_EPILOGUE_BGRADB, bias_grad.data_ptr())) {
    fused_bias_gemms_++;
    return;
  }
  if (g.dtype != DType::F64) unfused_bias_gemms_++;  // float64 never goes to cuBLASLt
  Backend::gemm_bias_grad(g, a, bias_grad);
}

}  // namespace skipgrad
