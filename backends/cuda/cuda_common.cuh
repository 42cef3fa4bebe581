// Helpers shared by the CUDA kernel files: error checks, launch sizes, dtype dispatch, strided indexing and
// warp/block reductions. Included only by backends/cuda/*.cu.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "backends/cuda/cuda_backend.h"

// Every CUDA runtime call goes through this: a failure throws skipgrad::Error naming the op and CUDA's message.
#define SG_CUDA_CHECK(op, expr)                                                                        \
  do {                                                                                                 \
    cudaError_t sg_err_ = (expr);                                                                      \
    if (sg_err_ != cudaSuccess)                                                                        \
      ::skipgrad::fail(op, ": CUDA error ", cudaGetErrorName(sg_err_), " (", cudaGetErrorString(sg_err_), \
                       ") in ", #expr);                                                                \
  } while (0)

// After a kernel launch: reports bad launch configurations (no synchronisation).
#define SG_CUDA_LAUNCH_CHECK(op) SG_CUDA_CHECK(op, cudaGetLastError())

#define SG_CUBLAS_CHECK(op, expr)                                                                      \
  do {                                                                                                 \
    cublasStatus_t sg_st_ = (expr);                                                                    \
    if (sg_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      ::skipgrad::fail(op, ": cuBLAS error ", cublasGetStatusName(sg_st_), " (", cublasGetStatusString(sg_st_), \
                       ") in ", #expr);                                                                \
  } while (0)

namespace skipgrad::cuda {

constexpr int kThreads = 256;   // threads per block of the elementwise kernels
constexpr int kMaxDims = 16;    // as the CPU backend's strided loops

// Blocks for a grid-stride loop over n elements.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > (1 << 20)) blocks = 1 << 20;
  return (unsigned)blocks;
}

// Threads for one block per row of `cols` elements: a multiple of 32, at most 256.
inline int row_threads(int64_t cols) {
  int64_t t = (cols + 31) / 32 * 32;
  return (int)(t < 32 ? 32 : (t > 256 ? 256 : t));
}

// Throws unless every defined tensor in ts is contiguous (kernels that index their operands as flat arrays).
inline void check_contiguous(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() && !t->is_contiguous()) fail(op, ": expected contiguous tensors on the GPU, got ", t->meta_str());
}

// Whether the memory of two of `written` overlaps (contiguous tensors: [data, data + nbytes)). A multi-tensor launch
// runs every tensor's chunks at once, so two entries on the same memory (a parameter listed twice) would race
// where the CPU, and the per-tensor path, apply them one after the other: such lists take the per-tensor path.
inline bool any_overlap(std::vector<const Tensor*> written) {
  std::erase_if(written, [](const Tensor* t) { return t->numel() == 0; });
  std::sort(written.begin(), written.end(),
            [](const Tensor* a, const Tensor* b) { return a->data_ptr() < b->data_ptr(); });
  for (size_t i = 1; i < written.size(); i++)
    if (static_cast<const char*>(written[i]->data_ptr()) <
        static_cast<const char*>(written[i - 1]->data_ptr()) + written[i - 1]->nbytes())
      return true;
  return false;
}

// Calls f(T{}) with T the C++ type of dt: float32/float64 (dispatch_float), those and bfloat16
// (dispatch_float_bf16: kernels that load bf16, compute in compute_t<T> and round once when storing), every dtype
// (dispatch_all).
template <class F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    default: fail(op, ": expected a floating dtype on the GPU, got ", dtype_name(dt));
  }
}
template <class F>
void dispatch_float_bf16(DType dt, const char* op, F&& f) {
  if (dt == DType::BF16) f(bf16{});
  else dispatch_float(dt, op, f);
}
// Calls f(T{}, P{}) for kernels whose input (and output) has type T and whose parameters or statistics have P:
// (T, T) for float32/float64, (bf16, float) for bfloat16, a bf16 activation with float32 parameters and statistics
// (norms, cross entropy).
template <class F>
void dispatch_with_float32_params(DType dt, const char* op, F&& f) {
  if (dt == DType::BF16) f(bf16{}, float{});
  else dispatch_float(dt, op, [&](auto tag) { f(tag, tag); });
}
// Whether a call runs in those kernels' (bf16, float) case: the defined tensors of `bf16s` (the first, the input,
// always defined) bfloat16 and the defined ones of `float32s` float32. Other mixes with bf16 run through float32
// copies (backends/in_float32.h).
inline bool bf16_with_float32(std::initializer_list<const Tensor*> bf16s,
                              std::initializer_list<const Tensor*> float32s) {
  if ((*bf16s.begin())->dtype() != DType::BF16) return false;
  for (const Tensor* t : bf16s)
    if (t->defined() && t->dtype() != DType::BF16) return false;
  for (const Tensor* t : float32s)
    if (t->defined() && t->dtype() != DType::F32) return false;
  return true;
}
template <class F>
void dispatch_all(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); return;
    case DType::F64: f(double{}); return;
    case DType::I64: f(int64_t{}); return;
    case DType::I32: f(int32_t{}); return;
    case DType::BF16: f(bf16{}); return;
  }
}

// N operands sharing one shape, each with its own strides, with dims merged where every operand is
// contiguous across them. Passed by value to kernels; offsets(i) maps a linear index to element offsets.
template <int N>
struct Strided {
  int nd = 0;
  int64_t shape[kMaxDims];
  int64_t stride[N][kMaxDims];

  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
    if (nd == 1) {  // contiguous after merging (the common case): no 64-bit division
#pragma unroll
      for (int k = 0; k < N; k++) off[k] = i * stride[k][0];
      return;
    }
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = 0;
    for (int d = nd - 1; d >= 0; d--) {
      const int64_t idx = i % shape[d];
      i /= shape[d];
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += idx * stride[k][d];
    }
  }
};

// Builds Strided<N> for `shape` and the operands' strides (same merge rule as the CPU's strided_rows).
template <int N>
Strided<N> make_strided(const Shape& shape, const std::array<const Shape*, N>& strides, const char* op) {
  Strided<N> s;
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 1) continue;
    bool fuse = s.nd > 0;
    for (int k = 0; k < N && fuse; k++) fuse = s.stride[k][s.nd - 1] == (*strides[k])[d] * shape[d];
    if (fuse) {
      s.shape[s.nd - 1] *= shape[d];
      for (int k = 0; k < N; k++) s.stride[k][s.nd - 1] = (*strides[k])[d];
    } else {
      check(s.nd < kMaxDims, op, ": at most ", kMaxDims, " dims supported on the GPU (after dropping size-1 dims "
            "and merging contiguous ones), got ", shape);
      s.shape[s.nd] = shape[d];
      for (int k = 0; k < N; k++) s.stride[k][s.nd] = (*strides[k])[d];
      s.nd++;
    }
  }
  return s;
}

// ---- reductions within a warp / a block (blockDim.x a multiple of 32, at most 1024) ----
struct SumOp {
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {  // NaN wins, as in the CPU backend
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return (b > a || b != b) ? b : a; }
};
struct MinOp {
  template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return (b < a || b != b) ? b : a; }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Every thread of the block gets the reduction of all threads' v. `scratch` holds 32 T in shared memory;
// the block may call this again right after (a barrier guards the scratch).
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < warps; w++) r = op(r, scratch[w]);
  return r;
}

// The reduction over a group of G threads that work on one item: a warp (G = 32, no barrier) or, for any other
// G, the whole block (block_reduce's barriers: every thread of the block must call it).
template <int G, class T, class Op>
__device__ __forceinline__ T group_reduce(T v, Op op, T* scratch) {
  if constexpr (G == 32) return warp_reduce(v, op);
  else return block_reduce(v, op, scratch);
}

// Multi-tensor launches (copy_many, scale_many, norm_many): every tensor cut into chunks of kManyChunk elements,
// block b works on chunk b. The tables are built and uploaded by CudaBackend::upload_many_table.
constexpr int64_t kManyChunk = 1 << 16;
struct ManyPair {  // a source and a destination (norm_many: no destination)
  const void* src;
  void* dst;
};
struct ManyChunk {  // elements [start, start + len) of pair `pair`
  int64_t start;
  int32_t pair, len;
};

// Device-side error flags (bits), set by kernels that find bad indices; read at the next host sync.
enum DeviceErrorBit : int { kBadEmbeddingId = 1, kBadTarget = 2, kBadGatherIndex = 4 };

}  // namespace skipgrad::cuda
