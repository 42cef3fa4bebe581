// The CUDA emulator's runtime and cuBLAS: one device ("skipgrad CUDA emulator") whose memory is host memory.
// Everything completes before the call returns, so a stream is always idle and an event always reached.
// Checks that a GPU makes too: a failed launch or a copy in the wrong direction is an error with CUDA's code;
// allocations beyond the emulated device's memory fail with cudaErrorMemoryAllocation. Fresh device memory is
// filled with 0xff bytes (NaN as float32 and float64) so a kernel that reads what nobody wrote shows up.
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"
#include "tensor/bfloat16.h"

namespace skipgrad_emu {
namespace {

constexpr size_t kDeviceBytes = size_t(16) << 30;  // the emulated device's memory

struct State {
  std::mutex mutex;
  std::map<uintptr_t, size_t> device_allocations;  // start -> bytes
  size_t device_bytes_in_use = 0;
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
};
State& state() {
  static State* s = new State();  // never destroyed: memory may be freed after main returns
  return *s;
}

cudaError_t record(cudaError_t e, const std::string& message) {
  State& s = state();
  if (e != cudaSuccess) {
    s.last_error = e;
    s.last_message = message;
  }
  return e;
}

bool in_device_memory(const void* p, size_t bytes) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = s.device_allocations.upper_bound(a);
  if (it == s.device_allocations.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

// Whether a copy of `bytes` from src to dst agrees with `kind` (cudaMemcpyDefault: anything).
bool copy_agrees(const void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  const bool dst_dev = in_device_memory(dst, bytes), src_dev = in_device_memory(src, bytes);
  switch (kind) {
    case cudaMemcpyHostToHost: return !dst_dev && !src_dev;
    case cudaMemcpyHostToDevice: return dst_dev && !src_dev;
    case cudaMemcpyDeviceToHost: return !dst_dev && src_dev;
    case cudaMemcpyDeviceToDevice: return dst_dev && src_dev;
    case cudaMemcpyDefault: return true;
  }
  return false;
}

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "host to host";
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    case cudaMemcpyDefault: return "default";
  }
  return "?";
}

}  // namespace

bool is_device_pointer(const void* p, size_t bytes) { return in_device_memory(p, bytes); }

namespace {
std::atomic<int64_t> kernel_launches{0}, gemm_calls{0};
std::mutex launches_by_kernel_mutex;
std::map<std::string, int64_t>& launches_by_kernel() {
  static auto* m = new std::map<std::string, int64_t>();
  return *m;
}
void print_counts() {
  std::fprintf(stderr, "CUDA emulator (work skipped): %lld kernel launches, %lld cuBLAS GEMM calls\n",
               (long long)kernel_launches.load(), (long long)gemm_calls.load());
  std::vector<std::pair<int64_t, std::string>> rows;
  for (auto& [name, n] : launches_by_kernel()) rows.emplace_back(n, name);
  std::sort(rows.rbegin(), rows.rend());
  for (auto& [n, name] : rows) std::fprintf(stderr, "  %10lld  %s\n", (long long)n, name.c_str());
}
}  // namespace

bool skip_work() {
  static const bool skip = [] {
    const char* v = std::getenv("SKIPGRAD_CUDA_EMULATOR_SKIP_WORK");
    const bool on = v && std::string(v) != "0";
    if (on) std::atexit(print_counts);
    return on;
  }();
  return skip;
}
int64_t count_launch(const char* kernel) {
  const int64_t n = ++kernel_launches;
  if (!skip_work()) return n;
  std::lock_guard<std::mutex> lock(launches_by_kernel_mutex);
  launches_by_kernel()[kernel]++;
  return n;
}
void count_gemm() { gemm_calls++; }

void launch_failed(cudaError_t e, const char* kernel, const char* what) {
  std::fprintf(stderr, "CUDA emulator: kernel %s: %s\n", kernel, what);
  record(e, std::string("kernel ") + kernel + ": " + what);
}

}  // namespace skipgrad_emu

using skipgrad_emu::record;
using skipgrad_emu::state;

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : record(cudaErrorInvalidDevice, "cudaSetDevice: the emulator has device 0 only");
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return record(cudaErrorInvalidDevice, "cudaGetDeviceProperties: the emulator has device 0 only");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "skipgrad CUDA emulator (CPU)");
  prop->totalGlobalMem = skipgrad_emu::kDeviceBytes;
  prop->multiProcessorCount = 1;
  prop->major = 9;
  prop->minor = 0;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = state().last_error;
  state().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return state().last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}
// The message of the last failure (it names the kernel or call), else CUDA's generic text.
const char* cudaGetErrorString(cudaError_t e) {
  if (e != cudaSuccess && !state().last_message.empty()) return state().last_message.c_str();
  return e == cudaSuccess ? "no error" : "emulated CUDA error";
}

namespace {
std::atomic<cudaError_t> malloc_error{cudaSuccess};
std::atomic<size_t> malloc_limit{0};
}
void skipgrad_emu::set_malloc_error(cudaError_t e) { malloc_error = e; }
void skipgrad_emu::set_malloc_limit(size_t bytes) { malloc_limit = bytes; }

cudaError_t cudaMalloc(void** p, size_t bytes) {
  skipgrad_emu::State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  *p = nullptr;
  if (malloc_error != cudaSuccess) return record(malloc_error, "cudaMalloc: set_malloc_error (a sticky error)");
  if (bytes > skipgrad_emu::kDeviceBytes - s.device_bytes_in_use || (malloc_limit > 0 && bytes >= malloc_limit))
    return record(cudaErrorMemoryAllocation, "cudaMalloc: " + std::to_string(bytes) + " bytes do not fit in the " +
                                                 "emulated device's free memory");
  // 256-byte aligned as cudaMalloc's, and exactly `bytes` long, so AddressSanitizer sees an access past the end
  void* q = nullptr;
  if (posix_memalign(&q, 256, bytes == 0 ? 1 : bytes) != 0)
    return record(cudaErrorMemoryAllocation, "cudaMalloc: host allocation failed");
  std::memset(q, 0xff, bytes);
  s.device_allocations[reinterpret_cast<uintptr_t>(q)] = bytes;
  s.device_bytes_in_use += bytes;
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  skipgrad_emu::State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.device_allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.device_allocations.end()) return record(cudaErrorInvalidValue, "cudaFree: not a cudaMalloc pointer");
  s.device_bytes_in_use -= it->second;
  s.device_allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes == 0 ? 1 : bytes);
  return *p ? cudaSuccess : record(cudaErrorMemoryAllocation, "cudaMallocHost: host allocation failed");
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(state().mutex);
  *total_bytes = skipgrad_emu::kDeviceBytes;
  *free_bytes = skipgrad_emu::kDeviceBytes - state().device_bytes_in_use;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (!skipgrad_emu::copy_agrees(dst, src, bytes, kind))
    return record(cudaErrorInvalidValue, std::string("cudaMemcpy: a ") + skipgrad_emu::kind_name(kind) +
                                             " copy of " + std::to_string(bytes) +
                                             " bytes whose pointers are not on those sides (or overrun an allocation)");
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
  if (bytes == 0) return cudaSuccess;
  if (!skipgrad_emu::in_device_memory(p, bytes))
    return record(cudaErrorInvalidValue, "cudaMemset: " + std::to_string(bytes) + " bytes not in device memory");
  std::memset(p, value, bytes);
  return cudaSuccess;
}

// Streams and events: work is done when it is queued, so there is never anything to wait for. An event keeps
// the host time at which it was recorded, for cudaEventElapsedTime.
struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point at{};
};
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new CUstream_st();
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = new CUevent_st();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
namespace {
std::atomic<bool> events_pending{false};
}
void skipgrad_emu::set_events_pending(bool pending) { events_pending = pending; }
cudaError_t cudaEventQuery(cudaEvent_t) {
  return events_pending ? record(cudaErrorNotReady, "cudaEventQuery: the event's work is not done") : cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  *ms = std::chrono::duration<float, std::milli>(stop->at - start->at).count();
  return cudaSuccess;
}

// ---- cuBLAS on OpenBLAS ----
struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};
cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t) {
  return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "emulated cuBLAS error";
}

namespace {

// float32 -> TF32 (1 sign, 8 exponent, 10 mantissa bits), round to nearest, ties away: what tensor cores read.
float to_tf32(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7f800000u) != 0x7f800000u) b = (b + 0x1000u) & ~0x1fffu;  // not Inf/NaN
  std::memcpy(&x, &b, 4);
  return x;
}

// What tensor cores read of float32 operands: all of them, TF32 or bfloat16.
enum class Rounding { None, TF32, BF16 };

// cuBLAS's checks: sizes >= 0, every leading dimension >= the rows stored, batch >= 0; operands in device memory.
template <class T, class CT = T>
cublasStatus_t check_gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          const T* a, int lda, const T* b, int ldb, const CT* c, int ldc, int batch) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  const int rows_a = ta == CUBLAS_OP_N ? m : k, rows_b = tb == CUBLAS_OP_N ? k : n;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, rows_a) || ldb < std::max(1, rows_b) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (m > 0 && n > 0 && batch > 0 && !skipgrad_emu::skip_work()) {  // the pointer checks cost host time
    const bool ok = skipgrad_emu::is_device_pointer(c) && (k == 0 || (skipgrad_emu::is_device_pointer(a) &&
                                                                      skipgrad_emu::is_device_pointer(b)));
    if (!ok) {
      std::fprintf(stderr, "CUDA emulator: cuBLAS GEMM operand not in device memory\n");
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

CBLAS_TRANSPOSE cblas_op(cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; }

// A copy, rounded as tensor cores read it, of a column-major rows x cols operand with leading dimension ld (only
// the elements it spans are read: the last column ends at its last row).
std::vector<float> rounded_copy(const float* x, int ld, int rows, int cols, Rounding r) {
  std::vector<float> out((size_t)ld * (cols - 1) + rows);
  for (size_t i = 0; i < out.size(); i++)  // bfloat16: tensor/bfloat16.h's rounding, to nearest even
    out[i] = r == Rounding::TF32 ? to_tf32(x[i]) : (float)skipgrad::bf16(x[i]);
  return out;
}

// The products themselves (checked and counted by the callers).
void run_sgemm(Rounding r, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* alpha,
               const float* a, int lda, long long stride_a, const float* b, int ldb, long long stride_b,
               const float* beta, float* c, int ldc, long long stride_c, int batch) {
  for (int i = 0; i < batch; i++) {
    const float* ai = a + i * stride_a;
    const float* bi = b + i * stride_b;
    std::vector<float> a32, b32;
    if (r != Rounding::None && k > 0) {
      a32 = ta == CUBLAS_OP_N ? rounded_copy(ai, lda, m, k, r) : rounded_copy(ai, lda, k, m, r);
      b32 = tb == CUBLAS_OP_N ? rounded_copy(bi, ldb, k, n, r) : rounded_copy(bi, ldb, n, k, r);
      ai = a32.data();
      bi = b32.data();
    }
    cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k, *alpha, ai, lda, bi, ldb, *beta,
                c + i * stride_c, ldc);
  }
}
void run_dgemm(Rounding, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double* alpha,
               const double* a, int lda, long long stride_a, const double* b, int ldb, long long stride_b,
               const double* beta, double* c, int ldc, long long stride_c, int batch) {
  for (int i = 0; i < batch; i++)
    cblas_dgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k, *alpha, a + i * stride_a, lda, b + i * stride_b,
                ldb, *beta, c + i * stride_c, ldc);
}

Rounding math_rounding(cublasHandle_t h) {
  return (h->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) == CUBLAS_TF32_TENSOR_OP_MATH ? Rounding::TF32
                                                                                                   : Rounding::None;
}

// The ...Ex entry points' types: float32 with a float32 compute type (the rounding it allows), or float64.
bool ex_types(cudaDataType a, cudaDataType b, cudaDataType c, cublasComputeType_t compute, bool& f64, Rounding& r) {
  if (a != b || b != c) return false;
  f64 = a == CUDA_R_64F;
  if (f64) return compute == CUBLAS_COMPUTE_64F;
  r = compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? Rounding::TF32
      : compute == CUBLAS_COMPUTE_32F_FAST_16BF ? Rounding::BF16 : Rounding::None;
  return a == CUDA_R_32F && (compute == CUBLAS_COMPUTE_32F || r != Rounding::None);
}

// bfloat16 A and B, bfloat16 or float32 C (CT), with a float32 compute type (CUBLAS_COMPUTE_32F, what cuBLAS runs on
// bf16 tensor cores): the spanned elements widened to float (exact), one sgemm, C rounded once to bfloat16 or stored.
template <class CT>
void run_bf16_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                   const skipgrad::bf16* a, int lda, const skipgrad::bf16* b, int ldb, float beta, CT* c, int ldc) {
  auto widen = [](const auto* x, int ld, int rows, int cols) {
    std::vector<float> out(rows == 0 || cols == 0 ? 0 : (size_t)ld * (cols - 1) + rows);
    for (size_t i = 0; i < out.size(); i++) out[i] = (float)x[i];
    return out;
  };
  std::vector<float> af = ta == CUBLAS_OP_N ? widen(a, lda, m, k) : widen(a, lda, k, m);
  std::vector<float> bf = tb == CUBLAS_OP_N ? widen(b, ldb, k, n) : widen(b, ldb, n, k);
  std::vector<float> cf = beta != 0 ? widen(c, ldc, m, n) : std::vector<float>((size_t)ldc * (n - 1) + m, 0.f);
  if (k > 0)
    cblas_sgemm(CblasColMajor, cblas_op(ta), cblas_op(tb), m, n, k, alpha, af.data(), lda, bf.data(), ldb, beta,
                cf.data(), ldc);
  else
    for (float& v : cf) v *= beta;
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++) c[i + (size_t)j * ldc] = CT(cf[i + (size_t)j * ldc]);
}
// bfloat16 A and B with bfloat16 or (c_f32) float32 C, in CUBLAS_COMPUTE_32F.
bool bf16_types(cudaDataType a, cudaDataType b, cudaDataType c, cublasComputeType_t compute, bool& c_f32) {
  c_f32 = c == CUDA_R_32F;
  return a == CUDA_R_16BF && b == CUDA_R_16BF && (c == CUDA_R_16BF || c_f32) && compute == CUBLAS_COMPUTE_32F;
}

}  // namespace

namespace {
// Every strided-batched GEMM: cuBLAS's checks, one GEMM counted, the product unless the work is skipped.
template <class T>
cublasStatus_t strided_gemm(cublasHandle_t h, Rounding r, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                            int k, const T* alpha, const T* a, int lda, long long stride_a, const T* b, int ldb,
                            long long stride_b, const T* beta, T* c, int ldc, long long stride_c, int batch) {
  if (cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, batch); st != CUBLAS_STATUS_SUCCESS)
    return st;
  skipgrad_emu::count_gemm();
  if (m == 0 || n == 0 || skipgrad_emu::skip_work()) return CUBLAS_STATUS_SUCCESS;
  if constexpr (std::is_same_v<T, float>)
    run_sgemm(r, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch);
  else
    run_dgemm(r, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c, batch);
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* a, int lda, long long stride_a,
                                         const float* b, int ldb, long long stride_b, const float* beta, float* c,
                                         int ldc, long long stride_c, int batch) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  return strided_gemm(h, math_rounding(h), ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                      stride_c, batch);
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* a, int lda, const float* b, int ldb, const float* beta,
                           float* c, int ldc) {
  return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* a, int lda, long long stride_a,
                                         const double* b, int ldb, long long stride_b, const double* beta, double* c,
                                         int ldc, long long stride_c, int batch) {
  return strided_gemm(h, Rounding::None, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
                      stride_c, batch);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* a, cudaDataType a_type, int lda,
                                          long long stride_a, const void* b, cudaDataType b_type, int ldb,
                                          long long stride_b, const void* beta, void* c, cudaDataType c_type, int ldc,
                                          long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
  if (bool c_f32; bf16_types(a_type, b_type, c_type, compute, c_f32)) {
    using skipgrad::bf16;
    const auto *ap = static_cast<const bf16*>(a), *bp = static_cast<const bf16*>(b);
    if (cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, ap, lda, bp, ldb, c, ldc, batch); st != CUBLAS_STATUS_SUCCESS)
      return st;
    skipgrad_emu::count_gemm();
    if (m == 0 || n == 0 || skipgrad_emu::skip_work()) return CUBLAS_STATUS_SUCCESS;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    for (int i = 0; i < batch; i++) {
      if (c_f32)
        run_bf16_gemm(ta, tb, m, n, k, al, ap + i * stride_a, lda, bp + i * stride_b, ldb, be,
                      static_cast<float*>(c) + i * stride_c, ldc);
      else
        run_bf16_gemm(ta, tb, m, n, k, al, ap + i * stride_a, lda, bp + i * stride_b, ldb, be,
                      static_cast<bf16*>(c) + i * stride_c, ldc);
    }
    return CUBLAS_STATUS_SUCCESS;
  }
  bool f64 = false;
  Rounding r = Rounding::None;
  if (!ex_types(a_type, b_type, c_type, compute, f64, r)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (f64)
    return strided_gemm(h, r, ta, tb, m, n, k, static_cast<const double*>(alpha), static_cast<const double*>(a), lda,
                        stride_a, static_cast<const double*>(b), ldb, stride_b, static_cast<const double*>(beta),
                        static_cast<double*>(c), ldc, stride_c, batch);
  return strided_gemm(h, r, ta, tb, m, n, k, static_cast<const float*>(alpha), static_cast<const float*>(a), lda,
                      stride_a, static_cast<const float*>(b), ldb, stride_b, static_cast<const float*>(beta),
                      static_cast<float*>(c), ldc, stride_c, batch);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* a, cudaDataType a_type, int lda, const void* b,
                            cudaDataType b_type, int ldb, const void* beta, void* c, cudaDataType c_type, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  return cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, alpha, a, a_type, lda, 0, b, b_type, ldb, 0, beta, c, c_type,
                                    ldc, 0, 1, compute, algo);
}

namespace {
// Batched GEMMs over pointer arrays: the arrays must be in device memory, and so must every matrix they point to
// (each entry gets the strided GEMM's checks); one call counts as one GEMM.
// T: float, double or bf16 (whose scalars S are float, and C's type CT bf16 or float).
template <class T, class S, class CT = T>
cublasStatus_t gemm_pointer_arrays(cublasHandle_t h, Rounding r, cublasOperation_t ta, cublasOperation_t tb, int m,
                                   int n, int k, const S* alpha, const T* const a[], int lda, const T* const b[],
                                   int ldb, const S* beta, CT* const c[], int ldc, int batch) {
  if (cublasStatus_t st = check_gemm<T, CT>(h, ta, tb, m, n, k, nullptr, lda, nullptr, ldb, nullptr, ldc, 0);
      st != CUBLAS_STATUS_SUCCESS)
    return st;
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  skipgrad_emu::count_gemm();
  // with the work skipped, the arrays were written by a kernel that did not run
  if (batch == 0 || m == 0 || n == 0 || skipgrad_emu::skip_work()) return CUBLAS_STATUS_SUCCESS;
  const size_t bytes = (size_t)batch * sizeof(void*);
  if (!skipgrad_emu::is_device_pointer(a, bytes) || !skipgrad_emu::is_device_pointer(b, bytes) ||
      !skipgrad_emu::is_device_pointer(c, bytes)) {
    std::fprintf(stderr, "CUDA emulator: cuBLAS batched GEMM pointer array not in device memory\n");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  for (int i = 0; i < batch; i++) {
    if (cublasStatus_t st = check_gemm(h, ta, tb, m, n, k, a[i], lda, b[i], ldb, c[i], ldc, 1);
        st != CUBLAS_STATUS_SUCCESS)
      return st;
    if constexpr (std::is_same_v<T, float>)
      run_sgemm(r, ta, tb, m, n, k, alpha, a[i], lda, 0, b[i], ldb, 0, beta, c[i], ldc, 0, 1);
    else if constexpr (std::is_same_v<T, double>)
      run_dgemm(r, ta, tb, m, n, k, alpha, a[i], lda, 0, b[i], ldb, 0, beta, c[i], ldc, 0, 1);
    else
      run_bf16_gemm(ta, tb, m, n, k, *alpha, a[i], lda, b[i], ldb, *beta, c[i], ldc);
  }
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasSgemmBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const float* alpha, const float* const a[], int lda, const float* const b[], int ldb,
                                  const float* beta, float* const c[], int ldc, int batch) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  return gemm_pointer_arrays(h, math_rounding(h), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}
cublasStatus_t cublasDgemmBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                  const double* alpha, const double* const a[], int lda, const double* const b[],
                                  int ldb, const double* beta, double* const c[], int ldc, int batch) {
  return gemm_pointer_arrays(h, Rounding::None, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void* alpha, const void* const a[], cudaDataType a_type, int lda,
                                   const void* const b[], cudaDataType b_type, int ldb, const void* beta,
                                   void* const c[], cudaDataType c_type, int ldc, int batch,
                                   cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (bool c_f32; bf16_types(a_type, b_type, c_type, compute, c_f32)) {
    const auto* al = static_cast<const float*>(alpha);
    const auto* be = static_cast<const float*>(beta);
    const auto* const* ap = reinterpret_cast<const skipgrad::bf16* const*>(a);
    const auto* const* bp = reinterpret_cast<const skipgrad::bf16* const*>(b);
    if (c_f32)
      return gemm_pointer_arrays(h, Rounding::None, ta, tb, m, n, k, al, ap, lda, bp, ldb, be,
                                 reinterpret_cast<float* const*>(c), ldc, batch);
    return gemm_pointer_arrays(h, Rounding::None, ta, tb, m, n, k, al, ap, lda, bp, ldb, be,
                               reinterpret_cast<skipgrad::bf16* const*>(c), ldc, batch);
  }
  bool f64 = false;
  Rounding r = Rounding::None;
  if (!ex_types(a_type, b_type, c_type, compute, f64, r)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (f64)
    return gemm_pointer_arrays(h, r, ta, tb, m, n, k, static_cast<const double*>(alpha),
                               reinterpret_cast<const double* const*>(a), lda,
                               reinterpret_cast<const double* const*>(b), ldb, static_cast<const double*>(beta),
                               reinterpret_cast<double* const*>(c), ldc, batch);
  return gemm_pointer_arrays(h, r, ta, tb, m, n, k, static_cast<const float*>(alpha),
                             reinterpret_cast<const float* const*>(a), lda, reinterpret_cast<const float* const*>(b),
                             ldb, static_cast<const float*>(beta), reinterpret_cast<float* const*>(c), ldc, batch);
}
