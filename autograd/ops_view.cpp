// View and layout ops: reshape, transpose, permute, slice, expand (share storage); contiguous, casts, device
// copies, concat/split/stack (copy). Backward of a view is the inverse view (or a scatter into zeros).
#include <numeric>

#include "autograd/ops_common.h"

namespace skipgrad {

Shape infer_shape(const Shape& shape, int64_t numel, const char* op) {
  Shape probe = shape;  // sizes whose product overflows would wrap to a valid-looking count
  for (auto& v : probe) v = v == -1 ? 1 : v;
  check_shape(probe, op);
  Shape out = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); i++) {
    if (shape[i] == -1) {
      check(infer < 0, op, ": more than one -1 in shape ", shape);
      infer = (int64_t)i;
    } else {
      check(shape[i] >= 0, op, ": invalid size in shape ", shape);
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    check(known != 0 && numel % known == 0, op, ": cannot infer -1 in shape ", shape, " for ", numel, " elements");
    out[infer] = numel / known;
  }
  check(numel_of(out) == numel, op, ": shape ", shape, " is invalid for ", numel, " elements");
  return out;
}

Tensor reshape_raw(const Tensor& t, const Shape& shape_in) {
  Shape shape = infer_shape(shape_in, t.numel(), "reshape");
  Shape st = view_strides(t, shape);
  if (st.size() == shape.size() && (!st.empty() || shape.empty())) return make_view(t, shape, st, t.offset());
  Tensor c = contiguous_raw(t);
  return make_view(c, shape, contiguous_strides(shape), c.offset());
}

// y = x viewed as `shape`:  gx = g viewed as x's shape
Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x);
  Tensor out = reshape_raw(x, shape);
  record("reshape", {x}, out, {}, [xs = x.shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{reshape_raw(g, xs)};
  }, {{"shape", out.shape()}});
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const { return skipgrad::reshape(*this, shape); }
Tensor Tensor::view(const Shape& shape_in) const {
  Shape shape = infer_shape(shape_in, numel(), "view");
  Shape st = view_strides(*this, shape);
  if (st.size() != shape.size() || (st.empty() && !shape.empty()))
    fail("view", ": cannot view ", meta_str(), " with strides ", strides(), " as ", shape,
         " without a copy; use reshape()");
  return skipgrad::reshape(*this, shape);
}
Tensor Tensor::flatten(int64_t start, int64_t end) const {
  check_defined("flatten", *this, "the tensor");
  if (dim() == 0) return skipgrad::reshape(*this, {1});
  int64_t s = normalize_dim(start, *this, "flatten"), e = normalize_dim(end, *this, "flatten");
  check(s <= e, "flatten", ": start dim ", start, " after end dim ", end);
  Shape ns(shape().begin(), shape().begin() + s);
  int64_t p = 1;
  for (int64_t d = s; d <= e; d++) p *= shape()[d];
  ns.push_back(p);
  ns.insert(ns.end(), shape().begin() + e + 1, shape().end());
  return skipgrad::reshape(*this, ns);
}
Tensor Tensor::unsqueeze(int64_t d) const {
  check_defined("unsqueeze", *this, "the tensor");
  int64_t nd = normalize_dim(d, dim() + 1, "unsqueeze");
  Shape ns = shape();
  ns.insert(ns.begin() + nd, 1);
  return skipgrad::reshape(*this, ns);
}
Tensor Tensor::squeeze(int64_t d) const {
  check_defined("squeeze", *this, "the tensor");
  if (dim() == 0) {  // a 0-d tensor's dim 0 or -1 (check_scalar_dim): nothing to squeeze, as torch
    check_scalar_dim("squeeze", d, *this);
    return *this;
  }
  int64_t nd = normalize_dim(d, *this, "squeeze");
  if (shape()[nd] != 1) return *this;
  Shape ns = shape();
  ns.erase(ns.begin() + nd);
  return skipgrad::reshape(*this, ns);
}
Tensor Tensor::squeeze() const {
  check_defined("squeeze", *this, "the tensor");
  Shape ns;
  for (int64_t v : shape())
    if (v != 1) ns.push_back(v);
  return skipgrad::reshape(*this, ns);
}

// y = x with dims d0, d1 swapped:  gx = g with them swapped back
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  check_defined("transpose", x);
  if (x.dim() == 0) {  // a 0-d tensor's dim 0 or -1 (check_scalar_dim) with itself: the tensor, as torch
    check_scalar_dim("transpose", d0, x);
    check_scalar_dim("transpose", d1, x);
    return x;
  }
  int64_t a = normalize_dim(d0, x, "transpose"), b = normalize_dim(d1, x, "transpose");
  Shape s = x.shape(), st = x.strides();
  std::swap(s[a], s[b]);
  std::swap(st[a], st[b]);
  Tensor out = make_view(x, s, st, x.offset());
  record("transpose", {x}, out, {}, [a, b](const Node&, const Tensor& g) {
    Shape s = g.shape(), st = g.strides();
    std::swap(s[a], s[b]);
    std::swap(st[a], st[b]);
    return std::vector<Tensor>{make_view(g, s, st, g.offset())};
  }, {{"dim0", a}, {"dim1", b}});
  return out;
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return skipgrad::transpose(*this, d0, d1); }

// y[i...] = x[order applied]:  gx = g permuted by the inverse order
Tensor permute(const Tensor& x, const Shape& order_in) {
  check_defined("permute", x);
  if ((int64_t)order_in.size() != x.dim())
    fail("permute", ": order ", order_in, " has ", order_in.size(), " dims, tensor ", x.meta_str(), " has ", x.dim());
  Shape order(x.dim()), inv(x.dim()), s(x.dim()), st(x.dim());
  std::vector<bool> seen(x.dim(), false);
  for (int64_t i = 0; i < x.dim(); i++) {
    order[i] = normalize_dim(order_in[i], x, "permute");
    check(!seen[order[i]], "permute", ": dim ", order_in[i], " repeated in ", order_in);
    seen[order[i]] = true;
    inv[order[i]] = i;
    s[i] = x.size(order[i]);
    st[i] = x.strides()[order[i]];
  }
  Tensor out = make_view(x, s, st, x.offset());
  record("permute", {x}, out, {}, [inv](const Node&, const Tensor& g) {
    Shape s(g.dim()), st(g.dim());
    for (int64_t i = 0; i < g.dim(); i++) {
      s[i] = g.size(inv[i]);
      st[i] = g.strides()[inv[i]];
    }
    return std::vector<Tensor>{make_view(g, s, st, g.offset())};
  }, {{"order", order}});
  return out;
}
Tensor Tensor::permute(const Shape& order) const { return skipgrad::permute(*this, order); }

// y = x[start:end:step] along dim:  gx = zeros with g written into that slice
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_defined("slice", x);
  int64_t d = normalize_dim(dim, x, "slice");
  const int64_t n = x.size(d);
  check(step > 0, "slice", ": step must be positive, got ", step);
  // Negative bounds count from the end; after that 0 <= start <= end <= n (no silent clamping).
  const int64_t start_in = start, end_in = end;
  if (start < 0) start += n;
  if (end < 0) end += n;
  if (start < 0 || start > end || end > n)
    fail("slice", ": range [", start_in, ", ", end_in, ") out of bounds for dim ", dim, " of size ", n, " in ",
         x.meta_str());
  Shape s = x.shape(), st = x.strides();
  s[d] = end == start ? 0 : 1 + (end - start - 1) / step;  // no overflow for any step
  // one element (or none): its stride never matters, and step * stride could overflow
  const int64_t view_step = s[d] <= 1 ? 1 : step;
  st[d] *= view_step;
  Tensor out = make_view(x, s, st, x.offset() + start * x.strides()[d]);
  record("slice", {x}, out, {}, [xs = x.shape(), d, start, view_step](const Node&, const Tensor& g) {
    Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
    Shape st = gx.strides();
    st[d] *= view_step;
    Tensor window = make_view(gx, g.shape(), st, start * gx.strides()[d]);
    be(g).copy(g, window);
    return std::vector<Tensor>{gx};
  }, {{"dim", d}, {"start", start}, {"end", end}, {"step", step}});
  return out;
}
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return skipgrad::slice(*this, dim, start, end, step);
}
Tensor Tensor::narrow(int64_t dim, int64_t start, int64_t length) const {
  check_defined("narrow", *this, "the tensor");
  int64_t d = normalize_dim(dim, *this, "narrow");
  const int64_t given = start;
  if (start < 0 && start >= -size(d)) start += size(d);  // from the end of the dim, as torch
  int64_t end = 0;
  const bool overflow = __builtin_add_overflow(start, length, &end);
  if (start < 0 || length < 0 || overflow || end > size(d))
    fail("narrow", ": range [", start, ", ", overflow ? std::string("past int64") : std::to_string(end), ")",
         given != start ? " (start " + std::to_string(given) + ", counted from the end)" : std::string(),
         " out of bounds for dim ", dim, " of size ", size(d), " in ", meta_str());
  return skipgrad::slice(*this, d, start, end);
}
Tensor Tensor::select(int64_t dim, int64_t index) const {
  check_defined("select", *this, "the tensor");
  int64_t d = normalize_dim(dim, *this, "select");
  int64_t i = index < 0 ? index + size(d) : index;
  check(i >= 0 && i < size(d), "select", ": index ", index, " out of range for dim ", dim, " of size ", size(d));
  return narrow(d, i, 1).squeeze(d);
}

// y = x broadcast to shape:  gx = sum_to(g, x's shape)
Tensor expand(const Tensor& x, const Shape& shape_in) {
  check_defined("expand", x);
  Shape shape = shape_in;
  const int64_t lead = (int64_t)shape.size() - x.dim();
  for (int64_t i = 0; i < (int64_t)shape.size(); i++) {
    if (shape[i] == -1) {
      check(i >= lead, "expand", ": -1 not allowed for a new leading dim in ", shape_in);
      shape[i] = x.size(i - lead);
    }
    check(shape[i] >= 0, "expand", ": invalid size in ", shape_in);
  }
  check_shape(shape, "expand");  // a count past 2^60 elements would overflow numel
  Tensor out = broadcast_to(x, shape, "expand");
  record("expand", {x}, out, {}, [xs = x.shape()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{sum_to(g, xs)};
  }, {{"shape", shape}});
  return out;
}
Tensor Tensor::expand(const Shape& shape) const { return skipgrad::expand(*this, shape); }

// A contiguous copy (or x itself when already contiguous):  gx = g
Tensor Tensor::contiguous() const {
  check_defined("contiguous", *this, "the tensor");
  if (is_contiguous()) return *this;
  Tensor out = contiguous_raw(*this);
  record("contiguous", {*this}, out, {}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::clone() const {
  check_defined("clone", *this, "the tensor");
  Tensor out = Tensor::empty(shape(), dtype(), device());
  backend_for(device()).copy(*this, out);
  record("contiguous", {*this}, out, {}, [](const Node&, const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

void Tensor::copy_(const Tensor& src) {
  check_defined("copy_", *this, "the destination");
  check_defined("copy_", src, "the source");
  if (src.device() != device() && !src.device().is_cpu() && !device().is_cpu())
    fail("copy_", ": cannot copy ", src.meta_str(), " into ", meta_str());
  for (int64_t d = 0; d < dim(); d++)  // one memory location would receive several elements, in no set order
    if (shape()[d] > 1 && strides()[d] == 0)
      fail("copy_", ": the destination ", meta_str(), " is a broadcast view (dim ", d,
           " has stride 0): its elements share memory; copy into a tensor that owns each element");
  // copy_ is not recorded. With grad on it refuses what would make a gradient silently wrong (torch records a
  // CopySlices node instead): a source that requires grad (its gradient would be lost: a KV cache filled from k)
  // and a destination made by a recorded op, a view of a parameter included (the backward would pass through the
  // overwritten elements as if they were still there). A parameter itself may be written: an op that saved it
  // refuses its backward (version check), and one that did not save it has the same gradient either way.
  if (grad_enabled()) {
    if (src.requires_grad())
      fail("copy_", ": the source ", src.meta_str(), " requires grad, and copy_ is not recorded: its gradient "
           "would be lost. Build the tensor out of place (cat, where, masked_fill), or copy src.detach() under "
           "NoGradGuard");
    if (requires_grad() && !is_leaf())
      fail("copy_", ": the destination ", meta_str(), " is the result of a recorded op (or a view of a tensor "
           "that requires grad), and copy_ is not recorded: the backward would ignore the write. Build the tensor "
           "out of place (cat, where, masked_fill), or write under NoGradGuard (torch's no_grad)");
  }
  Tensor s = broadcast_to(src, shape(), "copy_");
  bump_version();  // the write is counted (before it: one that throws midway has written part); the checks wrote none
  if (s.device() == device() && s.numel() > 0 && s.shares_storage(*this)) {
    // the source is (part of) the same memory, e.g. x.copy_(x.t()) or shifted slices: read it all before writing
    Tensor tmp = Tensor::empty(s.shape(), s.dtype(), device());
    backend_for(device()).copy(s, tmp);
    s = tmp;
  }
  if (s.device() == device()) {
    backend_for(device()).copy(s, *this);
  } else {  // cross-device: the non-CPU backend moves contiguous data
    Tensor sc = contiguous_raw(s);
    if (is_contiguous()) backend_for(device().is_cpu() ? s.device() : device()).copy(sc, *this);
    else {
      Tensor tmp = Tensor::empty(shape(), src.dtype(), device());
      backend_for(device().is_cpu() ? s.device() : device()).copy(sc, tmp);
      backend_for(device()).copy(tmp, *this);
    }
  }
}

// y = x cast to dtype:  gx = g cast back
Tensor Tensor::to(DType dt) const {
  check_defined("to", *this, "the tensor");
  if (dt == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), dt, device());
  backend_for(device()).copy(*this, out);
  if (is_floating(dt) && is_floating(dtype())) record_cast(*this, out);
  return out;
}

void record_cast(const Tensor& src, Tensor& out) {
  record("to_dtype", {src}, out, {}, [from = src.dtype()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.to(from)};
  }, {{"dtype", std::string(dtype_name(out.dtype()))}});
}

// y = x on another device:  gx = g moved back
Tensor Tensor::to(Device d) const {
  check_defined("to", *this, "the tensor");
  if (d == device()) return *this;
  Tensor src = contiguous_raw(*this);
  Tensor out = Tensor::empty(shape(), dtype(), d);
  // The non-CPU side's backend knows how to move memory between host and device.
  backend_for(d.is_cpu() ? device() : d).copy(src, out);
  record("to_device", {*this}, out, {}, [src_dev = device()](const Node&, const Tensor& g) {
    return std::vector<Tensor>{g.to(src_dev)};
  }, {{"device", d.str()}});
  return out;
}

// y = [x0, x1, ...] along dim:  gx_i = the matching slice of g
Tensor concat(const std::vector<Tensor>& ts, int64_t dim) {
  check(!ts.empty(), "concat", ": no tensors given");
  for (const Tensor& t : ts) check_defined("concat", t);
  check_same_device("concat", ts);
  const Tensor& f = ts[0];
  int64_t d = normalize_dim(dim, f, "concat");
  Shape s = f.shape();
  s[d] = 0;
  for (const Tensor& t : ts) {
    if (t.dim() != f.dim() || t.dtype() != f.dtype())
      fail("concat", ": tensors differ in rank or dtype: ", f.meta_str(), " and ", t.meta_str());
    for (int64_t k = 0; k < f.dim(); k++)
      check(k == d || t.size(k) == f.size(k), "concat", ": sizes differ outside dim ", d, ": ", f.shape(), " and ",
            t.shape());
    s[d] += t.size(d);
  }
  Tensor out = Tensor::empty(s, f.dtype(), f.device());
  Shape sizes;
  int64_t at = 0;
  for (const Tensor& t : ts) {
    Tensor window = make_view(out, t.shape(), out.strides(), at * out.strides()[d]);
    be(t).copy(t, window);
    sizes.push_back(t.size(d));
    at += t.size(d);
  }
  record("concat", ts, out, {}, [d, sizes](const Node& n, const Tensor& g) {
    std::vector<Tensor> gs;
    int64_t at = 0;
    for (size_t i = 0; i < sizes.size(); i++) {
      Shape s = g.shape();
      s[d] = sizes[i];
      if (needs_grad(n, i)) gs.push_back(contiguous_raw(make_view(g, s, g.strides(), g.offset() + at * g.strides()[d])));
      else gs.push_back(Tensor());
      at += sizes[i];
    }
    return gs;
  }, {{"dim", d}});
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim) {
  check_defined("split", x);
  check(size > 0, "split", ": split size must be positive, got ", size);
  int64_t d = normalize_dim(dim, x, "split");
  std::vector<Tensor> out;
  for (int64_t s = 0; s < x.size(d); s += size) out.push_back(slice(x, d, s, std::min(s + size, x.size(d))));
  if (out.empty()) out.push_back(slice(x, d, 0, 0));  // a size-0 dim: one empty piece, as PyTorch
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  check_defined("chunk", x);
  check(chunks > 0, "chunk", ": number of chunks must be positive, got ", chunks);
  int64_t d = normalize_dim(dim, x, "chunk");
  if (x.size(d) == 0) {  // `chunks` empty pieces, as PyTorch: each a view of its own (hooks, names, retain_grad)
    std::vector<Tensor> pieces;
    for (int64_t i = 0; i < chunks; i++) pieces.push_back(slice(x, d, 0, 0));
    return pieces;
  }
  return split(x, std::max<int64_t>(1, (x.size(d) + chunks - 1) / chunks), d);
}

Tensor stack(const std::vector<Tensor>& ts, int64_t dim) {
  check(!ts.empty(), "stack", ": no tensors given");
  for (const Tensor& t : ts) check_defined("stack", t);
  int64_t d = normalize_dim(dim, ts[0].dim() + 1, "stack");
  std::vector<Tensor> us;
  for (const Tensor& t : ts) {
    if (t.shape() != ts[0].shape())
      fail("stack", ": all tensors must have the same shape, got ", ts[0].meta_str(), " and ", t.meta_str());
    us.push_back(t.unsqueeze(d));
  }
  return concat(us, d);
}

}  // namespace skipgrad
