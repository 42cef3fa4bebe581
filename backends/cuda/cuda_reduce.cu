// CUDA reductions over any set of dims (kept as size 1 in the output), accumulated in double as on the CPU.
//
// The output's elements index the kept dims, the reduced dims form a sub-block per output element. A group of
// G threads reduces one output element: a warp (G = 32) when the block is small, the whole block (G = 256)
// when there are few outputs with many elements each. When the innermost kept dim is contiguous in x (column
// sums such as a bias gradient), one thread per output walks its sub-block so that neighbouring threads read
// neighbouring addresses.
//
// Few outputs leave most of the GPU idle (a bias gradient of 512 columns over 4096 rows: 512 threads; a full
// sum: one block), so the sub-blocks are then split into `chunks` along blockIdx.y: pass 1 writes each chunk's
// partial result (double) to a [chunks, outputs] buffer, pass 2 combines a column of it per output. Chunk
// boundaries depend only on the shapes, so results are deterministic.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "backends/cuda/cuda_common.cuh"
#include "backends/elementwise_math.h"
#include "backends/in_float32.h"

namespace skipgrad {

namespace {

// Kept dims (out and x strides) and reduced dims (x strides) of one reduction, merged as far as possible.
struct ReducePlan {
  cuda::Strided<2> kept;     // operands: out, x
  cuda::Strided<1> reduced;  // operand: x
  int64_t outputs = 1, count = 1;
  int64_t per_chunk = 0;     // reduced elements per blockIdx.y; count when not split
  double* partial = nullptr; // [gridDim.y, outputs] when split, else nullptr (results go to out)
};

__device__ __forceinline__ double reduce_init(ReduceOp op) {
  return op == ReduceOp::Max ? -INFINITY : op == ReduceOp::Min ? INFINITY : 0.0;
}
__device__ __forceinline__ double reduce_step(ReduceOp op, double acc, double v) {
  switch (op) {
    case ReduceOp::Sum: case ReduceOp::Mean: return acc + v;
    case ReduceOp::Norm2: return acc + v * v;
    case ReduceOp::Max: return cuda::MaxOp{}(acc, v);
    case ReduceOp::Min: return cuda::MinOp{}(acc, v);
  }
  return acc;
}
__device__ __forceinline__ double reduce_final(ReduceOp op, double acc, int64_t count) {
  return op == ReduceOp::Mean ? acc / (double)(count > 1 ? count : 1) : op == ReduceOp::Norm2 ? sqrt(acc) : acc;
}
// Combines two partial results (of disjoint parts of one sub-block).
__device__ __forceinline__ double reduce_combine(ReduceOp op, double a, double b) {
  return op == ReduceOp::Max ? cuda::MaxOp{}(a, b) : op == ReduceOp::Min ? cuda::MinOp{}(a, b) : a + b;
}
// The reduced elements [begin, end) of this block's chunk.
__device__ __forceinline__ void chunk_range(const ReducePlan& p, int64_t& begin, int64_t& end) {
  begin = blockIdx.y * p.per_chunk;
  end = begin + p.per_chunk < p.count ? begin + p.per_chunk : p.count;
}
// Writes output o's result (or, when split, this chunk's partial).
template <class O>
__device__ __forceinline__ void reduce_store(ReduceOp op, const ReducePlan& p, O* out, int64_t out_offset, int64_t o,
                                             double acc) {
  if (p.partial) p.partial[blockIdx.y * p.outputs + o] = acc;
  else out[out_offset] = (O)reduce_final(op, acc, p.count);
}

// x of T, out of O: one type, or bf16 into float32 (a bias gradient of bf16 products for a float32 bias).
// Groups of G threads, one output element per group (grid-stride over outputs).
template <class T, int G, class O = T>
__global__ void reduce_group_kernel(ReduceOp op, const T* x, O* out, ReducePlan p) {
  __shared__ double scratch[32];
  const int groups_per_block = blockDim.x / G;
  const int group = threadIdx.x / G, lane = threadIdx.x % G;
  // Loop bounds are the same for every thread of a group, so the group's shuffles and barriers line up.
  for (int64_t o0 = (int64_t)blockIdx.x * groups_per_block; o0 < p.outputs; o0 += (int64_t)gridDim.x * groups_per_block) {
    const int64_t o = o0 + group;
    const bool active = o < p.outputs;
    int64_t koff[2] = {0, 0};
    if (active) p.kept.offsets(o, koff);
    double acc = reduce_init(op);
    int64_t begin, end;
    chunk_range(p, begin, end);
    if (active)
      for (int64_t i = begin + lane; i < end; i += G) {
        int64_t roff[1];
        p.reduced.offsets(i, roff);
        acc = reduce_step(op, acc, (double)x[koff[1] + roff[0]]);
      }
    auto combine = [op](double a, double b) { return reduce_combine(op, a, b); };
    acc = cuda::group_reduce<G>(acc, combine, scratch);
    if (active && lane == 0) reduce_store(op, p, out, koff[0], o, acc);
  }
}

// One thread per output element, walking its sub-block in order.
template <class T, class O = T>
__global__ void reduce_thread_kernel(ReduceOp op, const T* x, O* out, ReducePlan p) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < p.outputs; o += (int64_t)gridDim.x * blockDim.x) {
    int64_t koff[2];
    p.kept.offsets(o, koff);
    double acc = reduce_init(op);
    int64_t begin, end;
    chunk_range(p, begin, end);
    for (int64_t i = begin; i < end; i++) {
      int64_t roff[1];
      p.reduced.offsets(i, roff);
      acc = reduce_step(op, acc, (double)x[koff[1] + roff[0]]);
    }
    reduce_store(op, p, out, koff[0], o, acc);
  }
}

// Pass 2 of a split reduction: output o combines column o of the [chunks, outputs] partials.
template <class O>
__global__ void reduce_finish_kernel(ReduceOp op, const double* partial, int64_t chunks, O* out, ReducePlan p) {
  for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < p.outputs; o += (int64_t)gridDim.x * blockDim.x) {
    int64_t koff[2];
    p.kept.offsets(o, koff);
    double acc = reduce_init(op);
    for (int64_t k = 0; k < chunks; k++) acc = reduce_combine(op, acc, partial[k * p.outputs + o]);
    out[koff[0]] = (O)reduce_final(op, acc, p.count);
  }
}

// How many chunks to split each output's `count` elements into when `threads_per_output` threads work on one:
// enough for ~64K threads in all, each thread still reading at least 8 elements, at most 1024 chunks.
int64_t reduce_chunks(int64_t outputs, int64_t count, int64_t threads_per_output) {
  constexpr int64_t kBusyThreads = 1 << 16, kMinPerThread = 8, kMaxChunks = 1024;
  const int64_t threads = outputs * threads_per_output;
  if (threads >= kBusyThreads) return 1;
  const int64_t want = (kBusyThreads + threads - 1) / threads;
  const int64_t most = count / (threads_per_output * kMinPerThread);
  return std::max<int64_t>(1, std::min({want, most, kMaxChunks}));
}

}  // namespace

void CudaBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& red, Tensor& out) {
  // the kernels read and write one dtype, or bf16 into float32; other mixes go through float32 copies
  const bool bf16_to_f32 = x.dtype() == DType::BF16 && out.dtype() == DType::F32;
  if (x.dtype() != out.dtype() && !bf16_to_f32 && in_float32::reduce(*this, op, x, red, out)) return;
  const char* name = "reduce";
  const Shape& xs = x.shape();
  check(red.size() == xs.size(), name, ": reduce mask has ", red.size(), " entries for a tensor of rank ", xs.size());
  Shape kept_shape(xs.size()), kept_x(xs.size(), 0), kept_out(xs.size(), 0), red_shape, red_x;
  ReducePlan p;
  for (size_t d = 0; d < xs.size(); d++) {
    if (red[d]) {
      kept_shape[d] = 1;
      red_shape.push_back(xs[d]);
      red_x.push_back(x.strides()[d]);
      p.count *= xs[d];
    } else {
      kept_shape[d] = xs[d];
      kept_x[d] = x.strides()[d];
      kept_out[d] = out.strides()[d];
      p.outputs *= xs[d];
    }
  }
  if (p.outputs == 0) return;
  p.kept = cuda::make_strided<2>(kept_shape, {&kept_out, &kept_x}, name);
  p.reduced = cuda::make_strided<1>(red_shape, {&red_x}, name);
  // Coalesced column walk: x's innermost kept dim is contiguous (neighbouring outputs, neighbouring addresses).
  const bool columns = p.kept.nd > 0 && p.kept.stride[1][p.kept.nd - 1] == 1;
  const int group = columns || p.count <= 4 ? 1 : p.outputs >= 1024 || p.count <= 4096 ? 32 : cuda::kThreads;
  const int64_t chunks = reduce_chunks(p.outputs, p.count, group);
  p.per_chunk = (p.count + chunks - 1) / chunks;
  Tensor partial;
  if (chunks > 1) {
    partial = Tensor::empty({chunks, p.outputs}, DType::F64, x.device());
    p.partial = static_cast<double*>(partial.data_ptr());
  }
  auto launch = [&](auto xtag, auto otag) {  // bf16: read as double like float, rounded once
    using T = decltype(xtag);
    using O = decltype(otag);
    // Nothing to read when the reduced dims are empty (the outputs get the op's identity): no pointer either, since
    // an empty view's may lie past its block's end (a narrow of a [4, 0, 5] tensor).
    const T* xp = p.count == 0 ? nullptr : static_cast<const T*>(x.data_ptr());
    O* op_ = static_cast<O*>(out.data_ptr());
    const dim3 grid(cuda::grid_for(p.outputs * group), (unsigned)chunks);
    if (group == 1) reduce_thread_kernel<T, O><<<grid, cuda::kThreads, 0, stream_>>>(op, xp, op_, p);
    else if (group == 32) reduce_group_kernel<T, 32, O><<<grid, cuda::kThreads, 0, stream_>>>(op, xp, op_, p);
    else reduce_group_kernel<T, cuda::kThreads, O><<<grid, cuda::kThreads, 0, stream_>>>(op, xp, op_, p);
    SG_CUDA_LAUNCH_CHECK(name);
    if (chunks > 1)
      reduce_finish_kernel<O><<<cuda::grid_for(p.outputs), cuda::kThreads, 0, stream_>>>(op, p.partial, chunks, op_, p);
  };
  if (bf16_to_f32) launch(bf16{}, float{});
  else cuda::dispatch_float_bf16(x.dtype(), name, [&](auto tag) { launch(tag, tag); });
  SG_CUDA_LAUNCH_CHECK(name);
}

// norm_many, pass 1: block b sums the squares of chunk b (cuda::ManyChunk) of its tensor into partial[b].
template <class T>
__global__ void sum_squares_chunks_kernel(const cuda::ManyPair* tensors, const cuda::ManyChunk* chunks,
                                          double* partial) {
  __shared__ double scratch[32];
  const cuda::ManyChunk c = chunks[blockIdx.x];
  const T* x = static_cast<const T*>(tensors[c.pair].src);
  double acc = 0;
  for (int64_t i = c.start + threadIdx.x; i < c.start + c.len; i += blockDim.x) {
    const double v = (double)(compute_t<T>)x[i];
    acc += v * v;
  }
  acc = cuda::block_reduce(acc, [](double a, double b) { return a + b; }, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
// Pass 2: out[where[t]] = sqrt of tensor t's chunk partials, added in chunk order (deterministic).
__global__ void norm_finish_kernel(const int64_t* first_chunk, const int64_t* where, int64_t tensors,
                                   const double* partial, double* out) {
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < tensors; t += (int64_t)gridDim.x * blockDim.x) {
    double acc = 0;
    for (int64_t k = first_chunk[t]; k < first_chunk[t + 1]; k++) acc += partial[k];
    out[where[t]] = sqrt(acc);
  }
}

// Two launches per dtype present (float32, float64, bf16 read natively); a strided tensor is copied first, so every
// norm stays in double as on the CPU.
void CudaBackend::norm_many(const std::vector<const Tensor*>& ts, Tensor& out) {
  const char* op = "norm_many";
  check_norm_many(ts, out);
  std::vector<Tensor> copies;
  copies.reserve(ts.size());  // pointers into it are kept below
  for (DType dt : {DType::F32, DType::F64, DType::BF16}) {
    std::vector<const Tensor*> group;
    std::vector<int64_t> where;  // the position in out of each tensor of the group
    for (size_t i = 0; i < ts.size(); i++) {
      if (ts[i]->dtype() != dt) continue;
      const Tensor* t = ts[i];
      if (!t->is_contiguous()) {
        copies.push_back(Tensor::empty(t->shape(), dt, t->device()));
        copy(*t, copies.back());
        t = &copies.back();
      }
      group.push_back(t);
      where.push_back((int64_t)i);
    }
    if (group.empty()) continue;
    const ManyTable table = upload_many_table(group, {}, op);
    const int64_t chunks = table.first_chunk.back(), n = (int64_t)group.size();
    std::vector<int64_t> index = table.first_chunk;  // [first chunk of each (n + 1) | where (n)], one upload
    index.insert(index.end(), where.begin(), where.end());
    Tensor idx = Tensor::empty({2 * n + 1}, DType::I64, out.device());
    upload(index.data(), idx.data_ptr(), index.size() * sizeof(int64_t));
    Tensor partial = Tensor::empty({std::max<int64_t>(chunks, 1)}, DType::F64, out.device());
    if (chunks > 0) {
      cuda::dispatch_float_bf16(dt, op, [&](auto tag) {
        using T = decltype(tag);
        sum_squares_chunks_kernel<T><<<(unsigned)chunks, cuda::kThreads, 0, stream_>>>(
            table.pairs, table.chunks, static_cast<double*>(partial.data_ptr()));
      });
      SG_CUDA_LAUNCH_CHECK(op);
    }
    const int64_t* first = static_cast<const int64_t*>(idx.data_ptr());
    norm_finish_kernel<<<cuda::grid_for(n), cuda::kThreads, 0, stream_>>>(
        first, first + n + 1, n, static_cast<const double*>(partial.data_ptr()), static_cast<double*>(out.data_ptr()));
    SG_CUDA_LAUNCH_CHECK(op);
  }
}

// Prefix sums along dim of a contiguous x viewed as [outer, n, inner]: a thread per (outer, inner) line, summing
// in order (reverse: from the end) in double for floats and int64 for integers, as the CPU does. Neighbouring
// threads read neighbouring inner elements, so the walk is coalesced whenever inner > 1.
template <class T>
__global__ void cumsum_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  using Acc = typename std::conditional<std::is_floating_point<T>::value, double, int64_t>::type;
  for (int64_t line = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; line < outer * inner;
       line += (int64_t)gridDim.x * blockDim.x) {
    const int64_t base = (line / inner) * n * inner + line % inner;
    Acc acc = 0;
    for (int64_t j = 0; j < n; j++) {
      const int64_t i = base + (reverse ? n - 1 - j : j) * inner;
      acc += (Acc)x[i];
      y[i] = (T)acc;
    }
  }
}

void CudaBackend::cumsum(const Tensor& x, int64_t dim, bool reverse, Tensor& out) {
  if (in_float32::cumsum(*this, x, dim, reverse, out)) return;
  const ScanLayout l = cumsum_layout(x, dim, out);
  const int64_t outer = l.outer, n = l.n, inner = l.inner;
  if (outer * inner == 0 || n == 0) return;
  cuda::dispatch_all(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cumsum_kernel<T><<<cuda::grid_for(outer * inner), cuda::kThreads, 0, stream_>>>(
        static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()), outer, n, inner, reverse);
  });
  SG_CUDA_LAUNCH_CHECK("cumsum");
}

// A block per (outer, inner) line, k rounds per line. In a round each thread finds, among its elements j = thread,
// thread + blockDim, ..., the first in topk's order after the element of the round before (elementwise::topk_next,
// the CPU's scan of a whole line); a tree reduction in shared memory by topk_before picks the block's first.
// blockDim: a power of two, at most kTopkThreads.
constexpr int kTopkThreads = 128;
template <class T>
__global__ void topk_kernel(const T* x, int64_t* y, int64_t outer, int64_t n, int64_t inner, int64_t k,
                            bool largest) {
  __shared__ T value[kTopkThreads];
  __shared__ int64_t index[kTopkThreads];
  const int t = threadIdx.x;
  for (int64_t line = blockIdx.x; line < outer * inner; line += gridDim.x) {
    const int64_t o = line / inner, c = line % inner;
    const T* xl = x + o * n * inner + c;
    T prev_v = T(0);
    int64_t prev = -1;
    for (int64_t r = 0; r < k; r++) {
      const int64_t j = elementwise::topk_next(xl, n, inner, t, blockDim.x, prev_v, prev, largest);
      index[t] = j;
      value[t] = j >= 0 ? xl[j * inner] : T(0);
      __syncthreads();
      for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (t < s && index[t + s] >= 0 &&
            (index[t] < 0 || elementwise::topk_before(value[t + s], index[t + s], value[t], index[t], largest))) {
          index[t] = index[t + s];
          value[t] = value[t + s];
        }
        __syncthreads();
      }
      prev = index[0];
      prev_v = value[0];
      if (t == 0) y[(o * k + r) * inner + c] = prev;
      __syncthreads();  // index[0] is read by every thread before the next round writes it
    }
  }
}

// Short lines (argmax over a small dim, across the columns of a wide tensor): a thread per line, which a block of
// 32 would mostly leave idle; neighbouring threads read neighbouring lines, side by side in memory when dim is
// not the last.
template <class T>
__global__ void topk_short_kernel(const T* x, int64_t* y, int64_t outer, int64_t n, int64_t inner, int64_t k,
                                  bool largest) {
  for (int64_t line = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; line < outer * inner;
       line += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = line / inner, c = line % inner;
    elementwise::topk_line(x + o * n * inner + c, n, inner, k, largest, y + o * k * inner + c, inner);
  }
}

// Long lists (a sort, a top-100 of a vocabulary): a merge sort of each line's indices by topk_before, all lines at
// once, ceil(log2 n) passes of one launch each. Pass w merges sorted runs of w indices in pairs: an element of a
// run lands at (its pair's start) + (its place in its own run) + (how many of the partner run come before it),
// the last found by a binary search of the partner run. topk_before is a strict total order (ties go by index), so
// that count puts every element at a place of its own, and the result is the one sort. O(n log^2 n) comparisons
// per line, every element of every line in parallel; the first k of the sorted line are topk's.
template <class T>
__global__ void topk_merge_pass_kernel(const T* x, const int64_t* src, int64_t* dst, int64_t lines, int64_t n,
                                       int64_t inner, int64_t w, bool largest) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < lines * n;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t line = e / n, p = e % n, o = line / inner, c = line % inner;
    const T* xl = x + o * n * inner + c;
    const int64_t* run = src + line * n;
    const int64_t mine = p / w, partner = mine ^ 1, pair_start = (mine & ~(int64_t)1) * w;
    const int64_t b0 = partner * w, b_len = b0 >= n ? 0 : (n - b0 < w ? n - b0 : w);
    const int64_t j = run[p];
    const T v = xl[j * inner];
    int64_t lo = 0, hi = b_len;  // the partner run's elements before (v, j): a prefix of it, found by bisection
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2, jm = run[b0 + mid];
      if (elementwise::topk_before(xl[jm * inner], jm, v, j, largest)) lo = mid + 1;
      else hi = mid;
    }
    dst[line * n + pair_start + (p - mine * w) + lo] = j;
  }
}

// indices 0..n-1 of every line: the runs of length 1 the first pass merges
__global__ void iota_lines_kernel(int64_t* idx, int64_t total, int64_t n) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x)
    idx[e] = e % n;
}

// out [outer, k, inner] = the first k of each sorted line (line = o * inner + c, sorted [lines, n])
__global__ void take_first_kernel(const int64_t* sorted, int64_t* y, int64_t outer, int64_t n, int64_t inner,
                                  int64_t k) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < outer * k * inner;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t o = e / (k * inner), r = e / inner % k, c = e % inner;
    y[e] = sorted[(o * inner + c) * n + r];
  }
}

// Scans (topk_kernel) cost k rounds of n / threads comparisons and a reduction each; the merge sort log2(n)
// launches. Scans for a few, the sort for more: a switch not yet timed on a GPU (issue 6's list).
constexpr int64_t kTopkScanRounds = 32;

constexpr int64_t kTopkShortLine = 64;  // lines up to this long: a thread each

void CudaBackend::topk(const Tensor& x, int64_t dim, int64_t k, bool largest, Tensor& out) {
  const ScanLayout l = topk_layout(x, dim, k, out);
  const int64_t outer = l.outer, n = l.n, inner = l.inner, lines = outer * inner;
  if (lines == 0 || k == 0) return;
  int threads = 32;  // enough to give each thread a few elements of a line
  while (threads < kTopkThreads && threads * 4 < n) threads *= 2;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x.data_ptr());
    int64_t* yp = static_cast<int64_t*>(out.data_ptr());
    if (n <= kTopkShortLine) {
      topk_short_kernel<T><<<cuda::grid_for(lines), cuda::kThreads, 0, stream_>>>(xp, yp, outer, n, inner, k, largest);
    } else if (k <= kTopkScanRounds) {
      topk_kernel<T><<<(unsigned)std::min<int64_t>(lines, 1 << 16), threads, 0, stream_>>>(xp, yp, outer, n, inner,
                                                                                            k, largest);
    } else {
      Tensor a = Tensor::empty({lines, n}, DType::I64, x.device());  // the runs, merged from a to b and back
      Tensor b = Tensor::empty({lines, n}, DType::I64, x.device());
      int64_t* src = static_cast<int64_t*>(a.data_ptr());
      int64_t* dst = static_cast<int64_t*>(b.data_ptr());
      const unsigned grid = cuda::grid_for(lines * n);
      iota_lines_kernel<<<grid, cuda::kThreads, 0, stream_>>>(src, lines * n, n);
      for (int64_t w = 1; w < n; w *= 2) {
        topk_merge_pass_kernel<T><<<grid, cuda::kThreads, 0, stream_>>>(xp, src, dst, lines, n, inner, w, largest);
        std::swap(src, dst);
      }
      take_first_kernel<<<cuda::grid_for(outer * k * inner), cuda::kThreads, 0, stream_>>>(src, yp, outer, n, inner,
                                                                                           k);
    }
  };
  switch (x.dtype()) {  // (bfloat16 is refused by topk_layout: the op compares in float32)
    case DType::F32: run(float{}); break;
    case DType::F64: run(double{}); break;
    case DType::I64: run(int64_t{}); break;
    case DType::I32: run(int32_t{}); break;
    case DType::BF16: return;
  }
  SG_CUDA_LAUNCH_CHECK("topk");
}

}  // namespace skipgrad
