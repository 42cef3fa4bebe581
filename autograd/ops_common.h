// Small helpers shared by the op files (not part of the public API).
#pragma once
#include <algorithm>

#include "autograd/autocast.h"
#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "backends/backend.h"

namespace skipgrad {

inline Backend& be(const Tensor& t) { return backend_for(t.device()); }

// Whether backward must produce a gradient for input j of node n: whether that input required grad when n was
// recorded (Node::input_requires_grad).
inline bool needs_grad(const Node& n, size_t j) { return n.input_requires_grad[j]; }

inline void check_floating(const char* op, const Tensor& t) {
  check_defined(op, t);
  if (!is_floating(t.dtype())) fail(op, ": expected a floating tensor, got ", t.meta_str());
}
// torch treats a 0-d tensor as a line of one along dim 0 or -1 (its softmax is 1, its cumsum and sort itself, its
// argmax 0): ops along a dim accept those two for it and refuse others, naming the op and the tensor.
inline void check_scalar_dim(const char* op, int64_t dim, const Tensor& x) {
  check(dim == 0 || dim == -1, op, ": dim ", dim, " out of range for ", x.meta_str(), " (a 0-d tensor takes 0 or -1)");
}
// The dtype of statistics saved for a backward (a norm's mean and rstd, cross entropy's logsumexp): float32 for
// bfloat16 inputs, whose 8 bits of precision would round them, else the input's.
inline DType stat_dtype(const Tensor& t) { return t.dtype() == DType::BF16 ? DType::F32 : t.dtype(); }
// A contiguous tensor with the same values (no copy when already contiguous); not recorded.
inline Tensor contiguous_raw(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  backend_for(t.device()).copy(t, out);
  return out;
}
// Raw reshape (view when possible, otherwise copy); not recorded.
Tensor reshape_raw(const Tensor& t, const Shape& shape);
// Resolves one -1 in `shape` against `numel`; `op` names the caller in errors.
Shape infer_shape(const Shape& shape, int64_t numel, const char* op);

// How a GEMM reads an r x c matrix with row stride sr and column stride sc without copying it: rows of unit stride
// (trans false) or, read transposed, columns of unit stride (trans true), ld apart. False when it cannot.
struct BlasLayout {
  bool trans;
  int64_t ld;
};
inline bool blas_layout(int64_t r, int64_t c, int64_t sr, int64_t sc, BlasLayout& out) {
  const int64_t r1 = std::max<int64_t>(r, 1), c1 = std::max<int64_t>(c, 1);
  if ((sc == 1 || c == 1) && (r == 1 || sr >= c1)) out = {false, r == 1 ? c1 : sr};
  else if ((sr == 1 || r == 1) && (c == 1 || sc >= r1)) out = {true, c == 1 ? r1 : sc};
  else return false;
  return true;
}

}  // namespace skipgrad
