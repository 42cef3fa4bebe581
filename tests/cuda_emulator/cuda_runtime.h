// The CUDA emulator's stand-in for <cuda_runtime.h>: the part of the CUDA runtime that backends/cuda and
// bench/cuda_step.cpp use, implemented on the CPU (docs/cuda.md, "The CUDA emulator").
//
// With -DSKIPGRAD_CUDA_EMULATOR=ON the CUDA backend's .cu files are compiled as C++ against this header: device
// memory is host memory, every copy and kernel runs at once on the calling thread (so streams and events are
// always complete), cuBLAS is OpenBLAS (cublas_v2.h), and a kernel launch runs its grid one block at a time with
// each CUDA thread a fiber (emulator.cpp), so __syncthreads and warp shuffles keep their meaning. What it checks
// that a GPU would not tell as clearly: launch configurations (as CUDA does), pointers passed to kernels and
// copies (device memory where device memory is expected), barriers some threads never reach (a deadlock),
// shuffles with exited lanes, uninitialised device memory (filled with NaN bytes), and races within a block
// (threads between barriers run lowest-first and highest-first in alternate blocks and launches).
// What it cannot tell: speed, races between blocks (blocks run one after another), memory-model effects, and
// floating-point differences of the GPU's own instructions (FMA contraction, fast intrinsics).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- qualifiers: host C++ has no memory spaces ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Static storage is shared by all fibers of a block, and blocks run one after another: shared memory.
#define __shared__ static

// ---- types of the runtime API ----
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int multiProcessorCount;
  int major, minor;
  int warpSize;
  int maxThreadsPerBlock;
};

// ---- the runtime API (runtime.cpp) ----
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
// As in CUDA's header: typed pointers without a cast.
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop);

// ---- the emulator's side of kernels (emulator.cpp) ----
namespace skipgrad_emu {

const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_block();                                   // __syncthreads
uint64_t shuffle_xor(unsigned mask, uint64_t bits, int lane_mask);  // __shfl_xor_sync on 8 bytes

// Whether [p, p + bytes) lies in one allocation from cudaMalloc (runtime.cpp).
bool is_device_pointer(const void* p, size_t bytes = 1);

// SKIPGRAD_CUDA_EMULATOR_SKIP_WORK=1: launches and GEMMs are checked and counted but not run, so a program's time
// is its host side alone (what queuing the work costs); results are garbage. The counts (launches per kernel)
// are printed at exit.
bool skip_work();
// While set (tests only): cudaEventQuery answers cudaErrorNotReady, as for work still in flight on a GPU, and, as
// the CUDA runtime does, records it as the last error, which the caller must clear.
void set_events_pending(bool pending);
// While set to an error (tests only): cudaMalloc answers it, as every runtime call does on a GPU once a kernel has
// faulted (a sticky error, kept until the process exits); cudaSuccess clears it.
void set_malloc_error(cudaError_t e);
// While set to n > 0 (tests only): a cudaMalloc of n bytes or more answers cudaErrorMemoryAllocation, as a device
// with no room left for it; 0 clears it.
void set_malloc_limit(size_t bytes);
int64_t count_launch(const char* kernel);  // returns the launches so far, this one included
void count_gemm();

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  LaunchConfig(dim3 g, dim3 b, size_t shared = 0, cudaStream_t s = nullptr)
      : grid(g), block(b), shared_bytes(shared), stream(s) {}
};

// Runs thread_main(ctx) once per CUDA thread of the grid, block after block, in alternating orders (emulator.cpp).
// An invalid configuration or a fault sets the error that cudaGetLastError returns, as on a GPU.
void run_grid(const char* kernel, const LaunchConfig& cfg, void (*thread_main)(void*), void* ctx);
// Records a failed launch (`what` names the kernel and the problem) for cudaGetLastError.
void launch_failed(cudaError_t e, const char* kernel, const char* what);

template <class A>
bool device_argument_ok(const A& a) {
  if constexpr (std::is_pointer_v<A>) return a == nullptr || is_device_pointer(a);
  return true;
}

// What `kernel<<<cfg>>>(args...)` becomes (rewrite_launches.cpp): the arguments are evaluated once, as on a
// GPU, and every thread calls the kernel with its own copies.
template <class Kernel, class... Args>
void launch(const char* name, const LaunchConfig& cfg, Kernel kernel, Args... args) {
  if (!skip_work() && !(device_argument_ok(args) && ...)) {
    launch_failed(cudaErrorInvalidValue, name, "a pointer argument is not device memory (host memory on the GPU)");
    return;
  }
  auto body = [&] { kernel(args...); };
  run_grid(name, cfg, [](void* ctx) { (*static_cast<decltype(body)*>(ctx))(); }, &body);
}

}  // namespace skipgrad_emu

// ---- built-in variables and device functions ----
#define threadIdx (::skipgrad_emu::thread_idx())
#define blockIdx (::skipgrad_emu::block_idx())
#define blockDim (::skipgrad_emu::block_dim())
#define gridDim (::skipgrad_emu::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { skipgrad_emu::sync_block(); }
// Blocks run one after another, so every write of an earlier block is already visible: a fence has nothing to do,
// and a load that bypasses L1 is a load.
inline void __threadfence() {}
template <class T>
T __ldcg(const T* p) {
  return *p;
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "__shfl_xor_sync: at most 8 bytes");
  (void)width;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = skipgrad_emu::shuffle_xor(mask, bits, lane_mask);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// Fibers of one block never run at the same time, so a read-modify-write is atomic. Overloads for CUDA's types
// (not templates), so arguments convert as they do with nvcc.
#define SKIPGRAD_EMU_ATOMIC(name, T, expr) \
  inline T name(T* p, T v) {               \
    const T old = *p;                      \
    *p = (expr);                           \
    return old;                            \
  }
SKIPGRAD_EMU_ATOMIC(atomicAdd, int, old + v)
SKIPGRAD_EMU_ATOMIC(atomicAdd, unsigned, old + v)
SKIPGRAD_EMU_ATOMIC(atomicAdd, unsigned long long, old + v)
SKIPGRAD_EMU_ATOMIC(atomicAdd, float, old + v)
SKIPGRAD_EMU_ATOMIC(atomicAdd, double, old + v)
SKIPGRAD_EMU_ATOMIC(atomicOr, int, old | v)
SKIPGRAD_EMU_ATOMIC(atomicOr, unsigned, old | v)
SKIPGRAD_EMU_ATOMIC(atomicOr, unsigned long long, old | v)
SKIPGRAD_EMU_ATOMIC(atomicMax, int, old < v ? v : old)
SKIPGRAD_EMU_ATOMIC(atomicMax, unsigned, old < v ? v : old)
#undef SKIPGRAD_EMU_ATOMIC

// CUDA's math functions have float overloads in the global namespace.
using std::erf, std::exp, std::expm1, std::fabs, std::isfinite, std::isinf, std::isnan, std::log, std::log1p,
    std::pow, std::sqrt, std::tanh;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
