// CUDA row kernels: softmax / log_softmax, layer_norm and rms_norm, forward and backward; DyT, the norms' element-wise
// stand-in, with them (its backward's parameter gradients are the same column sums).
// x is a contiguous [rows, cols] buffer; one block per row, statistics reduced across the block with warp
// shuffles and accumulated in double as on the CPU. The parameter gradients (gamma, beta, rms weight) are
// column sums over rows, done deterministically in one launch: partial sums over row chunks, then the chunks in
// order by the block that finishes last.
#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "backends/cuda/cuda_common.cuh"
#include "backends/in_float32.h"

namespace skipgrad {

namespace {

struct Rows {
  int64_t rows, cols;
};
Rows rows_of(const Tensor& x, const char* op) {
  if (!x.is_contiguous())
    fail(op, ": expected a contiguous input on the GPU, got ", x.meta_str());
  const int64_t cols = x.dim() ? x.shape().back() : 1;
  return {cols ? x.numel() / cols : 0, cols};
}
// One block per row along gridDim.x, which holds up to 2^31 - 1 blocks.
unsigned row_blocks(int64_t rows) {
  check(rows <= INT_MAX, "norm", ": ", rows, " rows exceed the GPU grid limit of ", INT_MAX);
  return (unsigned)rows;
}

// Softmax rows go to a group of threads each: a warp (kWarpRow) when rows are short (attention: as many columns
// as keys), so a block holds several rows and no barrier is needed; the whole block (kBlockRow) otherwise.
constexpr int kWarpRow = 32, kBlockRow = 0;
constexpr int64_t kWarpRowMaxCols = 1024;  // at most 32 elements per lane

// This thread's row (rows >= `rows` have nothing to do: a whole warp, or no block at all) and its lane.
template <int G>
__device__ __forceinline__ void row_and_lane(int64_t& row, int& lane, int& group) {
  group = G == kWarpRow ? kWarpRow : (int)blockDim.x;
  row = (int64_t)blockIdx.x * (blockDim.x / group) + threadIdx.x / group;
  lane = (int)(threadIdx.x % group);
}

// y = exp(x - max) / sum(exp(x - max));  log: y = x - max - log(sum(exp(x - max)))
// Masked columns (Backend's SoftmaxMask) read as -inf: with causal_queries = Q > 0, row r keeps its first
// (r mod Q) + cols - Q + 1 columns; with pad (key_padding), row r drops the columns set in pad's row
// r / rows_per_batch. With ALiBi (slopes defined), column c of row r = (b*H + h)*Tq + i reads
// x - slopes[h] * |qpos[b, i] - kpos[b, c]|. T is the stored type, C = compute_t<T> the one computed in (float for
// bf16, and the slopes' type).
template <class C>
struct Alibi {
  const C* slopes = nullptr;  // [H]; null: no ALiBi
  const int64_t *qpos = nullptr, *kpos = nullptr;
  int64_t heads = 1, queries = 1;
};

template <class T, int G, class C = compute_t<T>>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t cols, bool log, int64_t causal_queries,
                               const int64_t* pad, int64_t rows_per_batch, Alibi<C> alibi) {
  __shared__ double scratch[32];
  int64_t row;
  int lane, group;
  row_and_lane<G>(row, lane, group);
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  const int64_t keep = causal_queries > 0 ? row % causal_queries + cols - causal_queries + 1 : cols;
  const int64_t* padded = pad ? pad + row / rows_per_batch * cols : nullptr;
  const int64_t b = row / (alibi.heads * alibi.queries);
  const C slope = alibi.slopes ? alibi.slopes[row / alibi.queries % alibi.heads] : C(0);
  const int64_t query = alibi.slopes ? alibi.qpos[b * alibi.queries + row % alibi.queries] : 0;
  const int64_t* key = alibi.slopes ? alibi.kpos + b * cols : nullptr;
  auto score = [&](int64_t c) { return key ? C(xr[c]) - slope * C(llabs(query - key[c])) : C(xr[c]); };
  auto at = [&](int64_t c) { return c < keep && !(padded && padded[c]) ? score(c) : C(-INFINITY); };
  double mx = -INFINITY;
  for (int64_t c = lane; c < cols; c += group) mx = fmax(mx, (double)at(c));
  mx = cuda::group_reduce<G>(mx, cuda::MaxOp{}, scratch);
  const C m = mx == -INFINITY ? C(0) : (C)mx;  // a fully masked row
  double s = 0;
  for (int64_t c = lane; c < cols; c += group) s += (double)exp(at(c) - m);
  s = cuda::group_reduce<G>(s, cuda::SumOp{}, scratch);
  if (log && s == 0) {  // a row of only -inf or masked columns: log of softmax's zeros (not -inf + inf = NaN)
    for (int64_t c = lane; c < cols; c += group) yr[c] = T(-INFINITY);
  } else if (log) {  // (x - max) - log(s): x - (max + log(s)) would carry the rounding of a large max + log(s)
    const C log_s = (C)::log(s);
    for (int64_t c = lane; c < cols; c += group) yr[c] = T((at(c) - m) - log_s);
  } else {
    const C inv = s == 0 ? C(0) : (C)(1.0 / s);  // 0: a fully masked row; a NaN sum (NaN or +inf in it): NaN
    for (int64_t c = lane; c < cols; c += group) yr[c] = T(exp(at(c) - m) * inv);
  }
}

// softmax:     gx = y * (gy - sum(gy * y))
// log_softmax: gx = gy - exp(y) * sum(gy)
template <class T, int G, class C = compute_t<T>>
__global__ void softmax_backward_kernel(const T* y, const T* gy, T* gx, int64_t rows, int64_t cols, bool log) {
  __shared__ double scratch[32];
  int64_t row;
  int lane, group;
  row_and_lane<G>(row, lane, group);
  if (row >= rows) return;
  const T* yr = y + row * cols;
  const T* gr = gy + row * cols;
  T* o = gx + row * cols;
  double s = 0;
  for (int64_t c = lane; c < cols; c += group) s += log ? (double)C(gr[c]) : (double)C(gr[c]) * C(yr[c]);
  const C sum = (C)cuda::group_reduce<G>(s, cuda::SumOp{}, scratch);
  for (int64_t c = lane; c < cols; c += group) {
    const C g = gr[c], y = yr[c];
    o[c] = T(log ? g - exp(y) * sum : y * (g - sum));
  }
}

// Launches kernel<T, kWarpRow> (8 rows a block) for rows of up to kWarpRowMaxCols columns, else kernel<T, kBlockRow>.
template <class WarpKernel, class BlockKernel, class... Args>
void launch_rows(const char* op, cudaStream_t stream, int64_t rows, int64_t cols, WarpKernel warp_kernel,
                 BlockKernel block_kernel, Args... args) {
  if (cols <= kWarpRowMaxCols) {
    constexpr int kRowsPerBlock = cuda::kThreads / kWarpRow;
    warp_kernel<<<row_blocks((rows + kRowsPerBlock - 1) / kRowsPerBlock), cuda::kThreads, 0, stream>>>(args...);
  } else {
    block_kernel<<<row_blocks(rows), cuda::row_threads(cols), 0, stream>>>(args...);
  }
  SG_CUDA_LAUNCH_CHECK(op);
}

// Row r's mean as layer_norm_kernel saves it: hi + lo.
template <class P>
__device__ __forceinline__ double row_mean(const P* mean, int64_t r) {
  return (double)mean[2 * r] + (double)mean[2 * r + 1];
}

// mean = sum(x)/C; rstd = 1/sqrt(sum((x-mean)^2)/C + eps); y = (x-mean)*rstd*gamma + beta
// T: x's and y's type; P: the parameters' and statistics' (float for bf16 x: computed in float, y rounded once).
// mean[r] is saved as hi = (P)mean and lo = (P)(mean - hi): the backward's x - mean is the forward's (cpu_nn.cpp).
template <class T, class P = T, class C = compute_t<T>>
__global__ void layer_norm_kernel(const T* x, const P* gamma, const P* beta, double eps, T* y, P* mean, P* rstd,
                                  int64_t cols) {
  __shared__ double scratch[32];
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  double s = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += (double)xr[c];
  const double mu = cuda::block_reduce(s, cuda::SumOp{}, scratch) / cols;
  double v = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) v += ((double)xr[c] - mu) * ((double)xr[c] - mu);
  const double rs = 1.0 / sqrt(cuda::block_reduce(v, cuda::SumOp{}, scratch) / cols + eps);
  if (threadIdx.x == 0) {
    mean[2 * blockIdx.x] = (P)mu;
    mean[2 * blockIdx.x + 1] = (P)(mu - (double)mean[2 * blockIdx.x]);
    rstd[blockIdx.x] = (P)rs;
  }
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const C n = (C)(((double)xr[c] - mu) * rs);
    yr[c] = T(n * (gamma ? (C)gamma[c] : C(1)) + (beta ? (C)beta[c] : C(0)));
  }
}

// xhat = (x-mean)*rstd; g = gy*gamma;  gx (+)= rstd * (g - mean(g) - xhat * mean(g * xhat))
template <class T, class P = T, class C = compute_t<T>>
__global__ void layer_norm_backward_kernel(const T* gy, const T* x, const P* mean, const P* rstd, const P* gamma,
                                           T* gx, int64_t cols, bool accumulate) {
  __shared__ double scratch[32];
  const T* g = gy + blockIdx.x * cols;
  const T* xr = x + blockIdx.x * cols;
  const double mu = row_mean(mean, blockIdx.x), rs = rstd[blockIdx.x];
  double sg = 0, sgx = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const double gg = (double)g[c] * (gamma ? (double)(C)gamma[c] : 1.0);
    sg += gg;
    sgx += gg * ((double)xr[c] - mu) * rs;
  }
  sg = cuda::block_reduce(sg, cuda::SumOp{}, scratch) / cols;
  sgx = cuda::block_reduce(sgx, cuda::SumOp{}, scratch) / cols;
  T* o = gx + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const double gg = (double)g[c] * (gamma ? (double)(C)gamma[c] : 1.0);
    const double xh = ((double)xr[c] - mu) * rs;
    const C v = (C)(rs * (gg - sg - xh * sgx));
    o[c] = accumulate ? T((C)o[c] + v) : T(v);
  }
}

// rstd = 1/sqrt(mean(x^2) + eps); y = x * rstd * w
template <class T, class P = T, class C = compute_t<T>>
__global__ void rms_norm_kernel(const T* x, const P* w, double eps, T* y, P* rstd, int64_t cols) {
  __shared__ double scratch[32];
  const T* xr = x + blockIdx.x * cols;
  T* yr = y + blockIdx.x * cols;
  double ss = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ss += (double)xr[c] * (double)xr[c];
  const double rs = 1.0 / sqrt(cuda::block_reduce(ss, cuda::SumOp{}, scratch) / cols + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = (P)rs;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    yr[c] = T((C)((double)xr[c] * rs) * (w ? (C)w[c] : C(1)));
}

// g = gy*w; xhat = x*rstd;  gx (+)= rstd * (g - xhat * mean(g * xhat))
template <class T, class P = T, class C = compute_t<T>>
__global__ void rms_norm_backward_kernel(const T* gy, const T* x, const P* rstd, const P* w, T* gx, int64_t cols,
                                         bool accumulate) {
  __shared__ double scratch[32];
  const T* g = gy + blockIdx.x * cols;
  const T* xr = x + blockIdx.x * cols;
  const double rs = rstd[blockIdx.x];
  auto wt = [&](int64_t c) { return w ? (double)(C)w[c] : 1.0; };
  double s = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += (double)g[c] * wt(c) * (double)xr[c] * rs;
  s = cuda::block_reduce(s, cuda::SumOp{}, scratch) / cols;
  T* o = gx + blockIdx.x * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const C v = (C)(rs * ((double)g[c] * wt(c) - (double)xr[c] * rs * s));
    o[c] = accumulate ? T((C)o[c] + v) : T(v);
  }
}

// ---- DyT (Zhu et al. 2025): y = w·tanh(a·x) + b, elementwise, a read on the device ----
// t = tanh(a·x) in P: float for float32 and bf16 (the CPU's float32 kernel computes in float too), double for
// float64.
template <class T, class P>
__global__ void dyt_kernel(const T* x, const P* alpha, const P* w, const P* b, T* y, int64_t n, int64_t cols) {
  const P a = alpha[0];
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % cols;
    y[i] = T((w ? w[c] : P(1)) * tanh(a * (P)x[i]) + (b ? b[c] : P(0)));
  }
}

// gu = gy·w·(1 − t²):  gx (+)= a·gu;  row_sums[r] = Σ_c gu·x in double (alpha's gradient, summed over the rows
// after). One block per row; gx and row_sums may be null (not wanted).
template <class T, class P>
__global__ void dyt_backward_kernel(const T* gy, const T* x, const P* alpha, const P* w, T* gx, double* row_sums,
                                    int64_t cols, bool accumulate) {
  __shared__ double scratch[32];
  const int64_t base = blockIdx.x * cols;
  const P a = alpha[0];
  double s = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const P xv = (P)x[base + c];
    const P t = tanh(a * xv);
    const P gu = (P)gy[base + c] * (w ? w[c] : P(1)) * (P(1) - t * t);
    if (gx) gx[base + c] = accumulate ? T((P)gx[base + c] + a * gu) : T(a * gu);
    s += (double)gu * (double)xv;
  }
  if (!row_sums) return;  // (the same for every thread of the block: block_reduce's barriers are all reached)
  s = cuda::block_reduce(s, cuda::SumOp{}, scratch);
  if (threadIdx.x == 0) row_sums[blockIdx.x] = s;
}

// ---- parameter gradients: column sums of a per-element term over rows ----
enum class ColumnTerm {
  GyXhat,     // gy * (x - mean) * rstd   (layer_norm gamma)
  Gy,         // gy                       (layer_norm beta)
  GyXRstd,    // gy * x * rstd            (rms_norm weight)
  GyTanh,     // gy * tanh(alpha * x)     (dyt weight; alpha[0] read on the device, tanh in P as dyt_kernel's)
};

template <class T, class P>
__device__ __forceinline__ double column_term(ColumnTerm term, double g, const T* x, const P* mean, const P* rstd,
                                              const P* alpha, int64_t r, int64_t i) {
  switch (term) {
    case ColumnTerm::GyXhat: return g * ((double)x[i] - row_mean(mean, r)) * rstd[r];
    case ColumnTerm::Gy: return g;
    case ColumnTerm::GyXRstd: return g * (double)x[i] * rstd[r];
    case ColumnTerm::GyTanh: return g * (double)tanh(alpha[0] * (P)x[i]);
  }
  return 0;
}

// One or two column sums in one pass over gy (layer_norm's gamma and beta together), in one launch, deterministic:
//   partial[t, chunk, c] = sum over the rows r of the chunk of term_t(r, c)   (rows_per_chunk rows per blockIdx.y)
//   out_t[c] = sum over chunks of partial[t, chunk, c], in chunk order
// The second line is done by the block of the column range (blockIdx.x) that finishes last: each block counts
// itself in done[blockIdx.x] once its partials are visible, and the one that brings the count to gridDim.y sums
// them (reading past L1, which may hold stale lines) and sets the counter back to 0 for the next launch.
template <class T, class P = T>
__global__ void column_sums_kernel(ColumnTerm term0, ColumnTerm term1, int terms, const T* gy, const T* x,
                                   const P* mean, const P* rstd, const P* alpha, double* partial, P* out0, P* out1,
                                   unsigned* done, int64_t rows, int64_t cols, int64_t rows_per_chunk) {
  __shared__ bool last;
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  const int64_t chunks = gridDim.y;
  if (c < cols) {
    const int64_t r0 = blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    double acc0 = 0, acc1 = 0;
    for (int64_t r = r0; r < r1; r++) {
      const double g = (double)gy[r * cols + c];
      acc0 += column_term(term0, g, x, mean, rstd, alpha, r, r * cols + c);
      if (terms > 1) acc1 += column_term(term1, g, x, mean, rstd, alpha, r, r * cols + c);
    }
    partial[blockIdx.y * cols + c] = acc0;
    if (terms > 1) partial[(chunks + blockIdx.y) * cols + c] = acc1;
  }
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // release by the counting thread itself: the block's writes (ordered by the barrier) first
    last = atomicAdd(&done[blockIdx.x], 1u) == (unsigned)chunks - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();  // acquire: the other blocks' partials, made visible before their counts, are read after ours
  if (c < cols) {
    double acc0 = 0, acc1 = 0;
    for (int64_t k = 0; k < chunks; k++) {
      acc0 += __ldcg(&partial[k * cols + c]);
      if (terms > 1) acc1 += __ldcg(&partial[(chunks + k) * cols + c]);
    }
    out0[c] = (P)acc0;
    if (terms > 1) out1[c] = (P)acc1;
  }
  if (threadIdx.x == 0) done[blockIdx.x] = 0;
}

// A parameter gradient to sum over the rows: which term, into which tensor (none, or undefined: not wanted).
struct ColumnSum {
  ColumnTerm term = ColumnTerm::Gy;
  Tensor* out = nullptr;
  bool wanted() const { return out && out->defined(); }
};

// The wanted column sums (one or two) in one launch; `done` is the backend's zeroed counters (kColumnCounters).
// mean and rstd: the norms' statistics; alpha: DyT's, for GyTanh.
template <class T, class P>
void column_sums(cudaStream_t stream, unsigned* done, const Tensor& gy, const Tensor& x, const P* mean,
                 const P* rstd, Rows rc, ColumnSum a, ColumnSum b = {}, const P* alpha = nullptr) {
  const char* op = "norm_backward";
  if (!a.wanted()) std::swap(a, b);
  if (!a.wanted()) return;
  const int terms = b.wanted() ? 2 : 1;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(rc.rows / 32, 1024));
  const int64_t rows_per_chunk = (rc.rows + chunks - 1) / chunks;
  const int64_t column_blocks = (rc.cols + cuda::kThreads - 1) / cuda::kThreads;
  if (column_blocks > CudaBackend::kColumnCounters)
    fail(op, ": ", rc.cols, " columns exceed the ", CudaBackend::kColumnCounters * cuda::kThreads,
         " a parameter gradient can have on the GPU");
  Tensor partial = Tensor::empty({terms, chunks, rc.cols}, DType::F64, x.device());
  const dim3 grid((unsigned)column_blocks, (unsigned)chunks);
  column_sums_kernel<T, P><<<grid, cuda::kThreads, 0, stream>>>(
      a.term, b.term, terms, static_cast<const T*>(gy.data_ptr()), static_cast<const T*>(x.data_ptr()), mean, rstd,
      alpha, static_cast<double*>(partial.data_ptr()), static_cast<P*>(a.out->data_ptr()),
      terms > 1 ? static_cast<P*>(b.out->data_ptr()) : nullptr, done, rc.rows, rc.cols, rows_per_chunk);
  SG_CUDA_LAUNCH_CHECK(op);
}

template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}

}  // namespace

void CudaBackend::softmax(const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) {
  check_softmax_mask("softmax", x, mask);
  const Rows rc = rows_of(x, "softmax");
  const int64_t R = rc.rows, C = rc.cols;  // not a structured binding: clang 14 cannot capture one
  if (R == 0 || C == 0) return;
  const Tensor& kp = mask.key_padding;
  const int64_t* pad = kp.defined() ? static_cast<const int64_t*>(kp.data_ptr()) : nullptr;
  cuda::dispatch_float_bf16(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    Alibi<compute_t<T>> alibi;
    if (mask.alibi_slopes.defined()) {
      alibi.slopes = static_cast<const compute_t<T>*>(mask.alibi_slopes.data_ptr());
      alibi.qpos = static_cast<const int64_t*>(mask.query_positions.data_ptr());
      alibi.kpos = static_cast<const int64_t*>(mask.key_positions.data_ptr());
      alibi.heads = mask.alibi_slopes.numel();
      alibi.queries = mask.query_positions.size(1);
    }
    launch_rows("softmax", stream_, R, C, softmax_kernel<T, kWarpRow>, softmax_kernel<T, kBlockRow>,
                static_cast<const T*>(x.data_ptr()), static_cast<T*>(y.data_ptr()), R, C, log, mask.causal_queries, pad,
                mask.rows_per_batch, alibi);
  });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const Rows rc = rows_of(y, "softmax_backward");
  const int64_t R = rc.rows, C = rc.cols;  // not a structured binding: clang 14 cannot capture one
  if (!gy.is_contiguous())
    fail("softmax_backward", ": expected a contiguous gradient, got ", gy.meta_str());
  if (R == 0 || C == 0) return;
  cuda::dispatch_float_bf16(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = decltype(tag);
    launch_rows("softmax_backward", stream_, R, C, softmax_backward_kernel<T, kWarpRow>,
                softmax_backward_kernel<T, kBlockRow>, static_cast<const T*>(y.data_ptr()),
                static_cast<const T*>(gy.data_ptr()), static_cast<T*>(gx.data_ptr()), R, C, log);
  });
}

void CudaBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                             Tensor& mean, Tensor& rstd) {
  if (!cuda::bf16_with_float32({&x, &y}, {&gamma, &beta, &mean, &rstd}) &&
      in_float32::layer_norm(*this, x, gamma, beta, eps, y, mean, rstd))
    return;
  const Rows rc = rows_of(x, "layer_norm");
  const int64_t R = rc.rows, C = rc.cols;  // not a structured binding: clang 14 cannot capture one
  if (R == 0 || C == 0) return;
  cuda::dispatch_with_float32_params(x.dtype(), "layer_norm", [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    layer_norm_kernel<T, P><<<row_blocks(R), cuda::row_threads(C), 0, stream_>>>(
        static_cast<const T*>(x.data_ptr()), ptr_or_null<P>(gamma), ptr_or_null<P>(beta), eps,
        static_cast<T*>(y.data_ptr()), static_cast<P*>(mean.data_ptr()), static_cast<P*>(rstd.data_ptr()), C);
  });
  SG_CUDA_LAUNCH_CHECK("layer_norm");
}

void CudaBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                      const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta,
                                      bool accumulate_gx) {
  if (!cuda::bf16_with_float32({&x, &gy, &gx}, {&mean, &rstd, &gamma, &ggamma, &gbeta}) &&
      in_float32::layer_norm_backward(*this, gy, x, mean, rstd, gamma, gx, ggamma, gbeta, accumulate_gx))
    return;
  const char* op = "layer_norm_backward";
  Rows rc = rows_of(x, op);
  if (!gy.is_contiguous())
    fail(op, ": expected a contiguous gradient, got ", gy.meta_str());
  if (rc.rows == 0 || rc.cols == 0) {
    if (ggamma.defined()) fill(ggamma, 0);
    if (gbeta.defined()) fill(gbeta, 0);
    return;
  }
  cuda::dispatch_with_float32_params(x.dtype(), op, [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    const P* mp = static_cast<const P*>(mean.data_ptr());
    const P* rp = static_cast<const P*>(rstd.data_ptr());
    if (gx.defined()) {
      layer_norm_backward_kernel<T, P><<<row_blocks(rc.rows), cuda::row_threads(rc.cols), 0, stream_>>>(
          static_cast<const T*>(gy.data_ptr()), static_cast<const T*>(x.data_ptr()), mp, rp, ptr_or_null<P>(gamma),
          static_cast<T*>(gx.data_ptr()), rc.cols, accumulate_gx);
      SG_CUDA_LAUNCH_CHECK(op);
    }
    column_sums<T, P>(stream_, column_counters_, gy, x, mp, rp, rc, {ColumnTerm::GyXhat, &ggamma},
                      {ColumnTerm::Gy, &gbeta});
  });
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  if (!cuda::bf16_with_float32({&x, &y}, {&weight, &rstd}) &&
      in_float32::rms_norm(*this, x, weight, eps, y, rstd))
    return;
  const Rows rc = rows_of(x, "rms_norm");
  const int64_t R = rc.rows, C = rc.cols;  // not a structured binding: clang 14 cannot capture one
  if (R == 0 || C == 0) return;
  cuda::dispatch_with_float32_params(x.dtype(), "rms_norm", [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    rms_norm_kernel<T, P><<<row_blocks(R), cuda::row_threads(C), 0, stream_>>>(
        static_cast<const T*>(x.data_ptr()), ptr_or_null<P>(weight), eps, static_cast<T*>(y.data_ptr()),
        static_cast<P*>(rstd.data_ptr()), C);
  });
  SG_CUDA_LAUNCH_CHECK("rms_norm");
}

void CudaBackend::rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                                    Tensor& gx, Tensor& gweight, bool accumulate_gx) {
  if (!cuda::bf16_with_float32({&x, &gy, &gx}, {&rstd, &weight, &gweight}) &&
      in_float32::rms_norm_backward(*this, gy, x, rstd, weight, gx, gweight, accumulate_gx))
    return;
  const char* op = "rms_norm_backward";
  Rows rc = rows_of(x, op);
  if (!gy.is_contiguous())
    fail(op, ": expected a contiguous gradient, got ", gy.meta_str());
  if (rc.rows == 0 || rc.cols == 0) {
    if (gweight.defined()) fill(gweight, 0);
    return;
  }
  cuda::dispatch_with_float32_params(x.dtype(), op, [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    const P* rp = static_cast<const P*>(rstd.data_ptr());
    if (gx.defined()) {
      rms_norm_backward_kernel<T, P><<<row_blocks(rc.rows), cuda::row_threads(rc.cols), 0, stream_>>>(
          static_cast<const T*>(gy.data_ptr()), static_cast<const T*>(x.data_ptr()), rp, ptr_or_null<P>(weight),
          static_cast<T*>(gx.data_ptr()), rc.cols, accumulate_gx);
      SG_CUDA_LAUNCH_CHECK(op);
    }
    column_sums<T, P>(stream_, column_counters_, gy, x, rp, rp, rc, {ColumnTerm::GyXRstd, &gweight});
  });
}

void CudaBackend::dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) {
  if (!cuda::bf16_with_float32({&x, &y}, {&alpha, &weight, &bias}) &&
      in_float32::dyt(*this, x, alpha, weight, bias, y))
    return;
  const Rows rc = rows_of(x, "dyt");
  const int64_t n = rc.rows * rc.cols, C = rc.cols;
  if (n == 0) return;
  cuda::dispatch_with_float32_params(x.dtype(), "dyt", [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    dyt_kernel<T, P><<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(
        static_cast<const T*>(x.data_ptr()), static_cast<const P*>(alpha.data_ptr()), ptr_or_null<P>(weight),
        ptr_or_null<P>(bias), static_cast<T*>(y.data_ptr()), n, C);
  });
  SG_CUDA_LAUNCH_CHECK("dyt");
}

// gx and alpha's row sums in one launch (one block per row), alpha's total by the backend's deterministic sum,
// weight's and bias's gradients as the norms' column sums.
void CudaBackend::dyt_backward(const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight,
                               Tensor& gx, Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) {
  if (!cuda::bf16_with_float32({&x, &gy, &gx}, {&alpha, &weight, &galpha, &gweight, &gbias}) &&
      in_float32::dyt_backward(*this, gy, x, alpha, weight, gx, galpha, gweight, gbias, accumulate_gx))
    return;
  const char* op = "dyt_backward";
  const Rows rc = rows_of(x, op);
  if (!gy.is_contiguous())
    fail(op, ": expected a contiguous gradient, got ", gy.meta_str());
  if (rc.rows == 0 || rc.cols == 0) {
    for (Tensor* t : {&galpha, &gweight, &gbias})
      if (t->defined()) fill(*t, 0);
    return;
  }
  cuda::dispatch_with_float32_params(x.dtype(), op, [&](auto xtag, auto ptag) {
    using T = decltype(xtag);
    using P = decltype(ptag);
    const P* ap = static_cast<const P*>(alpha.data_ptr());
    Tensor row_sums = galpha.defined() ? Tensor::empty({rc.rows}, DType::F64, x.device()) : Tensor();
    if (gx.defined() || galpha.defined()) {
      dyt_backward_kernel<T, P><<<row_blocks(rc.rows), cuda::row_threads(rc.cols), 0, stream_>>>(
          static_cast<const T*>(gy.data_ptr()), static_cast<const T*>(x.data_ptr()), ap, ptr_or_null<P>(weight),
          gx.defined() ? static_cast<T*>(gx.data_ptr()) : nullptr,
          row_sums.defined() ? static_cast<double*>(row_sums.data_ptr()) : nullptr, rc.cols, accumulate_gx);
      SG_CUDA_LAUNCH_CHECK(op);
    }
    if (galpha.defined()) {
      Tensor total = Tensor::empty({1}, DType::F64, x.device());
      reduce(ReduceOp::Sum, row_sums, {true}, total);
      copy(total, galpha);
    }
    column_sums<T, P>(stream_, column_counters_, gy, x, nullptr, nullptr, rc, {ColumnTerm::GyTanh, &gweight},
                      {ColumnTerm::Gy, &gbias}, ap);
  });
}

}  // namespace skipgrad
