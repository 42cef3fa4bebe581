// Reductions: sum, mean, max over dims; cumsum (prefix sums); sum_to (the reverse of broadcasting) for backward
// functions.
#include <algorithm>

#include "autograd/ops_common.h"

namespace skipgrad {

namespace {
struct ReducePlan {
  std::vector<bool> mask;  // per dim: reduced?
  Shape keep_shape;        // x's shape with 1 on reduced dims
  Shape out_shape;         // keepdim ? keep_shape : without the reduced dims
  int64_t count = 1;       // elements per output element
};

// integers: whether an integer x is allowed (sum's exact path); else x must be floating
ReducePlan plan_reduce(const char* op, const Tensor& x, const Shape& dims, bool keepdim, bool integers = false) {
  if (integers) check_defined(op, x);
  else check_floating(op, x);
  ReducePlan p;
  p.mask.assign(x.dim(), dims.empty());  // no dims: reduce all
  if (x.dim() == 0) {  // a line of one (check_scalar_dim): reduced, it is itself
    for (int64_t d : dims) check_scalar_dim(op, d, x);
    check(dims.size() <= 1, op, ": dim 0 given twice in ", dims, " (0 and -1 are the one dim of ", x.meta_str(), ")");
  }
  for (int64_t d : x.dim() == 0 ? Shape{} : dims) {
    int64_t nd = normalize_dim(d, x, op);
    check(!p.mask[nd] || dims.empty(), op, ": dim ", d, " given twice in ", dims);
    p.mask[nd] = true;
  }
  for (int64_t d = 0; d < x.dim(); d++) {
    p.keep_shape.push_back(p.mask[d] ? 1 : x.size(d));
    if (p.mask[d]) p.count *= x.size(d);
    if (!p.mask[d] || keepdim) p.out_shape.push_back(p.mask[d] ? 1 : x.size(d));
  }
  return p;
}

Tensor reduce_raw(ReduceOp op, const Tensor& x, const ReducePlan& p) {
  Tensor out = Tensor::empty(p.keep_shape, x.dtype(), x.device());
  be(x).reduce(op, x, p.mask, out);
  return make_view(out, p.out_shape, contiguous_strides(p.out_shape), 0);
}

// g (of the reduced shape) broadcast back over x's shape, as a contiguous tensor.
Tensor unreduce(const Tensor& g, const Shape& keep_shape, const Shape& x_shape) {
  Tensor gk = reshape_raw(g, keep_shape);
  return contiguous_raw(broadcast_to(gk, x_shape, "sum.backward"));
}
}  // namespace

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  const int64_t lead = g.dim() - (int64_t)shape.size();
  check(lead >= 0, "sum_to", ": cannot sum ", g.shape(), " down to ", shape);
  std::vector<bool> mask(g.dim(), false);
  Shape keep = g.shape();
  for (int64_t d = 0; d < g.dim(); d++) {
    bool r = d < lead || (shape[d - lead] == 1 && g.size(d) != 1);
    check(r || shape[d - lead] == g.size(d), "sum_to", ": cannot sum ", g.shape(), " down to ", shape);
    mask[d] = r;
    if (r) keep[d] = 1;
  }
  Tensor out = Tensor::empty(keep, g.dtype(), g.device());
  be(g).reduce(ReduceOp::Sum, g, mask, out);
  return make_view(out, shape, contiguous_strides(shape), 0);
}

Tensor norm2(const Tensor& t) {
  Tensor out = Tensor::empty(Shape(t.dim(), 1), t.dtype(), t.device());
  be(t).reduce(ReduceOp::Norm2, t, std::vector<bool>(t.dim(), true), out);
  return reshape_raw(out, {1});
}

Tensor norm2_f64(const std::vector<Tensor>& ts) {
  check(!ts.empty(), "norm2_f64", ": no tensors");
  std::vector<const Tensor*> ptrs;
  for (const Tensor& t : ts) ptrs.push_back(&t);
  Tensor out = Tensor::empty({(int64_t)ts.size()}, DType::F64, ts[0].device());
  be(ts[0]).norm_many(ptrs, out);
  return out;
}

namespace {
// x with its reduced dims moved last and flattened, [kept, p.count], contiguous: an integer reduction works on the
// rows (none of the backend's reductions reads integers). Undefined when empty.
Tensor reduced_rows(const Tensor& x, const ReducePlan& p) {
  Shape order;
  int64_t kept = 1;
  for (int64_t d = 0; d < x.dim(); d++)
    if (!p.mask[d]) {
      order.push_back(d);
      kept *= x.size(d);
    }
  for (int64_t d = 0; d < x.dim(); d++)
    if (p.mask[d]) order.push_back(d);
  if (p.count == 0 || kept == 0) return Tensor();
  return reshape_raw(contiguous_raw(permute(x, order)), {kept, p.count});
}

// The sum of an integer x (token counts; no gradient), exact in int64 as torch's: the last of each row's inclusive
// prefix sums (cumsum accumulates integers in int64).
Tensor sum_integers(const Tensor& x, const ReducePlan& p) {
  Tensor rows = reduced_rows(x.to(DType::I64), p);
  if (!rows.defined()) return Tensor::zeros(p.out_shape, DType::I64, x.device());
  return reshape_raw(slice(cumsum(rows, 1), 1, p.count - 1, p.count), p.out_shape);
}
}  // namespace

// y = sum over dims:  gx = broadcast(g)
Tensor sum(const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p = plan_reduce("sum", x, dims, keepdim, true);
  if (!is_floating(x.dtype())) return sum_integers(x, p);
  Tensor out = reduce_raw(ReduceOp::Sum, x, p);
  record("sum", {x}, out, {}, [keep = p.keep_shape, xs = x.shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{unreduce(g, keep, xs)};
  }, {{"dims", dims}, {"keepdim", keepdim}});
  return out;
}
Tensor sum(const Tensor& x) { return sum(x, {}, false); }

// y = mean over dims:  gx = broadcast(g) / count
Tensor mean(const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p = plan_reduce("mean", x, dims, keepdim);
  Tensor out = reduce_raw(ReduceOp::Mean, x, p);
  record("mean", {x}, out, {}, [keep = p.keep_shape, xs = x.shape(), count = p.count](const Node&, const Tensor& g) {
    return std::vector<Tensor>{mul(unreduce(g, keep, xs), 1.0 / (double)std::max<int64_t>(count, 1))};
  }, {{"dims", dims}, {"keepdim", keepdim}});
  return out;
}
Tensor mean(const Tensor& x) { return mean(x, {}, false); }

// y = max (min) over dims:  gx = g * [x == y] / (number of ties), as torch.amax/amin. Over an empty dim there is no
// extremum (an error, as in PyTorch); an empty x reduced over dims that are not empty gives an empty result.
namespace {
Tensor extremum(const char* op, ReduceOp kind, const Tensor& x, const Shape& dims, bool keepdim) {
  ReducePlan p = plan_reduce(op, x, dims, keepdim, true);
  if (p.count == 0)
    fail(op, ": reduction over an empty dim of ", x.meta_str(), " (dims ", shape_str(dims), "): no ",
         kind == ReduceOp::Max ? "maximum" : "minimum");
  if (!is_floating(x.dtype())) {  // integers (no gradient): each row's first by topk, exact, in x's dtype
    Tensor rows = reduced_rows(x, p);
    if (!rows.defined()) return Tensor::empty(p.out_shape, x.dtype(), x.device());
    return reshape_raw(topk(rows, 1, 1, kind == ReduceOp::Max).values, p.out_shape);
  }
  Tensor out = reduce_raw(kind, x, p);
  record(op, {x}, out, {x, out}, [p](const Node& n, const Tensor& g) {
    const Tensor& x = n.saved[0];
    Tensor y = reshape_raw(n.saved[1], p.keep_shape);
    const DType ct = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();  // (bf16 counts only to 256 exactly)
    Tensor hit = eq(x, broadcast_to(y, x.shape(), n.op->name)).to(ct);
    Tensor ties = reduce_raw(ReduceOp::Sum, hit, ReducePlan{p.mask, p.keep_shape, p.keep_shape, p.count});
    Tensor share = div(reshape_raw(g, p.keep_shape).to(ct), ties);
    return std::vector<Tensor>{mul(hit, share).to(x.dtype())};
  }, {{"dims", dims}, {"keepdim", keepdim}});
  return out;
}
}  // namespace

Tensor max(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum("max", ReduceOp::Max, x, dims, keepdim);
}
Tensor min(const Tensor& x, const Shape& dims, bool keepdim) {
  return extremum("min", ReduceOp::Min, x, dims, keepdim);
}
Tensor max(const Tensor& x) { return max(x, {}, false); }
Tensor min(const Tensor& x) { return min(x, {}, false); }

// y_i = sum_{j <= i} x_j along dim:  gx_j = sum_{i >= j} g_i (the reverse prefix sum of g). Integer tensors are
// summed too (no gradient), into int64 as torch's (an int32 running sum would wrap): make_positions in
// nn/layers.cpp counts tokens this way on any device.
Tensor cumsum(const Tensor& x, int64_t dim) {
  check_defined("cumsum", x);
  if (x.dim() == 0) {  // a line of one (check_scalar_dim): itself, through the one-element op
    check_scalar_dim("cumsum", dim, x);
    return reshape(cumsum(reshape(x, {1}), 0), {});
  }
  const int64_t d = normalize_dim(dim, x, "cumsum");
  Tensor xc = contiguous_raw(is_floating(x.dtype()) || x.dtype() == DType::I64 ? x : x.to(DType::I64));
  Tensor out = Tensor::empty(x.shape(), xc.dtype(), x.device());
  be(x).cumsum(xc, d, false, out);
  record("cumsum", {x}, out, {}, [d](const Node&, const Tensor& g) {
    Tensor gc = contiguous_raw(g);
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    be(g).cumsum(gc, d, true, gx);
    return std::vector<Tensor>{gx};
  }, {{"dim", d}});
  return out;
}

Tensor Tensor::sum() const { return skipgrad::sum(*this); }
Tensor Tensor::sum(const Shape& dims, bool keepdim) const { return skipgrad::sum(*this, dims, keepdim); }
Tensor Tensor::mean() const { return skipgrad::mean(*this); }
Tensor Tensor::mean(const Shape& dims, bool keepdim) const { return skipgrad::mean(*this, dims, keepdim); }
Tensor Tensor::max(const Shape& dims, bool keepdim) const { return skipgrad::max(*this, dims, keepdim); }
Tensor Tensor::max() const { return skipgrad::max(*this); }
Tensor Tensor::min() const { return skipgrad::min(*this); }
Tensor Tensor::min(const Shape& dims, bool keepdim) const { return skipgrad::min(*this, dims, keepdim); }

}  // namespace skipgrad
