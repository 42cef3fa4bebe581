// CUDA optimizer updates: fused Adam/AdamW for one parameter (adam_update) and for all parameters of a step in
// one launch (adam_update_many, the multi-tensor-apply pattern). The per-element update is
// backends/optim_math.h's adam_element, which the CPU loop calls too.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "backends/cuda/cuda_common.cuh"
#include "backends/in_float32.h"
#include "backends/optim_math.h"

namespace skipgrad {

namespace {

using optim_math::adam_element;
using optim_math::adam_scalars;
using optim_math::AdamScalars;

// One parameter: a grid-stride loop over its n elements.
template <class T>
__global__ void adam_kernel(T* p, const T* g, T* m, T* v, int64_t n, AdamScalars<T> s, T wd, T decay,
                            bool decoupled) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    adam_element(p, g, m, v, i, s, wd, decay, decoupled);
}

// ---- multi-tensor apply: one launch over many parameters ----
// Each parameter is cut into chunks of kAdamChunk elements (the last one shorter); block b updates chunk b with
// a block-stride loop. Both tables are built on the host and uploaded in one copy per launch.
constexpr int64_t kAdamChunk = 1 << 16;

template <class T>
struct AdamTensorArgs {  // one parameter: its four tensors and its weight decay
  T* p;
  const T* g;
  T* m;
  T* v;
  T wd, decay;  // decay = 1 - lr wd
};

struct AdamChunk {  // elements [start, start + len) of parameter `tensor`
  int64_t start;
  int32_t tensor, len;
};

template <class T>
__global__ void adam_multi_kernel(const AdamTensorArgs<T>* tensors, const AdamChunk* chunks, AdamScalars<T> s,
                                  bool decoupled) {
  const AdamChunk c = chunks[blockIdx.x];
  const AdamTensorArgs<T> t = tensors[c.tensor];
  const int64_t end = c.start + c.len;
  for (int64_t i = c.start + threadIdx.x; i < end; i += blockDim.x)
    adam_element(t.p, t.g, t.m, t.v, i, s, t.wd, t.decay, decoupled);
}

// Whether the multi-tensor kernel can take entry t: four float32 or float64 tensors of one dtype and size,
// contiguous, on the GPU.
bool fusable(const AdamTensors& t) {
  const Tensor* all[] = {t.param, t.grad, t.m, t.v};
  const DType dt = t.param->dtype();
  if (dt != DType::F32 && dt != DType::F64) return false;
  for (const Tensor* x : all)
    if (!x->defined() || !x->device().is_cuda() || x->dtype() != dt || x->numel() != t.param->numel() ||
        !x->is_contiguous())
      return false;
  return true;
}

}  // namespace

void CudaBackend::adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                              double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
  if (in_float32::adam_update(*this, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step))
    return;
  const char* op = "adam_update";
  cuda::check_contiguous(op, {&param, &grad, &m, &v});
  const int64_t n = param.numel();
  if (n == 0) return;
  cuda::dispatch_float(param.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    adam_kernel<T><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(
        static_cast<T*>(param.data_ptr()), static_cast<const T*>(grad.data_ptr()), static_cast<T*>(m.data_ptr()),
        static_cast<T*>(v.data_ptr()), n, adam_scalars<T>(lr, beta1, beta2, eps, step), (T)weight_decay,
        (T)(1 - lr * weight_decay), decoupled);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

// One launch per dtype present (one in practice: a model is float32 or float64), no host synchronisation. When
// an entry is not fusable (a strided tensor, dtypes that differ within a parameter, a tensor not on the GPU), or
// two entries share memory, every entry goes through the per-tensor adam_update instead (which reports a strided
// tensor).
void CudaBackend::adam_update_many(const std::vector<AdamTensors>& ts, double lr, double beta1, double beta2,
                                   double eps, bool decoupled, int64_t step) {
  const char* op = "adam_update_many";
  bool one_launch = std::all_of(ts.begin(), ts.end(), fusable);
  if (one_launch) {  // a parameter listed twice would race in one launch
    std::vector<const Tensor*> written;
    for (const AdamTensors& t : ts) written.insert(written.end(), {t.param, t.m, t.v});
    one_launch = !cuda::any_overlap(written);
  }
  if (!one_launch) {
    Backend::adam_update_many(ts, lr, beta1, beta2, eps, decoupled, step);
    return;
  }
  for (DType dt : {DType::F32, DType::F64}) {
    cuda::dispatch_float(dt, op, [&](auto tag) {
      using T = decltype(tag);
      std::vector<AdamTensorArgs<T>> tensors;
      std::vector<AdamChunk> chunks;
      for (const AdamTensors& t : ts) {
        const int64_t n = t.param->numel();
        if (t.param->dtype() != dt || n == 0) continue;
        check(tensors.size() < (size_t)INT_MAX, op, ": too many parameters for one launch");
        const int32_t index = (int32_t)tensors.size();
        tensors.push_back({static_cast<T*>(t.param->data_ptr()), static_cast<const T*>(t.grad->data_ptr()),
                           static_cast<T*>(t.m->data_ptr()), static_cast<T*>(t.v->data_ptr()), (T)t.weight_decay,
                           (T)(1 - lr * t.weight_decay)});
        for (int64_t start = 0; start < n; start += kAdamChunk)
          chunks.push_back({start, index, (int32_t)std::min(kAdamChunk, n - start)});
      }
      if (chunks.empty()) return;
      check(chunks.size() <= (size_t)INT_MAX, op, ": ", chunks.size(), " chunks exceed the GPU grid");
      // One host buffer [tensor table | chunk table] (the chunk table 16-byte aligned), one upload into a
      // device buffer from the caching allocator; freeing it at the end of this scope is safe since any reuse
      // is queued on the same stream, after this kernel.
      const size_t tensor_bytes = (tensors.size() * sizeof(AdamTensorArgs<T>) + 15) / 16 * 16;
      const size_t bytes = tensor_bytes + chunks.size() * sizeof(AdamChunk);
      std::vector<char> host(bytes);
      std::memcpy(host.data(), tensors.data(), tensors.size() * sizeof(AdamTensorArgs<T>));
      std::memcpy(host.data() + tensor_bytes, chunks.data(), chunks.size() * sizeof(AdamChunk));
      Tensor table = Tensor::empty({(int64_t)((bytes + 7) / 8)}, DType::I64, Device::cuda());
      char* device = static_cast<char*>(table.data_ptr());
      upload(host.data(), device, bytes);
      adam_multi_kernel<T><<<(unsigned)chunks.size(), cuda::kThreads, 0, stream_>>>(
          reinterpret_cast<const AdamTensorArgs<T>*>(device),
          reinterpret_cast<const AdamChunk*>(device + tensor_bytes), adam_scalars<T>(lr, beta1, beta2, eps, step),
          decoupled);
      SG_CUDA_LAUNCH_CHECK(op);
    });
  }
}

}  // namespace skipgrad
