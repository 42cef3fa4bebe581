// CUDA elementwise kernels: fills, copies (one, or many pairs in one launch), random numbers, unary/binary maps
// and their derivatives, where, count_nonfinite. Every kernel is a grid-stride loop over the output's elements;
// operands may have any strides (broadcast views have zero strides), handled by cuda::Strided. The op is a run-time
// switch that is the same for every thread, which keeps the number of template instantiations (and nvcc's time)
// small.
#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "backends/cuda/cuda_common.cuh"
#include "backends/elementwise_math.h"
#include "backends/in_float32.h"
#include "tensor/random.h"

namespace skipgrad {

using cuda::grid_for;
using cuda::kThreads;
using cuda::make_strided;
using cuda::Strided;
using elementwise::binary_fn;
using elementwise::unary_fn;
using elementwise::unary_grad;

namespace {

template <class T>
__global__ void fill_kernel(T* out, Strided<1> s, int64_t n, T value) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[1];
    s.offsets(i, off);
    out[off[0]] = value;
  }
}

template <class S, class D>
__global__ void copy_kernel(const S* src, D* dst, Strided<2> s, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[2];
    s.offsets(i, off);
    dst[off[0]] = elementwise::convert<D>(src[off[1]]);
  }
}

// copy_many: one launch over many (source, destination) pairs; block b converts chunk b (cuda::ManyChunk). With a
// scale (scale_many: source and destination the same tensor), each element is multiplied by it, computed in the
// destination's compute type.
template <class S, class D>
__global__ void copy_many_kernel(const cuda::ManyPair* pairs, const cuda::ManyChunk* chunks, const double* scale) {
  using C = compute_t<D>;
  const cuda::ManyChunk c = chunks[blockIdx.x];
  const S* src = static_cast<const S*>(pairs[c.pair].src);
  D* dst = static_cast<D*>(pairs[c.pair].dst);
  if (scale) {
    const C s = C(*scale);
    for (int64_t i = c.start + threadIdx.x; i < c.start + c.len; i += blockDim.x) dst[i] = D(C(src[i]) * s);
  } else {
    for (int64_t i = c.start + threadIdx.x; i < c.start + c.len; i += blockDim.x)
      dst[i] = elementwise::convert<D>(src[i]);
  }
}

template <class T>
__global__ void arange_kernel(T* out, int64_t n, double start, double step) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = static_cast<T>(start + step * (double)i);
}

// Element i is a pure function of (seed, offset + i), or with row counters of (seed, rows[i / cols] + i % cols):
// the same numbers as the CPU backend (tensor/random.h). Uniform values are capped at `top`, the largest T below b:
// rounding to T can land on b (u within 2^-25 of 1), as the CPU's kernel does.
template <class T>
__global__ void random_kernel(T* out, int64_t n, bool normal, double a, double b, T top, uint64_t seed,
                              uint64_t offset, const int64_t* rows = nullptr, int64_t cols = 1) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint64_t c = rows ? (uint64_t)rows[i / cols] + (uint64_t)(i % cols) : offset + (uint64_t)i;
    if (normal) {
      out[i] = static_cast<T>(a + b * random_normal01(seed, c));  // mean a, std b
    } else {
      const T v = static_cast<T>(a + (b - a) * random_uniform01(seed, c));  // [a, b)
      out[i] = b > a && v > top ? top : v;
    }
  }
}

// operands: out, x
// T is the stored type, C = compute_t<T> the one computed in (float for bf16: one rounding, at the store).
template <class T, class C = compute_t<T>>
__global__ void unary_kernel(UnaryOp op, const T* x, T* out, Strided<2> s, int64_t n, C a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[2];
    s.offsets(i, off);
    out[off[0]] = T(unary_fn<C>(op, C(x[off[1]]), a));
  }
}

// operands: gx, x, y, gy;  gx = gy * f'(x) (ReLU: a select)
template <class T, class C = compute_t<T>>
__global__ void unary_backward_kernel(UnaryOp op, const T* x, const T* y, const T* gy, T* gx, Strided<4> s,
                                      int64_t n, C a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[4];
    s.offsets(i, off);
    gx[off[0]] = T(unary_grad<C>(op, C(gy[off[3]]), C(x[off[1]]), C(y[off[2]]), a));
  }
}

// operands: out, a, b (of T, or one of them bf16 where T is float: read as it is, widened)
template <class T, class TA = T, class TB = T, class C = compute_t<T>>
__global__ void binary_kernel(BinaryOp op, const TA* a, const TB* b, T* out, Strided<3> s, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[3];
    s.offsets(i, off);
    out[off[0]] = T(binary_fn<C>(op, C(a[off[1]]), C(b[off[2]])));
  }
}

// operands: out, cond, a, b
template <class C, class T>
__global__ void where_kernel(const C* cond, const T* a, const T* b, T* out, Strided<4> s, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[4];
    s.offsets(i, off);
    out[off[0]] = cond[off[1]] != C(0) ? a[off[2]] : b[off[3]];
  }
}

template <class T>
__global__ void count_nonfinite_kernel(const T* x, Strided<1> s, int64_t n, unsigned long long* count) {
  __shared__ unsigned long long scratch[32];
  unsigned long long local = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[1];
    s.offsets(i, off);
    local += !isfinite(x[off[0]]);
  }
  local = cuda::block_reduce(local, cuda::SumOp{}, scratch);
  if (threadIdx.x == 0 && local) atomicAdd(count, local);
}

}  // namespace

void CudaBackend::fill(Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  auto s = make_strided<1>(out.shape(), {&out.strides()}, "fill");
  cuda::dispatch_all(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    fill_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<T*>(out.data_ptr()), s, n,
                                                           static_cast<T>(value));
  });
  SG_CUDA_LAUNCH_CHECK("fill");
}

void CudaBackend::copy_device(const Tensor& src, Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  auto s = make_strided<2>(dst.shape(), {&dst.strides(), &src.strides()}, "copy");
  cuda::dispatch_all(src.dtype(), [&](auto stag) {
    cuda::dispatch_all(dst.dtype(), [&](auto dtag) {
      using S = decltype(stag);
      using D = decltype(dtag);
      copy_kernel<S, D><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<const S*>(src.data_ptr()),
                                                               static_cast<D*>(dst.data_ptr()), s, n);
    });
  });
  SG_CUDA_LAUNCH_CHECK("copy");
}

// One launch when every pair is contiguous on the GPU, of one size, and the pairs share one pair of floating dtypes;
// otherwise a copy per pair (Backend::copy_many).
void CudaBackend::copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts) {
  const char* op = "copy_many";
  check(srcs.size() == dsts.size(), op, ": ", srcs.size(), " sources for ", dsts.size(), " destinations");
  bool one_launch = !srcs.empty();
  for (size_t i = 0; i < srcs.size() && one_launch; i++) {
    const Tensor &a = *srcs[i], &b = *dsts[i];
    if (a.shape() != b.shape()) fail(op, ": pair ", i, " has shapes ", a.meta_str(), " and ", b.meta_str());
    one_launch = a.device().is_cuda() && b.device().is_cuda() && a.is_contiguous() && b.is_contiguous() &&
                 a.dtype() == srcs[0]->dtype() && b.dtype() == dsts[0]->dtype() && is_floating(a.dtype()) &&
                 is_floating(b.dtype());
  }
  if (one_launch) {  // the destinations, and sources that are not their own pair's destination, apart
    std::vector<const Tensor*> touched(dsts.begin(), dsts.end());
    for (size_t i = 0; i < srcs.size(); i++)
      if (srcs[i]->data_ptr() != dsts[i]->data_ptr()) touched.push_back(srcs[i]);
    one_launch = !cuda::any_overlap(touched);
  }
  if (!one_launch) return Backend::copy_many(srcs, dsts);
  copy_many_launch(srcs, dsts, nullptr);
}

// One launch when every tensor is contiguous and they share one floating dtype; otherwise Backend's default.
void CudaBackend::scale_many(const std::vector<Tensor*>& ts, const Tensor& scale) {
  check_scale_many(ts, scale);
  bool one_launch = !ts.empty() && scale.device().is_cuda();
  for (const Tensor* t : ts) one_launch = one_launch && t->is_contiguous() && t->dtype() == ts[0]->dtype();
  one_launch = one_launch && !cuda::any_overlap(std::vector<const Tensor*>(ts.begin(), ts.end()));
  if (!one_launch) return Backend::scale_many(ts, scale);
  Tensor s = scale;  // the kernel reads a double
  if (scale.dtype() != DType::F64 || !scale.is_contiguous()) {
    s = Tensor::empty({1}, DType::F64, scale.device());
    copy_device(scale.reshape({1}), s);
  }
  copy_many_launch(std::vector<const Tensor*>(ts.begin(), ts.end()), ts, static_cast<const double*>(s.data_ptr()));
}

CudaBackend::ManyTable CudaBackend::upload_many_table(const std::vector<const Tensor*>& srcs,
                                                      const std::vector<Tensor*>& dsts, const char* op) {
  std::vector<cuda::ManyPair> pairs;
  std::vector<cuda::ManyChunk> chunks;
  ManyTable t;
  for (size_t i = 0; i < srcs.size(); i++) {
    t.first_chunk.push_back((int64_t)chunks.size());
    const int64_t n = srcs[i]->numel();
    if (n == 0) continue;
    check(pairs.size() < (size_t)INT_MAX, op, ": too many tensors for one launch");
    pairs.push_back({srcs[i]->data_ptr(), dsts.empty() ? nullptr : dsts[i]->data_ptr()});
    for (int64_t start = 0; start < n; start += cuda::kManyChunk)
      chunks.push_back({start, (int32_t)(pairs.size() - 1), (int32_t)std::min(cuda::kManyChunk, n - start)});
  }
  t.first_chunk.push_back((int64_t)chunks.size());
  if (chunks.empty()) return t;
  check(chunks.size() <= (size_t)INT_MAX, op, ": ", chunks.size(), " chunks exceed the GPU grid");
  // [pair table | chunk table (16-byte aligned)], uploaded in one copy
  const size_t pair_bytes = (pairs.size() * sizeof(cuda::ManyPair) + 15) / 16 * 16;
  const size_t bytes = pair_bytes + chunks.size() * sizeof(cuda::ManyChunk);
  std::vector<char> host(bytes);
  std::memcpy(host.data(), pairs.data(), pairs.size() * sizeof(cuda::ManyPair));
  std::memcpy(host.data() + pair_bytes, chunks.data(), chunks.size() * sizeof(cuda::ManyChunk));
  t.storage = Tensor::empty({(int64_t)((bytes + 7) / 8)}, DType::I64, Device::cuda());
  char* device = static_cast<char*>(t.storage.data_ptr());
  upload(host.data(), device, bytes);
  t.pairs = reinterpret_cast<const cuda::ManyPair*>(device);
  t.chunks = reinterpret_cast<const cuda::ManyChunk*>(device + pair_bytes);
  return t;
}

void CudaBackend::copy_many_launch(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts,
                                   const double* scale) {
  const char* op = scale ? "scale_many" : "copy_many";
  const ManyTable t = upload_many_table(srcs, dsts, op);
  const int64_t n_chunks = t.first_chunk.back();
  if (n_chunks == 0) return;
  cuda::dispatch_float_bf16(srcs[0]->dtype(), op, [&](auto stag) {
    cuda::dispatch_float_bf16(dsts[0]->dtype(), op, [&](auto dtag) {
      using S = decltype(stag);
      using D = decltype(dtag);
      copy_many_kernel<S, D><<<(unsigned)n_chunks, kThreads, 0, stream_>>>(t.pairs, t.chunks, scale);
    });
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::arange(Tensor& out, double start, double step) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (!out.is_contiguous())
    fail("arange", ": output must be contiguous, got ", out.meta_str());
  cuda::dispatch_all(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    arange_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<T*>(out.data_ptr()), n, start, step);
  });
  SG_CUDA_LAUNCH_CHECK("arange");
}

void CudaBackend::random_uniform(Tensor& out, double low, double high, uint64_t seed, uint64_t offset) {
  if (in_float32::random_uniform(*this, out, low, high, seed, offset)) return;
  const int64_t n = out.numel();
  if (n == 0) return;
  if (!out.is_contiguous())
    fail("rand", ": output must be contiguous, got ", out.meta_str());
  cuda::dispatch_float(out.dtype(), "rand", [&](auto tag) {
    using T = decltype(tag);
    const T top = std::nextafter(static_cast<T>(high), static_cast<T>(low));
    random_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<T*>(out.data_ptr()), n, false, low, high,
                                                             top, seed, offset);
  });
  SG_CUDA_LAUNCH_CHECK("rand");
}

void CudaBackend::random_uniform_rows(Tensor& out, const Tensor& row_counters, uint64_t seed) {
  check_random_rows_operands(out, row_counters);
  const int64_t n = out.numel();
  if (n == 0) return;
  random_kernel<double><<<grid_for(n), kThreads, 0, stream_>>>(
      static_cast<double*>(out.data_ptr()), n, false, 0.0, 1.0, std::nextafter(1.0, 0.0), seed, 0,
      static_cast<const int64_t*>(row_counters.data_ptr()), out.size(1));
  SG_CUDA_LAUNCH_CHECK("rand_rows");
}

void CudaBackend::random_normal(Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) {
  if (in_float32::random_normal(*this, out, mean, std, seed, offset)) return;
  const int64_t n = out.numel();
  if (n == 0) return;
  if (!out.is_contiguous())
    fail("randn", ": output must be contiguous, got ", out.meta_str());
  cuda::dispatch_float(out.dtype(), "randn", [&](auto tag) {
    using T = decltype(tag);
    random_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<T*>(out.data_ptr()), n, true, mean, std,
                                                             T(0), seed, offset);
  });
  SG_CUDA_LAUNCH_CHECK("randn");
}

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) {
  const int64_t n = out.numel();
  if (n == 0) return;
  auto s = make_strided<2>(out.shape(), {&out.strides(), &x.strides()}, "unary");
  cuda::dispatch_float_bf16(x.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    unary_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(op, static_cast<const T*>(x.data_ptr()),
                                                            static_cast<T*>(out.data_ptr()), s, n,
                                                            (compute_t<T>)alpha);
  });
  SG_CUDA_LAUNCH_CHECK("unary");
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                                 double alpha) {
  const int64_t n = gx.numel();
  if (n == 0) return;
  const Tensor& yy = y.defined() ? y : x;  // y is only read by ops whose derivative uses it
  auto s = make_strided<4>(gx.shape(), {&gx.strides(), &x.strides(), &yy.strides(), &gy.strides()},
                           "unary_backward");
  cuda::dispatch_float_bf16(x.dtype(), "unary_backward", [&](auto tag) {
    using T = decltype(tag);
    unary_backward_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(
        op, static_cast<const T*>(x.data_ptr()), static_cast<const T*>(yy.data_ptr()),
        static_cast<const T*>(gy.data_ptr()), static_cast<T*>(gx.data_ptr()), s, n, (compute_t<T>)alpha);
  });
  SG_CUDA_LAUNCH_CHECK("unary_backward");
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  auto s = make_strided<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()}, "binary");
  if (!check_binary_dtypes("binary", a, b, out)) {
    cuda::dispatch_all(out.dtype(), [&](auto tag) {
      using T = decltype(tag);
      binary_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(op, static_cast<const T*>(a.data_ptr()),
                                                               static_cast<const T*>(b.data_ptr()),
                                                               static_cast<T*>(out.data_ptr()), s, n);
    });
  } else if (a.dtype() == DType::BF16) {  // float32 out, one operand bf16
    binary_kernel<float, bf16, float><<<grid_for(n), kThreads, 0, stream_>>>(
        op, static_cast<const bf16*>(a.data_ptr()), static_cast<const float*>(b.data_ptr()),
        static_cast<float*>(out.data_ptr()), s, n);
  } else {
    binary_kernel<float, float, bf16><<<grid_for(n), kThreads, 0, stream_>>>(
        op, static_cast<const float*>(a.data_ptr()), static_cast<const bf16*>(b.data_ptr()),
        static_cast<float*>(out.data_ptr()), s, n);
  }
  SG_CUDA_LAUNCH_CHECK("binary");
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  auto s = make_strided<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()}, "where");
  cuda::dispatch_all(cond.dtype(), [&](auto ctag) {
    cuda::dispatch_all(out.dtype(), [&](auto tag) {
      using C = decltype(ctag);
      using T = decltype(tag);
      where_kernel<C, T><<<grid_for(n), kThreads, 0, stream_>>>(
          static_cast<const C*>(cond.data_ptr()), static_cast<const T*>(a.data_ptr()),
          static_cast<const T*>(b.data_ptr()), static_cast<T*>(out.data_ptr()), s, n);
    });
  });
  SG_CUDA_LAUNCH_CHECK("where");
}

// Synchronises: the count is read back to the host.
int64_t CudaBackend::count_nonfinite(const Tensor& x) {
  if (int64_t bad = 0; in_float32::count_nonfinite(*this, x, bad)) return bad;
  const int64_t n = x.numel();
  if (n == 0) return 0;
  auto s = make_strided<1>(x.shape(), {&x.strides()}, "count_nonfinite");
  Tensor counter = Tensor::zeros({1}, DType::I64, x.device());
  auto* count = static_cast<unsigned long long*>(counter.data_ptr());
  cuda::dispatch_float(x.dtype(), "count_nonfinite", [&](auto tag) {
    using T = decltype(tag);
    count_nonfinite_kernel<T><<<grid_for(n), kThreads, 0, stream_>>>(static_cast<const T*>(x.data_ptr()), s, n,
                                                                       count);
  });
  SG_CUDA_LAUNCH_CHECK("count_nonfinite");
  unsigned long long bad = 0;
  download(&bad, count, sizeof(bad));  // waits for the stream
  return (int64_t)bad;
}

}  // namespace skipgrad
