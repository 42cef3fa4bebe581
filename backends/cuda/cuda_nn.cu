// CUDA kernels for embedding gather/scatter-add, cross entropy with label smoothing, dropout masks and the rotary
// embedding.
//
// Bad ids and targets cannot be reported without a host synchronisation, so the kernels set a bit in the
// backend's device error flags (and write 0 / NaN); the next synchronising call (a copy to the host, e.g.
// reading the loss, or count_nonfinite) throws a skipgrad::Error naming the op.
#include <climits>
#include <cmath>

#include "backends/cuda/cuda_common.cuh"
#include "backends/in_float32.h"
#include "tensor/random.h"

namespace skipgrad {

namespace {

// out[i, c] = weight[ids[i], c]
template <class T>
__global__ void embedding_kernel(const T* w, const int64_t* ids, T* out, int64_t n, int64_t V, int64_t D,
                                 int* error_flags) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * D; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / D, c = e % D, id = ids[i];
    if (id < 0 || id >= V) {
      out[e] = T(0);
      if (c == 0) atomicOr(error_flags, id == kGatherOutOfRange ? cuda::kBadGatherIndex : cuda::kBadEmbeddingId);
    } else {
      out[e] = w[id * D + c];
    }
  }
}

// gweight[ids[i], c] += gout[i, c], except rows of padding_idx. Atomic adds: repeated ids are summed in an
// unspecified order, so float32 results may differ in the last bits from run to run.
template <class T>
__global__ void embedding_backward_kernel(const int64_t* ids, const T* g, T* gw, int64_t n, int64_t V, int64_t D,
                                          int64_t padding_idx) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * D; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / D, c = e % D, id = ids[i];
    if (id == padding_idx || id < 0 || id >= V) continue;
    atomicAdd(gw + id * D + c, g[e]);
  }
}

// One block per row: lse = max + log(sum(exp(x - max)));
// loss = lse - (1-ls) * x[t] - ls * mean_j x_j   (0 where t == ignore_index)
// stats[r] = (max, log(sum(exp(x - max)))): the backward's exp((x - max) - log_s) carries no rounding of lse.
// T: the logits' type; S: the loss's and stats' (float for bf16 logits, else T).
template <class T, class S = T>
__global__ void cross_entropy_kernel(const T* logits, const int64_t* targets, int64_t ignore_index, double ls,
                                     S* loss, S* stats, int64_t C, int* error_flags) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const T* x = logits + r * C;
  double mx = -INFINITY, sum_x = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    mx = fmax(mx, (double)x[c]);
    sum_x += (double)x[c];
  }
  mx = cuda::block_reduce(mx, cuda::MaxOp{}, scratch);
  sum_x = cuda::block_reduce(sum_x, cuda::SumOp{}, scratch);
  double s = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += exp((double)x[c] - mx);
  s = cuda::block_reduce(s, cuda::SumOp{}, scratch);
  if (threadIdx.x != 0) return;
  const double log_s = log(s), l = mx + log_s;
  stats[2 * r] = (S)mx;
  stats[2 * r + 1] = (S)log_s;
  const int64_t t = targets[r];
  if (t == ignore_index) {
    loss[r] = S(0);
  } else if (t < 0 || t >= C) {
    loss[r] = (S)NAN;
    atomicOr(error_flags, cuda::kBadTarget);
  } else {
    // Skip the smoothing term when ls == 0: a -inf logit (a masked class) would make 0 * -inf = NaN.
    loss[r] = (S)(l - (1 - ls) * (double)x[t] - (ls > 0 ? ls * sum_x / C : 0.0));
  }
}

// glogits[r, c] = gloss[r] * (exp((x - max) - log_s) - ls/C - (1-ls) [c == t]);  0 where t == ignore_index
template <class T, class S = T>
__global__ void cross_entropy_backward_kernel(const T* logits, const int64_t* targets, const S* stats, const S* gloss,
                                              int64_t ignore_index, double ls, T* glogits, int64_t C) {
  const int64_t r = blockIdx.x;
  const int64_t t = targets[r];
  T* o = glogits + r * C;
  if (t == ignore_index || t < 0 || t >= C) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = T(0);
    return;
  }
  const T* x = logits + r * C;
  const S g = gloss[r], m = stats[2 * r], log_s = stats[2 * r + 1], smooth = (S)(ls / C), hit = (S)(1 - ls);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    o[c] = T(g * (exp((S(x[c]) - m) - log_s) - smooth - (c == t ? hit : S(0))));
}

// y[i] = x[i] * mask_i, mask_i = (u_i >= p) / (1 - p), u_i uniform from (seed, offset + i): the CPU backend's numbers
template <class T, class C = compute_t<T>>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const C keep = (C)(1.0 / (1.0 - p));
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    y[i] = T(C(x[i]) * (random_uniform01(seed, offset + (uint64_t)i) >= p ? keep : C(0)));
}

// Rotary embedding (Backend::rotary), one thread per pair (x_i, x_{i+h}) of a row (b, hd, t) of x [B, H, T, 2h]:
//   y_i = x_i c - x_{i+h} s,  y_{i+h} = x_{i+h} c + x_i s   (c, s: the angle of (b, t, i); s negated when inverse)
// Strides in elements; C is the angles' dtype (x's, float32 for bf16).
struct RotaryDims {
  int64_t B, H, T, half, angle_batch;  // angle_batch: elements between batch entries of cos/sin (0: shared)
  int64_t xs[4], ys[4];
};
template <class T, class C = compute_t<T>>
__global__ void rotary_kernel(const T* x, const C* cos, const C* sin, T* y, RotaryDims d, C sign) {
  const int64_t n = d.B * d.H * d.T * d.half;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e % d.half, row = e / d.half, t = row % d.T, h = row / d.T % d.H, b = row / (d.T * d.H);
    const T* xr = x + b * d.xs[0] + h * d.xs[1] + t * d.xs[2];
    T* yr = y + b * d.ys[0] + h * d.ys[1] + t * d.ys[2];
    const int64_t a = b * d.angle_batch + t * d.half + i;
    const C c = cos[a], s = sign * sin[a], x1 = C(xr[i * d.xs[3]]), x2 = C(xr[(i + d.half) * d.xs[3]]);
    yr[i * d.ys[3]] = T(x1 * c - x2 * s);
    yr[(i + d.half) * d.ys[3]] = T(x2 * c + x1 * s);
  }
}

}  // namespace

void CudaBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  if (in_float32::embedding(*this, weight, ids, out)) return;
  const char* op = "embedding";
  cuda::check_contiguous(op, {&weight, &ids, &out});
  if (ids.dtype() != DType::I64)
    fail(op, ": ids must be int64, got ", ids.meta_str());
  const int64_t V = weight.size(0), D = weight.size(1), N = ids.numel();
  if (N * D == 0) return;
  cuda::dispatch_float(weight.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    embedding_kernel<T><<<cuda::grid_for(N * D), cuda::kThreads, 0, stream_>>>(
        static_cast<const T*>(weight.data_ptr()), static_cast<const int64_t*>(ids.data_ptr()),
        static_cast<T*>(out.data_ptr()), N, V, D, error_flags_);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::embedding_backward(const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) {
  if (in_float32::embedding_backward(*this, ids, gout, gweight, padding_idx)) return;
  const char* op = "embedding_backward";
  cuda::check_contiguous(op, {&ids, &gout, &gweight});
  if (ids.dtype() != DType::I64)
    fail(op, ": ids must be int64, got ", ids.meta_str());
  const int64_t V = gweight.size(0), D = gweight.size(1), N = ids.numel();
  if (N * D == 0) return;
  cuda::dispatch_float(gweight.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    embedding_backward_kernel<T><<<cuda::grid_for(N * D), cuda::kThreads, 0, stream_>>>(
        static_cast<const int64_t*>(ids.data_ptr()), static_cast<const T*>(gout.data_ptr()),
        static_cast<T*>(gweight.data_ptr()), N, V, D, padding_idx);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                double label_smoothing, Tensor& loss, Tensor& stats) {
  const char* op = "cross_entropy";
  if (!cuda::bf16_with_float32({&logits}, {&loss, &stats}) &&
      in_float32::cross_entropy(*this, logits, targets, ignore_index, label_smoothing, loss, stats))
    return;
  cuda::check_contiguous(op, {&logits, &targets, &loss, &stats});
  if (targets.dtype() != DType::I64)
    fail(op, ": targets must be int64, got ", targets.meta_str());
  const int64_t C = logits.dim() ? logits.shape().back() : 1, R = C ? logits.numel() / C : 0;
  if (R == 0) return;
  check(C > 0 && R <= INT_MAX, op, ": logits ", logits.shape(), " have no classes or more rows than the GPU grid allows");
  cuda::dispatch_with_float32_params(logits.dtype(), op, [&](auto ltag, auto stag) {
    using T = decltype(ltag);
    using S = decltype(stag);
    cross_entropy_kernel<T, S><<<(unsigned)R, cuda::row_threads(C), 0, stream_>>>(
        static_cast<const T*>(logits.data_ptr()), static_cast<const int64_t*>(targets.data_ptr()), ignore_index,
        label_smoothing, static_cast<S*>(loss.data_ptr()), static_cast<S*>(stats.data_ptr()), C, error_flags_);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& stats,
                                         const Tensor& gloss, int64_t ignore_index, double label_smoothing,
                                         Tensor& glogits) {
  const char* op = "cross_entropy_backward";
  if (!cuda::bf16_with_float32({&logits, &glogits}, {&stats, &gloss}) &&
      in_float32::cross_entropy_backward(*this, logits, targets, stats, gloss, ignore_index, label_smoothing, glogits))
    return;
  cuda::check_contiguous(op, {&logits, &targets, &stats, &gloss, &glogits});
  const int64_t C = logits.dim() ? logits.shape().back() : 1, R = C ? logits.numel() / C : 0;
  if (R == 0 || C == 0) return;
  check(R <= INT_MAX, op, ": logits ", logits.shape(), " have more rows than the GPU grid allows");
  cuda::dispatch_with_float32_params(logits.dtype(), op, [&](auto ltag, auto stag) {
    using T = decltype(ltag);
    using S = decltype(stag);
    cross_entropy_backward_kernel<T, S><<<(unsigned)R, cuda::row_threads(C), 0, stream_>>>(
        static_cast<const T*>(logits.data_ptr()), static_cast<const int64_t*>(targets.data_ptr()),
        static_cast<const S*>(stats.data_ptr()), static_cast<const S*>(gloss.data_ptr()), ignore_index,
        label_smoothing, static_cast<T*>(glogits.data_ptr()), C);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::dropout(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) {
  const char* op = "dropout";
  check_dropout_operands(x, y);
  const int64_t n = x.numel();
  if (n == 0) return;
  cuda::dispatch_float_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    dropout_kernel<T><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(static_cast<const T*>(x.data_ptr()),
                                                                           static_cast<T*>(y.data_ptr()), n, p, seed,
                                                                           offset);
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

void CudaBackend::rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) {
  const char* op = "rotary";
  check_rotary_operands(x, cos, sin, out);
  RotaryDims d{x.size(0), x.size(1), x.size(2), x.size(3) / 2, cos.size(0) == 1 ? 0 : x.size(2) * (x.size(3) / 2),
               {}, {}};
  for (int k = 0; k < 4; k++) {
    d.xs[k] = x.strides()[k];
    d.ys[k] = out.strides()[k];
  }
  const int64_t n = d.B * d.H * d.T * d.half;
  if (n == 0) return;
  cuda::dispatch_float_bf16(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    rotary_kernel<T><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(
        static_cast<const T*>(x.data_ptr()), static_cast<const C*>(cos.data_ptr()),
        static_cast<const C*>(sin.data_ptr()), static_cast<T*>(out.data_ptr()), d, inverse ? C(-1) : C(1));
  });
  SG_CUDA_LAUNCH_CHECK(op);
}

}  // namespace skipgrad
