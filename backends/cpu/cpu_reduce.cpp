// CPU reductions over any set of dims (kept as size 1 in the output). Accumulation is in double.
//
// Two paths:
//  - block: x contiguous and, after dropping size-1 dims, the reduced dims form one run, so x is [O, R, K]
//    (O kept outer, R reduced, K kept inner) and out is [O, K]. Bias gradients (K = features, O = 1), row
//    statistics (K = 1) and whole-tensor sums (O = K = 1) are all this shape; the inner loops are plain
//    contiguous loops the compiler vectorises.
//  - generic: any strides; one output element at a time walks its reduced sub-block with an index counter.
// Both sum each output element in an order fixed by the shape alone, so results do not depend on the thread
// count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/lane_sum.h"
#include "backends/cpu/strided_loop.h"
#include "backends/elementwise_math.h"
#include "backends/in_float32.h"

namespace skipgrad {

namespace {

template <ReduceOp OP>
constexpr double reduce_init() {
  if constexpr (OP == ReduceOp::Max) return -std::numeric_limits<double>::infinity();
  else if constexpr (OP == ReduceOp::Min) return std::numeric_limits<double>::infinity();
  else return 0.0;
}

// acc ⊕ v; Max/Min propagate NaN (once acc is NaN, no comparison replaces it).
template <ReduceOp OP>
inline double reduce_step(double acc, double v) {
  if constexpr (OP == ReduceOp::Norm2) return acc + v * v;
  else if constexpr (OP == ReduceOp::Max) return (v > acc || std::isnan(v)) ? v : acc;
  else if constexpr (OP == ReduceOp::Min) return (v < acc || std::isnan(v)) ? v : acc;
  else return acc + v;  // Sum, Mean
}

// Combining two partial results: like a step, except that a partial sum of squares is already squared.
template <ReduceOp OP>
inline double reduce_merge(double a, double b) {
  if constexpr (OP == ReduceOp::Norm2) return a + b;
  else return reduce_step<OP>(a, b);
}

template <ReduceOp OP>
inline double reduce_finish(double acc, int64_t count) {
  if constexpr (OP == ReduceOp::Mean) return acc / (double)std::max<int64_t>(count, 1);
  else if constexpr (OP == ReduceOp::Norm2) return std::sqrt(acc);
  else return acc;
}

template <class F>
void with_op(ReduceOp op, F&& f) {
  switch (op) {
    case ReduceOp::Sum: f(std::integral_constant<ReduceOp, ReduceOp::Sum>{}); return;
    case ReduceOp::Mean: f(std::integral_constant<ReduceOp, ReduceOp::Mean>{}); return;
    case ReduceOp::Norm2: f(std::integral_constant<ReduceOp, ReduceOp::Norm2>{}); return;
    case ReduceOp::Max: f(std::integral_constant<ReduceOp, ReduceOp::Max>{}); return;
    case ReduceOp::Min: f(std::integral_constant<ReduceOp, ReduceOp::Min>{}); return;
  }
}

// One contiguous run of n values, K = 1 case: 8 independent lanes (vectorisable), merged in a fixed order.
template <ReduceOp OP, class T>
double reduce_run(const T* x, int64_t n) {
  return cpu::lane_reduce(
      n, reduce_init<OP>(), [x](int64_t i) { return (double)x[i]; },
      [](double acc, double v) { return reduce_step<OP>(acc, v); },
      [](double a, double b) { return reduce_merge<OP>(a, b); });
}

// x = [O, R, K] contiguous -> out[o*K + k] = ⊕_r x[(o*R + r)*K + k].
template <ReduceOp OP, class T>
void reduce_block(const T* x, T* out, int64_t O, int64_t R, int64_t K) {
  if (K == 1) {
#pragma omp parallel for schedule(static) if (O > 1 && O * R >= (1 << 15))
    for (int64_t o = 0; o < O; o++) out[o] = (T)reduce_finish<OP>(reduce_run<OP>(x + o * R, R), R);
    return;
  }
  // Columns in tiles of kTile: each (o, tile) sums its rows top to bottom into a small double buffer.
  constexpr int64_t kTile = 256;
  const int64_t tiles = (K + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (O * tiles > 1 && O * R * K >= (1 << 15))
  for (int64_t job = 0; job < O * tiles; job++) {
    const int64_t o = job / tiles, k0 = (job % tiles) * kTile, kw = std::min(kTile, K - k0);
    double acc[kTile];
    for (int64_t k = 0; k < kw; k++) acc[k] = reduce_init<OP>();
    for (int64_t r = 0; r < R; r++) {
      const T* row = x + (o * R + r) * K + k0;
      for (int64_t k = 0; k < kw; k++) acc[k] = reduce_step<OP>(acc[k], (double)row[k]);
    }
    for (int64_t k = 0; k < kw; k++) out[o * K + k0 + k] = (T)reduce_finish<OP>(acc[k], R);
  }
}

// If x is contiguous and its reduced dims (ignoring size-1 dims) are one run, sets O, R, K and returns true.
bool as_block(const Tensor& x, const std::vector<bool>& red, int64_t& O, int64_t& R, int64_t& K) {
  if (!x.is_contiguous()) return false;
  O = R = K = 1;
  int phase = 0;  // 0: leading kept dims, 1: reduced run, 2: trailing kept dims
  for (int64_t d = 0; d < x.dim(); d++) {
    const int64_t n = x.shape()[d];
    if (n == 1) continue;
    if (red[d]) {
      if (phase == 2) return false;
      phase = 1;
      R *= n;
    } else {
      if (phase == 1) phase = 2;
      (phase == 0 ? O : K) *= n;
    }
  }
  return true;
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& red, Tensor& out) {
  if (in_float32::reduce(*this, op, x, red, out)) return;
  const Shape& xs = x.shape();
  const int64_t nd = x.dim();
  if (nd > 16) {  // views of x and out without size-1 dims, and with neighbours that are contiguous in both (and
                  // reduced alike) merged: the same reduction in fewer dims
    Shape s, st, out_st;
    std::vector<bool> r;
    for (int64_t d = 0; d < nd; d++) {
      if (xs[d] == 1) continue;
      const bool merge = !s.empty() && r.back() == red[d] && st.back() == x.strides()[d] * xs[d] &&
                         (red[d] || out_st.back() == out.strides()[d] * xs[d]);
      if (merge) {
        s.back() *= xs[d];
        st.back() = x.strides()[d];
        out_st.back() = out.strides()[d];
        continue;
      }
      s.push_back(xs[d]);
      st.push_back(x.strides()[d]);
      out_st.push_back(out.strides()[d]);
      r.push_back(red[d]);
    }
    check(s.size() <= 16, "reduce", ": at most 16 dims supported (after dropping size-1 dims and merging contiguous "
          "ones), got ", xs);
    Shape out_s = s;
    for (size_t d = 0; d < s.size(); d++) out_s[d] = r[d] ? 1 : s[d];
    Tensor out_view = make_view(out, out_s, out_st, out.offset());
    reduce(op, make_view(x, s, st, x.offset()), r, out_view);
    return;
  }
  int64_t O, R, K;
  if (out.is_contiguous() && as_block(x, red, O, R, K)) {
    cpu::dispatch_float(x.dtype(), "reduce", [&]<class T>() {
      with_op(op, [&](auto OPC) {
        if (O * K > 0)
          reduce_block<decltype(OPC)::value, T>(static_cast<const T*>(x.data_ptr()), static_cast<T*>(out.data_ptr()),
                                                O, R, K);
      });
    });
    return;
  }
  // Generic path: split dims into kept (iterated by the output) and reduced (iterated per output element).
  Shape kept_shape(nd), red_shape, red_strides, out_strides_full(nd, 0), x_kept_strides(nd, 0);
  int64_t count = 1;
  for (int64_t d = 0; d < nd; d++) {
    if (red[d]) {
      kept_shape[d] = 1;
      red_shape.push_back(xs[d]);
      red_strides.push_back(x.strides()[d]);
      count *= xs[d];
    } else {
      kept_shape[d] = xs[d];
      x_kept_strides[d] = x.strides()[d];
      out_strides_full[d] = out.strides()[d];
    }
  }
  const int64_t nr = (int64_t)red_shape.size();
  cpu::dispatch_float(x.dtype(), "reduce", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* op_ = static_cast<T*>(out.data_ptr());
    with_op(op, [&](auto OPC) {
      constexpr ReduceOp OP = decltype(OPC)::value;
      // One output element: walk the reduced sub-block with an index counter.
      auto reduce_one = [&](int64_t xoff) -> T {
        double acc = reduce_init<OP>();
        int64_t idx[16] = {0};
        int64_t off = xoff;
        for (int64_t i = 0; i < count; i++) {
          acc = reduce_step<OP>(acc, (double)xp[off]);
          for (int64_t d = nr - 1; d >= 0; d--) {  // advance the counter
            off += red_strides[d];
            if (++idx[d] < red_shape[d]) break;
            off -= red_strides[d] * red_shape[d];
            idx[d] = 0;
          }
        }
        return (T)reduce_finish<OP>(acc, count);
      };
      cpu::strided_rows<2>(kept_shape, {&out_strides_full, &x_kept_strides}, [&](auto off, int64_t n, auto st) {
        for (int64_t i = 0; i < n; i++) op_[off[0] + i * st[0]] = reduce_one(off[1] + i * st[1]);
      }, 1 << 12);
    });
  });
}

// One parallel loop over the tensors, each summed by one thread in reduce_run's order (the bits of its Norm2
// reduction before that rounds to the tensor's dtype); a strided tensor is copied first, bf16 widened (exactly) to
// float32, so every norm stays in double.
void CpuBackend::norm_many(const std::vector<const Tensor*>& ts, Tensor& out) {
  check_norm_many(ts, out);
  std::vector<Tensor> plain(ts.size());
  for (size_t i = 0; i < ts.size(); i++) {
    const Tensor& t = *ts[i];
    const DType dt = t.dtype() == DType::F64 ? DType::F64 : DType::F32;
    if (t.is_contiguous() && t.dtype() == dt) {
      plain[i] = t;
    } else {
      plain[i] = Tensor::empty(t.shape(), dt, t.device());
      copy(t, plain[i]);
    }
  }
  double* o = static_cast<double*>(out.data_ptr());
#pragma omp parallel for schedule(dynamic, 1) if (plain.size() > 1)
  for (size_t i = 0; i < plain.size(); i++) {
    const Tensor& t = plain[i];
    o[i] = t.dtype() == DType::F32
               ? std::sqrt(reduce_run<ReduceOp::Norm2>(static_cast<const float*>(t.data_ptr()), t.numel()))
               : std::sqrt(reduce_run<ReduceOp::Norm2>(static_cast<const double*>(t.data_ptr()), t.numel()));
  }
}

// Prefix sums along dim of a contiguous x viewed as [outer, n, inner]: each (outer, inner) line is summed in
// order (reverse: from the end), in double for floats and int64 for integers. Lines are independent, so the
// result does not depend on the thread count.
void CpuBackend::cumsum(const Tensor& x, int64_t dim, bool reverse, Tensor& out) {
  if (in_float32::cumsum(*this, x, dim, reverse, out)) return;
  const ScanLayout l = cumsum_layout(x, dim, out);  // not a structured binding: clang 14 cannot capture one
  const int64_t outer = l.outer, n = l.n, inner = l.inner;
  cpu::dispatch_all(x.dtype(), [&]<class T>() {
    using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(out.data_ptr());
#pragma omp parallel for if (outer * n * inner > (1 << 15))
    for (int64_t o = 0; o < outer; o++) {
      for (int64_t k = 0; k < inner; k++) {
        Acc acc = 0;
        for (int64_t j = 0; j < n; j++) {
          const int64_t i = o * n * inner + (reverse ? n - 1 - j : j) * inner + k;
          acc += (Acc)xp[i];
          yp[i] = (T)acc;
        }
      }
    }
  });
}

// A line's first k in topk's order. The largest alone (argmax) or a short line: k scans of the line
// (elementwise::topk_line, O(n k), no memory, the GPU's code for short lines). Otherwise a sort of the line's indices
// by topk_before, partial (O(n log k)) or whole (k = n), over a contiguous copy of the line's values. The same
// answer either way: topk_before is a strict total order, so each rank has one element.
constexpr int64_t kTopkScanLine = 16;

void CpuBackend::topk(const Tensor& x, int64_t dim, int64_t k, bool largest, Tensor& out) {
  const ScanLayout l = topk_layout(x, dim, k, out);
  const int64_t outer = l.outer, n = l.n, inner = l.inner;
  auto run = [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    int64_t* yp = static_cast<int64_t*>(out.data_ptr());
    if (k <= 1 || n <= kTopkScanLine) {
#pragma omp parallel for if (outer * n * inner * k > (1 << 15))
      for (int64_t o = 0; o < outer; o++)
        for (int64_t c = 0; c < inner; c++)
          elementwise::topk_line(xp + o * n * inner + c, n, inner, k, largest, yp + o * k * inner + c, inner);
      return;
    }
#pragma omp parallel if (outer * inner * n > (1 << 14))
    {
      std::vector<T> value(n);        // a line's values, side by side
      std::vector<int64_t> order(n);  // its indices, the first k sorted into place
#pragma omp for
      for (int64_t line = 0; line < outer * inner; line++) {
        const int64_t o = line / inner, c = line % inner;
        for (int64_t j = 0; j < n; j++) {
          value[j] = xp[(o * n + j) * inner + c];
          order[j] = j;
        }
        auto before = [&](int64_t a, int64_t b) {
          return elementwise::topk_before(value[a], a, value[b], b, largest);
        };
        if (k == n) std::sort(order.begin(), order.end(), before);
        else std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
        for (int64_t r = 0; r < k; r++) yp[(o * k + r) * inner + c] = order[r];
      }
    }
  };
  switch (x.dtype()) {  // (bfloat16 is refused by topk_layout: the op compares in float32)
    case DType::F32: run.operator()<float>(); return;
    case DType::F64: run.operator()<double>(); return;
    case DType::I64: run.operator()<int64_t>(); return;
    case DType::I32: run.operator()<int32_t>(); return;
    case DType::BF16: return;
  }
}

}  // namespace skipgrad
