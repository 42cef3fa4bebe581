// CUDA device setup: registration, the caching device allocator, host<->device copies, device error flags.
#include <cstring>
#include <string>

#include "backends/cuda/cuda_common.cuh"
#include "tensor/allocator.h"

namespace skipgrad {

namespace {
// Raw allocator functions for tensor/allocator.h's CachingAllocator. A cudaMalloc out of memory returns nullptr
// so the caching allocator can free its cache and retry before it reports out of memory. Any other error is
// thrown as it is: after a kernel faults (cudaErrorIllegalAddress, ...) every runtime call returns that error
// until the process exits, and an allocation may be the first call to see it; it is not a lack of memory.
void* cuda_raw_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaSuccess) return p;
  (void)cudaGetLastError();  // an out-of-memory error is not sticky: clear it
  if (err == cudaErrorMemoryAllocation) return nullptr;
  fail("allocate", ": CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in cudaMalloc of ",
       bytes, " bytes: an earlier kernel or copy failed, and the GPU is unusable until the process restarts");
}
CudaBackend* the_backend = nullptr;  // set by cuda_init

// Never throws: it may run while the process exits and the CUDA runtime is already unloading. cudaFree "may
// perform implicit synchronization" (CUDA's API notes): the wait is made explicit, on the backend's stream, and
// counted in host_waits(), so that a training step that frees (the cache over its limit) shows in the tests.
void cuda_raw_free(void* p) {
  if (the_backend) the_backend->wait_before_free();
  if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}
}  // namespace

bool cuda_init() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1) {
    (void)cudaGetLastError();  // no driver or no device: not an error, the backend is simply absent
    return false;
  }
  SG_CUDA_CHECK("cuda_init", cudaSetDevice(0));
  // Both live for the whole process on purpose: tensors in static objects may be freed after main() returns.
  static CudaBackend* backend = new CudaBackend();
  the_backend = backend;
  static CachingAllocator* allocator = new CachingAllocator(cuda_raw_alloc, cuda_raw_free);
  set_device_allocator(Device::Kind::CUDA, allocator);
  register_backend(Device::Kind::CUDA, backend);
  return true;
}

CudaBackend::CudaBackend() {
  SG_CUDA_CHECK("cuda_init", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SG_CUBLAS_CHECK("cuda_init", cublasCreate(&cublas_));
  SG_CUBLAS_CHECK("cuda_init", cublasSetStream(cublas_, stream_));
  // Split-K partial sums in the compute type (float32), never in a narrower output type (bf16): "float32
  // accumulated" holds for every GEMM (cuBLASLt's plans say the same with a reduction scheme mask)
  SG_CUBLAS_CHECK("cuda_init", cublasSetMathMode(cublas_, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                                         CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
  SG_CUBLAS_CHECK("cuda_init", cublasLtCreate(&cublaslt_));
  SG_CUDA_CHECK("cuda_init", cudaMalloc(&lt_workspace_, kLtWorkspaceBytes));
  SG_CUDA_CHECK("cuda_init", cudaMalloc(&error_flags_, sizeof(int)));
  SG_CUDA_CHECK("cuda_init", cudaMallocHost(&error_flags_host_, sizeof(int)));
  *error_flags_host_ = 0;
  SG_CUDA_CHECK("cuda_init", cudaMemsetAsync(error_flags_, 0, sizeof(int), stream_));
  SG_CUDA_CHECK("cuda_init", cudaMalloc(&column_counters_, kColumnCounters * sizeof(unsigned)));
  SG_CUDA_CHECK("cuda_init", cudaMalloc(&pointer_arena_, kPointerArenaBytes));
  SG_CUDA_CHECK("cuda_init", cudaMemsetAsync(column_counters_, 0, kColumnCounters * sizeof(unsigned), stream_));
  SG_CUDA_CHECK("cuda_init", cudaMallocHost(&staging_, kStagingSlots * kStagingBytes));
  for (cudaEvent_t& e : staging_done_)
    SG_CUDA_CHECK("cuda_init", cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

CudaBackend::~CudaBackend() {
  for (cudaEvent_t e : timing_events_) cudaEventDestroy(e);
  for (cudaEvent_t e : staging_done_)
    if (e) cudaEventDestroy(e);
  if (staging_) cudaFreeHost(staging_);
  if (cublas_) cublasDestroy(cublas_);
  destroy_lt_plans();
  if (cublaslt_) cublasLtDestroy(cublaslt_);
  if (lt_workspace_) cudaFree(lt_workspace_);
  if (error_flags_) cudaFree(error_flags_);
  if (error_flags_host_) cudaFreeHost(error_flags_host_);
  if (column_counters_) cudaFree(column_counters_);
  if (pointer_arena_) cudaFree(pointer_arena_);
  if (stream_) cudaStreamDestroy(stream_);
}

struct CudaBackend::EventMark final : Backend::TimeMark {
  CudaBackend* owner = nullptr;
  cudaEvent_t event = nullptr;
  ~EventMark() override { owner->timing_events_.push_back(event); }
};

std::unique_ptr<Backend::TimeMark> CudaBackend::time_mark() {
  cudaEvent_t e = nullptr;
  if (timing_events_.empty()) {
    SG_CUDA_CHECK("profiler", cudaEventCreate(&e));
  } else {
    e = timing_events_.back();
    timing_events_.pop_back();
  }
  auto mark = std::make_unique<EventMark>();
  mark->owner = this;
  mark->event = e;
  SG_CUDA_CHECK("profiler", cudaEventRecord(e, stream_));
  return mark;
}

double CudaBackend::elapsed_ms(const TimeMark& from, const TimeMark& to) {
  auto* a = dynamic_cast<const EventMark*>(&from);
  auto* b = dynamic_cast<const EventMark*>(&to);
  check(a && b && a->owner == this && b->owner == this, "cuda.elapsed_ms",
        ": the marks were not made by the CUDA backend");
  if (cudaEventQuery(b->event) == cudaErrorNotReady) {
    (void)cudaGetLastError();  // the query's "not ready" is no error of the next launch
    host_waits_++;
    SG_CUDA_CHECK("profiler", cudaEventSynchronize(b->event));
  }
  float ms = 0;
  SG_CUDA_CHECK("profiler", cudaEventElapsedTime(&ms, a->event, b->event));
  return ms;
}

void CudaBackend::wait_before_free() {
  if (cudaStreamSynchronize(stream_) != cudaSuccess) (void)cudaGetLastError();  // never throws: see cuda_raw_free
  host_waits_++;
}

void CudaBackend::check_device_errors() { download(nullptr, nullptr, 0); }

// device -> host: the error flags' copy into pinned memory, then the data's, then one wait for the stream. (A
// copy into pageable memory returns only when it is done, so the second wait finds the stream drained: one round
// trip per read, not one for the data and one more for the flags.)
void CudaBackend::download(void* host, const void* device, size_t bytes) {
  std::lock_guard<std::mutex> lock(transfer_mutex_);
  SG_CUDA_CHECK("cuda", cudaMemcpyAsync(error_flags_host_, error_flags_, sizeof(int), cudaMemcpyDeviceToHost,
                                        stream_));
  if (bytes > 0) SG_CUDA_CHECK("copy", cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  SG_CUDA_CHECK("cuda", cudaStreamSynchronize(stream_));
  host_waits_++;
  const int flags = *error_flags_host_;
  if (flags == 0) return;
  *error_flags_host_ = 0;
  SG_CUDA_CHECK("cuda", cudaMemsetAsync(error_flags_, 0, sizeof(int), stream_));
  if (flags & cuda::kBadEmbeddingId)
    fail("embedding", ": an id was out of range [0, num_embeddings) (found on the GPU; its output rows are 0). From "
         "a Transformer: a token id past the vocabulary, or a sequence longer than max_positions (the positions "
         "table; the CPU names which)");
  if (flags & cuda::kBadGatherIndex)
    fail("gather", ": an index was out of range [0, size of x at dim) (found on the GPU; its outputs are 0). "
         "index_select and topk's values read through gather; the CPU names the index and its position");
  fail("cross_entropy", ": a target was out of range [0, num_classes) and not ignore_index (found on the GPU; its "
       "loss is NaN)");
}

// host -> device without making the host wait: up to kStagingBytes through a pinned slot (the host copy is
// ours, so the caller may free its buffer at once), larger copies (weights moved by Module::to) straight from
// the pageable buffer, for which the driver stages and may wait for the stream.
void CudaBackend::upload(const void* host, void* device, size_t bytes) {
  const char* op = "copy";
  std::lock_guard<std::mutex> lock(transfer_mutex_);
  uploads_++;
  if (bytes > kStagingBytes) {
    SG_CUDA_CHECK(op, cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
    host_waits_++;  // from pageable memory the driver may wait for the stream first: counted as a wait
    return;
  }
  const int slot = next_slot_;
  next_slot_ = (next_slot_ + 1) % kStagingSlots;
  const cudaError_t state = cudaEventQuery(staging_done_[slot]);  // cudaSuccess also for a never-recorded event
  if (state == cudaErrorNotReady) {
    // "not ready" is no failure, but the runtime keeps it as the last error, which the next launch check would
    // report as the failure of whatever op comes next: take it off (PyTorch's CUDAEvent::query does the same)
    (void)cudaGetLastError();
    SG_CUDA_CHECK(op, cudaEventSynchronize(staging_done_[slot]));  // 16 uploads still in flight: wait for this one
    host_waits_++;
  } else {
    SG_CUDA_CHECK(op, state);
  }
  char* pinned = staging_ + (size_t)slot * kStagingBytes;
  std::memcpy(pinned, host, bytes);
  SG_CUDA_CHECK(op, cudaMemcpyAsync(device, pinned, bytes, cudaMemcpyHostToDevice, stream_));
  SG_CUDA_CHECK(op, cudaEventRecord(staging_done_[slot], stream_));
  staged_uploads_++;
}

// dst = src. Within the GPU: a strided, converting kernel. Between host and device: cudaMemcpy of contiguous
// data (the caller makes both sides contiguous); a dtype change is done on the side that is the GPU.
void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  const char* op = "copy";
  check(src.shape() == dst.shape(), op, ": shapes differ: ", src.shape(), " -> ", dst.shape());
  if (src.device().is_cuda() && dst.device().is_cuda()) {
    copy_device(src, dst);
    return;
  }
  if (!(src.is_contiguous() && dst.is_contiguous()))
    fail(op, ": host<->device copies need contiguous tensors, got ", src.meta_str(), " -> ", dst.meta_str());
  if (src.numel() == 0) return;
  if (src.dtype() != dst.dtype()) {
    if (dst.device().is_cuda()) {  // host -> device as src's dtype, then convert on the GPU
      Tensor staged = Tensor::empty(src.shape(), src.dtype(), dst.device());
      copy(src, staged);
      copy_device(staged, dst);
    } else {  // convert on the GPU, then device -> host
      Tensor staged = Tensor::empty(src.shape(), dst.dtype(), src.device());
      copy_device(src, staged);
      copy(staged, dst);
    }
    return;
  }
  if (dst.device().is_cuda()) {
    upload(src.data_ptr(), dst.data_ptr(), src.nbytes());
  } else {
    download(dst.data_ptr(), src.data_ptr(), src.nbytes());  // waits for the stream, so dst is ready
  }
}

}  // namespace skipgrad
