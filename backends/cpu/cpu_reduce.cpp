// CPU reductions over any set of dims (kept as size 1 in the output).
#include <cmath>
#include <limits>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/strided_loop.h"

namespace skipgrad {

void CpuBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& red, Tensor& out) {
  const Shape& xs = x.shape();
  const int64_t nd = x.dim();
  check(nd <= 16, "reduce", ": at most 16 dims supported, got ", nd);
  // Split dims into kept (iterated by the output) and reduced (iterated per output element).
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
    // One output element: walk the reduced sub-block with an index counter; accumulate in double.
    auto reduce_one = [&](int64_t xoff) -> T {
      double acc = (op == ReduceOp::Max) ? -std::numeric_limits<double>::infinity()
                   : (op == ReduceOp::Min) ? std::numeric_limits<double>::infinity() : 0.0;
      int64_t idx[16] = {0};
      int64_t off = xoff;
      for (int64_t i = 0; i < count; i++) {
        double v = (double)xp[off];
        switch (op) {
          case ReduceOp::Sum: case ReduceOp::Mean: acc += v; break;
          case ReduceOp::SumSquares: acc += v * v; break;
          case ReduceOp::Max: acc = (v > acc || std::isnan(v)) ? v : acc; break;
          case ReduceOp::Min: acc = (v < acc || std::isnan(v)) ? v : acc; break;
        }
        for (int64_t d = nr - 1; d >= 0; d--) {  // advance the counter
          off += red_strides[d];
          if (++idx[d] < red_shape[d]) break;
          off -= red_strides[d] * red_shape[d];
          idx[d] = 0;
        }
      }
      if (op == ReduceOp::Mean) acc /= (double)std::max<int64_t>(count, 1);
      return (T)acc;
    };
    cpu::strided_rows<2>(kept_shape, {&out_strides_full, &x_kept_strides}, [&](auto off, int64_t n, auto st) {
      for (int64_t i = 0; i < n; i++) op_[off[0] + i * st[0]] = reduce_one(off[1] + i * st[1]);
    }, 1 << 12);
  });
}

}  // namespace skipgrad
