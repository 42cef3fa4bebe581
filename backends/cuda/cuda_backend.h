// The CUDA backend: cuBLAS for every matrix product, our own kernels for the rest, one .cu per kernel family:
//   cuda_device.cu       registration (cuda_init), caching device allocator, host<->device copies, error flags
//   cuda_elementwise.cu  fill, copy, arange, random fills, unary/binary maps and derivatives, where, count_nonfinite
//   cuda_reduce.cu       sum/mean/max/min/sum-of-squares over any set of dims
//   cuda_gemm.cu         (batched) GEMM through cuBLAS; linear layers' GEMMs with bias epilogues through cuBLASLt
//   cuda_norm.cu         softmax, layer_norm, rms_norm (one block per row) and dyt, forward and backward
//   cuda_nn.cu           embedding gather/scatter-add, cross entropy, dropout mask, rotary embedding
//   cuda_optim.cu        fused Adam/AdamW: per parameter, and over all parameters in one launch
// All work is queued on one stream; only count_nonfinite and copies to the host synchronise.
// Only cuda:0 is used so far.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backends/backend.h"

namespace skipgrad {

namespace cuda {
struct ManyPair;   // cuda_common.cuh
struct ManyChunk;
}  // namespace cuda

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  const char* name() const override { return "cuda"; }
  // Columns of a norm's parameter gradient, in blocks of cuda::kThreads, that the backend keeps counters for.
  static constexpr int64_t kColumnCounters = 16384;

  // The process-wide float32 matmul precision (set_float32_matmul_precision, backends/backend.h): cuBLAS compute
  // type CUBLAS_COMPUTE_32F, _FAST_TF32 or _FAST_16BF. Shorthands for code that holds the backend.
  using MatmulPrecision = skipgrad::MatmulPrecision;
  void set_matmul_precision(MatmulPrecision p) { set_float32_matmul_precision(p); }
  MatmulPrecision matmul_precision() const { return float32_matmul_precision(); }
  void set_allow_tf32(bool on) { set_float32_matmul_precision(on ? MatmulPrecision::TF32 : MatmulPrecision::FP32); }
  bool allow_tf32() const { return float32_matmul_precision() == MatmulPrecision::TF32; }
  cudaStream_t stream() const { return stream_; }
  // Throws (and clears) an error that a kernel recorded on the device, e.g. an embedding id out of range.
  // Synchronises; every copy to the host (download) checks them too.
  void check_device_errors();
  // Waits for the stream before a cudaFree (which may synchronise implicitly), counted in host_waits().
  void wait_before_free();

  // How often the host has waited for the GPU since the backend was made: every stream synchronisation (copies
  // to the host, count_nonfinite) and every wait for a busy staging slot. tests/test_cuda.cpp checks that a
  // training step waits once (the loss read) by differencing this counter.
  int64_t host_waits() const { return host_waits_; }
  // Host-to-device copies so far, and how many of them went through the pinned staging slots.
  int64_t uploads() const { return uploads_; }
  int64_t staged_uploads() const { return staged_uploads_; }
  // Linear layers' GEMMs whose bias work ran in a cuBLASLt epilogue, and those whose configuration cuBLASLt
  // declined (their bias work then ran as kernels of its own: Backend's gemm_bias / gemm_bias_grad).
  int64_t fused_bias_gemms() const { return fused_bias_gemms_; }
  int64_t unfused_bias_gemms() const { return unfused_bias_gemms_; }
  // GEMMs with two batch dims (attention's) whose device pointer arrays a kernel wrote, and those that found
  // theirs written already (pointer_arrays below).
  int64_t pointer_array_writes() const { return pointer_array_writes_; }
  int64_t pointer_array_reuses() const { return pointer_array_reuses_; }

  void fill(Tensor& out, double value) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void arange(Tensor& out, double start, double step) override;
  void random_uniform(Tensor& out, double low, double high, uint64_t seed, uint64_t offset) override;
  void random_normal(Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) override;
  void random_uniform_rows(Tensor& out, const Tensor& row_counters, uint64_t seed) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                      double alpha) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce, Tensor& out) override;
  void cumsum(const Tensor& x, int64_t dim, bool reverse, Tensor& out) override;
  void topk(const Tensor& x, int64_t dim, int64_t k, bool largest, Tensor& out) override;
  int64_t count_nonfinite(const Tensor& x) override;
  void gemm(const GemmArgs& args) override;
  void gemm_bias(const GemmArgs& args, const Tensor& bias, Tensor& c) override;
  void gemm_bias_grad(const GemmArgs& args, const Tensor& a, Tensor& bias_grad) override;
  void softmax(const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) override;
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) override;
  void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                  Tensor& rstd) override;
  void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                           const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta,
                           bool accumulate_gx) override;
  void rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) override;
  void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight, Tensor& gx,
                         Tensor& gweight, bool accumulate_gx) override;
  void dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) override;
  void dyt_backward(const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                    Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) override;
  void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  void embedding_backward(const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double label_smoothing,
                     Tensor& loss, Tensor& stats) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& stats, const Tensor& gloss,
                              int64_t ignore_index, double label_smoothing, Tensor& glogits) override;
  void dropout(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) override;
  void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override;
  void adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1, double beta2,
                   double eps, double weight_decay, bool decoupled, int64_t step) override;
  void copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts) override;
  void scale_many(const std::vector<Tensor*>& ts, const Tensor& scale) override;
  void norm_many(const std::vector<const Tensor*>& ts, Tensor& out) override;
  void adam_update_many(const std::vector<AdamTensors>& ts, double lr, double beta1, double beta2, double eps,
                        bool decoupled, int64_t step) override;
  // The profiler's marks: timing events recorded on the stream, from a pool (cudaEventCreate once per event).
  std::unique_ptr<TimeMark> time_mark() override;
  double elapsed_ms(const TimeMark& from, const TimeMark& to) override;

 private:
  struct EventMark;
  std::vector<cudaEvent_t> timing_events_;  // free ones; a mark gives its event back when it is destroyed
  void copy_device(const Tensor& src, Tensor& dst);  // both on the GPU (cuda_elementwise.cu)
  // copy_many's one launch (contiguous pairs of one pair of dtypes), dst = src * *scale when scale is not null
  void copy_many_launch(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts, const double* scale);
  // The tables of a multi-tensor launch (cuda::ManyPair per tensor, cuda::ManyChunk per chunk; dsts may be empty),
  // uploaded in one copy into `storage` (freed with it once the launch is queued). first_chunk[i] is tensor i's
  // first chunk, first_chunk[n] the number of chunks.
  struct ManyTable {
    Tensor storage;
    const cuda::ManyPair* pairs = nullptr;
    const cuda::ManyChunk* chunks = nullptr;
    std::vector<int64_t> first_chunk;
  };
  ManyTable upload_many_table(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts, const char* op);
  void upload(const void* host, void* device, size_t bytes);
  void download(void* host, const void* device, size_t bytes);  // waits once; then throws the device's errors

  // Pinned staging for small host-to-device copies (token ids, masks): from pageable memory cudaMemcpyAsync may
  // wait for the stream to drain; from pinned memory it does not. A slot is reused once its copy has finished
  // (its event), which a round-robin over kStagingSlots slots makes all but certain.
  // 64 slots of 256 KiB (16 MiB pinned): a step uploads ~6 small tables and token batches (an issue-6 batch side is
  // 32 KiB), so with --sync-every K the host can queue ~10 steps before it waits for a slot.
  static constexpr int kStagingSlots = 64;
  static constexpr size_t kStagingBytes = 256 << 10;
  char* staging_ = nullptr;  // kStagingSlots x kStagingBytes, cudaMallocHost
  cudaEvent_t staging_done_[kStagingSlots] = {};
  int next_slot_ = 0;
  // Held by upload and download: another host thread may copy tensors to or from the device while one computes
  // (a batch prefetched by a loader thread); the slots and the pinned error flags are shared (docs/cuda.md).
  std::mutex transfer_mutex_;
  std::atomic<int64_t> host_waits_{0}, uploads_{0}, staged_uploads_{0};

  // cuBLASLt, for GEMMs with a bias epilogue (cuda_gemm.cu). gemm_lt returns false where cuBLASLt has no
  // kernel for the configuration (the caller falls back). A plan (descriptors and the heuristic's algorithm) is
  // made once per configuration and kept, declined ones included: the heuristic query costs host time.
  struct LtPlan;
  bool gemm_lt(const GemmArgs& args, cublasLtEpilogue_t epilogue, void* bias);
  LtPlan* make_lt_plan(const GemmArgs& args, cublasLtEpilogue_t epilogue, void* bias);
  void destroy_lt_plans();
  static constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;  // what NVIDIA suggests for Hopper
  static constexpr int64_t kLtMaxDim = 65535 * 32;  // larger m, n or k: cuBLAS without the epilogues
  cublasLtHandle_t cublaslt_ = nullptr;
  void* lt_workspace_ = nullptr;  // kLtWorkspaceBytes of device memory
  std::vector<LtPlan*> lt_plans_;
  int64_t fused_bias_gemms_ = 0, unfused_bias_gemms_ = 0;

  // The device pointer arrays of GEMMs with two batch dims that do not collapse to one stride (cuda_gemm.cu), kept
  // in an arena by what they hold: the operands' addresses and layout. The caching allocator hands a training step
  // the same addresses every time, so from the second step on each array is found written already and its GEMM
  // needs no kernel first. An entry never goes stale (its content is a function of its key); when the arena is
  // full all entries are dropped and it is refilled from the start, which is safe because the kernels that
  // overwrite it are queued after the GEMMs that read it. Arrays too big for the arena get a buffer of their own
  // (`scratch`, kept by the caller until the GEMM is queued).
  uint64_t* pointer_arrays(const GemmArgs& g, Tensor& scratch);
  using PointerArraysKey = std::array<int64_t, 13>;
  struct PointerArraysHash {
    size_t operator()(const PointerArraysKey& k) const {
      uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over the words
      for (int64_t v : k) h = (h ^ (uint64_t)v) * 0x100000001b3ull;
      return (size_t)h;
    }
  };
  static constexpr size_t kPointerArenaBytes = size_t(4) << 20;
  char* pointer_arena_ = nullptr;  // kPointerArenaBytes of device memory
  size_t pointer_arena_used_ = 0;
  std::unordered_map<PointerArraysKey, size_t, PointerArraysHash> pointer_arrays_;  // key -> offset in the arena
  int64_t pointer_array_writes_ = 0, pointer_array_reuses_ = 0;

  // kColumnCounters zeroed counters, one per block of columns, for the norms' parameter-gradient kernel
  // (cuda_norm.cu): the block that finishes a column range last sums its partials and sets its counter back to 0.
  unsigned* column_counters_ = nullptr;

  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  int* error_flags_ = nullptr;  // device int, bits of cuda::DeviceErrorBit
  int* error_flags_host_ = nullptr;  // pinned: where download() reads them to
};

// Registers the CUDA backend and its caching allocator when at least one device is present; returns whether
// it did. backends/backend.cpp calls it once, the first time a CUDA device is asked for.
bool cuda_init();

}  // namespace skipgrad
