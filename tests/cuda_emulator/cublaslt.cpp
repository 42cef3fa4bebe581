// The CUDA emulator's cuBLASLt (cublasLt.h): descriptors are plain structs; a matmul is the emulator's
// cublasGemmStridedBatchedEx in the descriptor's compute type (OpenBLAS, operands rounded to TF32 or bfloat16 under
// the FAST_ compute types) followed by the epilogue on the host.
// cublasLtMatmulAlgoGetHeuristic returns one "algorithm" that remembers what it was chosen for (alignments,
// epilogue, workspace), and cublasLtMatmul refuses a call that breaks those promises, as a GPU kernel would
// fault or misbehave. SKIPGRAD_CUDA_EMULATOR_LT_DECLINE=1 makes the heuristic find no algorithm
// (CUBLAS_STATUS_NOT_SUPPORTED), as cuBLASLt does for configurations it has no kernel for, so callers' fallbacks
// run too.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cublasLt.h"
#include "tensor/bfloat16.h"

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  void* bias = nullptr;
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {
  uint64_t max_workspace = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace {

constexpr uint64_t kAlgoMagic = 0x5347454d554c4154ull;
// The algorithm's words: what the heuristic chose it for.
enum AlgoWord { kMagic, kAlignA, kAlignB, kAlignC, kAlignD, kAlignBias, kEpilogue, kWorkspace };
constexpr size_t kHeuristicWorkspace = 4096;  // what every emulated algorithm asks for, to exercise the workspace

cublasStatus_t refuse(cublasStatus_t st, const char* what) {
  std::fprintf(stderr, "CUDA emulator: cuBLASLt: %s\n", what);
  return st;
}

uint64_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint64_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

template <class T>
bool read_attr(const void* buf, size_t size, T& out) {
  if (size != sizeof(T) || buf == nullptr) return false;
  std::memcpy(&out, buf, sizeof(T));
  return true;
}

// op(X)'s rows and columns.
uint64_t op_rows(const cublasLtMatrixLayoutOpaque_t* l, cublasOperation_t t) { return t == CUBLAS_OP_N ? l->rows : l->cols; }
uint64_t op_cols(const cublasLtMatrixLayoutOpaque_t* l, cublasOperation_t t) { return t == CUBLAS_OP_N ? l->cols : l->rows; }
size_t element_bytes(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }
// Bytes a column-major layout spans.
size_t span_bytes(const cublasLtMatrixLayoutOpaque_t* l) {
  return l->rows == 0 || l->cols == 0 ? 0 : (size_t)(l->ld * (l->cols - 1) + l->rows) * element_bytes(l->type);
}

// cuBLASLt's consistency checks for D = op(A) op(B) (+ C): float32 operands in a float32 compute type, or bfloat16
// A and B with bfloat16 or float32 C and D in CUBLAS_COMPUTE_32F (what the emulator implements).
cublasStatus_t check_problem(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                             cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d) {
  if (!desc || !a || !b || !c || !d) return refuse(CUBLAS_STATUS_INVALID_VALUE, "a null descriptor");
  const cudaDataType_t t = a->type;
  const bool f32 = t == CUDA_R_32F && (desc->compute == CUBLAS_COMPUTE_32F ||
                                       desc->compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                                       desc->compute == CUBLAS_COMPUTE_32F_FAST_16BF);
  const bool bf16 = t == CUDA_R_16BF && desc->compute == CUBLAS_COMPUTE_32F;
  const cudaDataType_t out = bf16 && d->type == CUDA_R_32F ? CUDA_R_32F : t;
  if (desc->scale != CUDA_R_32F || b->type != t || c->type != out || d->type != out || !(f32 || bf16))
    return CUBLAS_STATUS_NOT_SUPPORTED;  // the emulator has these two only; the caller falls back
  const uint64_t m = op_rows(a, desc->trans_a), k = op_cols(a, desc->trans_a), n = op_cols(b, desc->trans_b);
  if (op_rows(b, desc->trans_b) != k || c->rows != m || c->cols != n || d->rows != m || d->cols != n ||
      c->ld != d->ld)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "layouts do not agree with the transposes (A, B, C, D)");
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || a->ld > INT32_MAX || b->ld > INT32_MAX || d->ld > INT32_MAX)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  return CUBLAS_STATUS_SUCCESS;
}

// bfloat16 operands: D = alpha op(A) op(B) + beta C (+ bias over D's rows), or the bias gradient (the sums of op(B)'s
// columns) beside it, accumulated in double and rounded once to D's type OT (bfloat16 or float32; C and the bias
// have it too): plain loops (the emulator's shapes are small).
template <class OT>
void bf16_matmul(cublasLtMatmulDesc_t desc, float alpha, const void* a, const cublasLtMatrixLayoutOpaque_t* al,
                 const void* b, const cublasLtMatrixLayoutOpaque_t* bl, float beta, const void* c, void* d,
                 const cublasLtMatrixLayoutOpaque_t* dl) {
  using skipgrad::bf16;
  const auto *A = static_cast<const bf16*>(a), *B = static_cast<const bf16*>(b);
  const auto* C = static_cast<const OT*>(c);
  auto* D = static_cast<OT*>(d);
  auto* bias = static_cast<OT*>(desc->bias);
  const uint64_t m = dl->rows, n = dl->cols, k = op_cols(al, desc->trans_a);
  auto op_a = [&](uint64_t i, uint64_t kk) {
    return (double)(desc->trans_a == CUBLAS_OP_N ? A[i + kk * al->ld] : A[kk + i * al->ld]);
  };
  auto op_b = [&](uint64_t kk, uint64_t j) {
    return (double)(desc->trans_b == CUBLAS_OP_N ? B[kk + j * bl->ld] : B[j + kk * bl->ld]);
  };
  if (desc->epilogue == CUBLASLT_EPILOGUE_BGRADB)  // read B before D is written
    for (uint64_t j = 0; j < n; j++) {
      double s = 0;
      for (uint64_t kk = 0; kk < k; kk++) s += op_b(kk, j);
      bias[j] = OT((float)s);
    }
  std::vector<float> out(m * n);
  for (uint64_t j = 0; j < n; j++)
    for (uint64_t i = 0; i < m; i++) {
      double s = 0;
      for (uint64_t kk = 0; kk < k; kk++) s += op_a(i, kk) * op_b(kk, j);
      double v = alpha * s + (beta != 0 ? beta * (double)C[i + j * dl->ld] : 0.0);
      if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) v += (double)bias[i];
      out[i + j * m] = (float)v;
    }
  for (uint64_t j = 0; j < n; j++)
    for (uint64_t i = 0; i < m; i++) D[i + j * dl->ld] = OT(out[i + j * m]);
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  *desc = new cublasLtMatmulDescOpaque_t{compute, scale};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  int32_t i32 = 0;
  uint32_t u32 = 0;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (!read_attr(buf, size, i32) || (i32 != CUBLAS_OP_N && i32 != CUBLAS_OP_T))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "a transpose attribute of the wrong size or value");
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->trans_a : desc->trans_b) = (cublasOperation_t)i32;
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if (!read_attr(buf, size, u32) || (u32 != CUBLASLT_EPILOGUE_DEFAULT && u32 != CUBLASLT_EPILOGUE_BIAS &&
                                         u32 != CUBLASLT_EPILOGUE_BGRADB))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "an epilogue attribute of the wrong size or unknown");
      desc->epilogue = (cublasLtEpilogue_t)u32;
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (!read_attr(buf, size, desc->bias))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "a bias pointer attribute of the wrong size");
      return CUBLAS_STATUS_SUCCESS;
  }
  return refuse(CUBLAS_STATUS_INVALID_VALUE, "an unknown matmul descriptor attribute");
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (ld < (int64_t)std::max<uint64_t>(rows, 1))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "a layout whose leading dimension is below its rows");
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
    if (!read_attr(buf, size, pref->max_workspace))
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "a workspace attribute of the wrong size");
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr == CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK) {  // the emulator never splits k: checked, then unused
    uint32_t v = 0;
    if (!read_attr(buf, size, v) || (v & ~uint32_t(CUBLASLT_REDUCTION_SCHEME_MASK)) != 0)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "a reduction scheme mask of the wrong size or with unknown bits");
    return CUBLAS_STATUS_SUCCESS;
  }
  if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
    uint32_t v = 0;
    if (!read_attr(buf, size, v) || v == 0 || (v & (v - 1)) != 0)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "an alignment attribute of the wrong size or not a power of 2");
    pref->min_alignment[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = v;
    return CUBLAS_STATUS_SUCCESS;
  }
  return refuse(CUBLAS_STATUS_INVALID_VALUE, "an unknown preference attribute");
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!pref || requested <= 0 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  if (cublasStatus_t st = check_problem(desc, a, b, c, d); st != CUBLAS_STATUS_SUCCESS) return st;
  if (const char* e = std::getenv("SKIPGRAD_CUDA_EMULATOR_LT_DECLINE"); e && std::strcmp(e, "1") == 0)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  cublasLtMatmulHeuristicResult_t& r = results[0];
  std::memset(&r, 0, sizeof(r));
  r.algo.data[kMagic] = kAlgoMagic;
  for (int i = 0; i < 4; i++) r.algo.data[kAlignA + i] = pref->min_alignment[i];
  r.algo.data[kAlignBias] = desc->bias ? alignment(desc->bias) : 256;
  r.algo.data[kEpilogue] = desc->epilogue;
  r.algo.data[kWorkspace] = r.workspaceSize = std::min<uint64_t>(pref->max_workspace, kHeuristicWorkspace);
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* a,
                              cublasLtMatrixLayout_t a_layout, const void* b, cublasLtMatrixLayout_t b_layout,
                              const void* beta, const void* c, cublasLtMatrixLayout_t c_layout, void* d,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (cublasStatus_t st = check_problem(desc, a_layout, b_layout, c_layout, d_layout); st != CUBLAS_STATUS_SUCCESS)
    return st;
  if (!alpha || !beta) return refuse(CUBLAS_STATUS_INVALID_VALUE, "alpha or beta is null");
  if (!algo || algo->data[kMagic] != kAlgoMagic)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "no algorithm from cublasLtMatmulAlgoGetHeuristic");
  if (algo->data[kEpilogue] != (uint64_t)desc->epilogue)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "the algorithm was chosen for another epilogue");
  const bool has_bias = desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT;
  const uint64_t m = d_layout->rows, n = d_layout->cols, k = op_cols(a_layout, desc->trans_a);
  const uint64_t bias_len = desc->epilogue == CUBLASLT_EPILOGUE_BIAS ? m : n;
  if (has_bias && !desc->bias) return refuse(CUBLAS_STATUS_INVALID_VALUE, "the epilogue needs a bias pointer");
  // The algorithm's promises: alignments (a kernel chosen for 16-byte loads faults on a 4-byte-aligned operand)
  // and the workspace it asked for.
  const void* ptrs[5] = {a, b, c, d, desc->bias};
  for (int i = 0; i < 5; i++)
    if ((i < 4 || has_bias) && alignment(ptrs[i]) < algo->data[kAlignA + i])
      return refuse(CUBLAS_STATUS_INVALID_VALUE,
                    "an operand (A, B, C, D or bias) is less aligned than the heuristic was told (preference "
                    "CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, 256 by default)");
  if (workspace_bytes < algo->data[kWorkspace] || (algo->data[kWorkspace] > 0 && !workspace))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "a workspace smaller than the algorithm asked for");
  if (!skipgrad_emu::skip_work()) {  // the range checks cost host time
    const bool ok = skipgrad_emu::is_device_pointer(d, span_bytes(d_layout)) &&
                    (k == 0 || (skipgrad_emu::is_device_pointer(a, span_bytes(a_layout)) &&
                                skipgrad_emu::is_device_pointer(b, span_bytes(b_layout)))) &&
                    (!has_bias ||
                     skipgrad_emu::is_device_pointer(desc->bias, bias_len * element_bytes(d_layout->type))) &&
                    (workspace_bytes == 0 || skipgrad_emu::is_device_pointer(workspace, workspace_bytes));
    if (!ok) return refuse(CUBLAS_STATUS_INVALID_VALUE, "an operand, the bias or the workspace is not in device memory");
  }
  if (a_layout->type == CUDA_R_16BF) {
    skipgrad_emu::count_gemm();  // as the float32 path's product below
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    if (skipgrad_emu::skip_work()) return CUBLAS_STATUS_SUCCESS;
    if (d_layout->type == CUDA_R_32F) bf16_matmul<float>(desc, al, a, a_layout, b, b_layout, be, c, d, d_layout);
    else bf16_matmul<skipgrad::bf16>(desc, al, a, a_layout, b, b_layout, be, c, d, d_layout);
    return CUBLAS_STATUS_SUCCESS;
  }
  float* dp = static_cast<float*>(d);
  const float* cp = static_cast<const float*>(c);
  const int64_t ld = d_layout->ld;
  if (cp != dp && *static_cast<const float*>(beta) != 0 && !skipgrad_emu::skip_work())
    for (uint64_t j = 0; j < n; j++) std::memcpy(dp + j * ld, cp + j * ld, m * sizeof(float));
  cublasContext* blas = nullptr;  // the product itself: the emulator's cuBLAS, in the descriptor's compute type
  cublasCreate(&blas);
  // The bias gradient reads B before D is written (D never aliases B in cuBLASLt's contract, but cheap to honour).
  const float* bp = static_cast<const float*>(b);
  float* bias = static_cast<float*>(desc->bias);
  if (desc->epilogue == CUBLASLT_EPILOGUE_BGRADB && !skipgrad_emu::skip_work())
    for (uint64_t j = 0; j < n; j++) {  // op(B)[kk, j]: B[kk + j ld] untransposed, B[j + kk ld] transposed
      double s = 0;
      for (uint64_t kk = 0; kk < k; kk++)
        s += desc->trans_b == CUBLAS_OP_N ? bp[kk + j * b_layout->ld] : bp[j + kk * b_layout->ld];
      bias[j] = (float)s;
    }
  const cublasStatus_t st = cublasGemmStridedBatchedEx(
      blas, desc->trans_a, desc->trans_b, (int)m, (int)n, (int)k, alpha, a, CUDA_R_32F, (int)a_layout->ld, 0, bp,
      CUDA_R_32F, (int)b_layout->ld, 0, beta, dp, CUDA_R_32F, (int)ld, 0, 1, desc->compute, CUBLAS_GEMM_DEFAULT);
  cublasDestroy(blas);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS && !skipgrad_emu::skip_work())
    for (uint64_t j = 0; j < n; j++)
      for (uint64_t i = 0; i < m; i++) dp[i + j * ld] += bias[i];
  return CUBLAS_STATUS_SUCCESS;
}
