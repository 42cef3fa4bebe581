// Neural-network ops: softmax, norms, embedding, cross entropy, dropout, masked_fill, where.
// Each is one node with an analytic backward written next to its forward. The fused row kernels of the backend
// work on contiguous [rows, cols] data along cols, so an op moves its dim last and makes its input contiguous
// (no copy in the common case: a contiguous input reduced over its last dim).
#include "autograd/ops_common.h"

namespace skipgrad {

namespace {

// A raw view of t with dim d and the last dim swapped (its own inverse); not recorded.
Tensor swap_with_last(const Tensor& t, int64_t d) {
  const int64_t last = t.dim() - 1;
  if (t.dim() == 0 || d == last) return t;
  Shape s = t.shape(), st = t.strides();
  std::swap(s[d], s[last]);
  std::swap(st[d], st[last]);
  return make_view(t, s, st, t.offset());
}

// out = cond != 0 ? a : b with all three broadcast to `shape`; not recorded.
Tensor where_raw(const Tensor& cond, const Tensor& a, const Tensor& b, const Shape& shape, const char* op) {
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  be(a).where(broadcast_to(cond, shape, op), broadcast_to(a, shape, op), broadcast_to(b, shape, op), out);
  return out;
}

// A 0-dim tensor of t's dtype and device.
Tensor scalar_like(const Tensor& t, double v) { return Tensor::scalar(v, t.dtype(), t.device()); }

// A norm parameter's dtype (DyT's alpha too): x's, or float32 for a bf16 x.
void check_norm_param_dtype(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (p.dtype() != x.dtype() && !(x.dtype() == DType::BF16 && p.dtype() == DType::F32))
    fail(op, ": ", what, " ", p.meta_str(), " for input ", x.meta_str(),
         ": expected the input's dtype, or float32 for a bfloat16 input");
}
// Checks a per-feature parameter (gamma, beta, weight) of a norm over the last dim of x: undefined, or [d] of x's
// dtype, or of float32 for a bf16 x (normalised in float32: the output bf16, the parameters' gradients float32).
void check_norm_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  if (!(p.dim() == 1 && p.size(0) == x.shape().back()))
    fail(op, ": ", what, " must have shape [", x.shape().back(), "] (the input's last dim), got ", p.meta_str(),
         " for input ", x.meta_str());
  check_norm_param_dtype(op, what, p, x);
}
// The dtype of a norm's parameters (and their gradients): the first defined one's, else x's.
DType norm_param_dtype(const Tensor& x, const Tensor& p, const Tensor& q = Tensor()) {
  return p.defined() ? p.dtype() : q.defined() ? q.dtype() : x.dtype();
}

void check_norm_input(const char* op, const Tensor& x, double eps) {
  check_floating(op, x);
  if (x.dim() < 1)
    fail(op, ": expected an input with at least 1 dim, got ", x.meta_str());
  check(eps >= 0, op, ": eps must be >= 0, got ", eps);
}

}  // namespace

// ---------------------------------------------------------------- softmax, log_softmax

namespace {
// softmax:     y = exp(x - max) / sum(exp(x - max)),  gx = y * (g - sum(g * y))
// log_softmax: y = x - logsumexp(x),                   gx = g - exp(y) * sum(g)
Tensor softmax_op(const char* name, const Tensor& x, int64_t dim, bool log) {
  if (log && autocast::wants_f32({&x})) return softmax_op(name, autocast::to_f32(x), dim, log);
  check_floating(name, x);
  if (x.dim() == 0) {  // a line of one (check_scalar_dim): softmax 1, log_softmax 0, through the one-element op
    check_scalar_dim(name, dim, x);
    return reshape(softmax_op(name, reshape(x, {1}), 0, log), {});
  }
  const int64_t d = normalize_dim(dim, x, name);
  Tensor x_rows = contiguous_raw(swap_with_last(x, d));  // [..., C] with the softmax dim last
  Tensor y_rows = Tensor::empty(x_rows.shape(), x.dtype(), x.device());
  be(x).softmax(x_rows, y_rows, log, SoftmaxMask{});
  Tensor out = contiguous_raw(swap_with_last(y_rows, d));
  record(name, {x}, out, {out}, [d, log](const Node& n, const Tensor& g) {
    Tensor y_rows = contiguous_raw(swap_with_last(n.saved[0], d));
    Tensor g_rows = contiguous_raw(swap_with_last(g, d));
    Tensor gx_rows = Tensor::empty(y_rows.shape(), g.dtype(), g.device());
    be(g).softmax_backward(y_rows, g_rows, gx_rows, log);
    return std::vector<Tensor>{contiguous_raw(swap_with_last(gx_rows, d))};
  }, {{"dim", d}});
  return out;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_op("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_op("log_softmax", x, dim, true); }

// ---------------------------------------------------------------- layer_norm, rms_norm, l2_norm

namespace {
// Where a norm's rows live. The row kernels want contiguous [rows, cols] data, and the rows of a norm are independent,
// so any layout whose rows are contiguous and fill one dense block will do, in whatever order the rows come: a
// contiguous x, or a permutation of its leading dims such as attention's heads [B, H, T, dh] inside a projection's
// [B, T, H*dh] (HybridNorm's QKV norms). Then the norm reads x where it is and its output and input gradient get x's
// layout: no copy in or out. Any other x is copied to contiguous first.
struct NormLayout {
  Shape shape, strides;  // the shape, and the strides the norm's output and gradients have
  int64_t rows, cols;

  explicit NormLayout(const Tensor& x)
      : shape(x.shape()), strides(dense_rows(x) ? x.strides() : contiguous_strides(x.shape())),
        cols(std::max<int64_t>(x.dim() ? x.shape().back() : 1, 1)) {
    rows = x.numel() / cols;
  }
  // t (of shape `shape`) as [rows, cols] in this layout's row order: t itself when it has the layout, else a copy.
  Tensor rows_of(const Tensor& t) const {
    if (!has_layout(t)) {
      Tensor c = empty(t.dtype(), t.device());
      be(t).copy(t, c);
      return rows_of(c);
    }
    return make_view(t, {rows, cols}, {cols, 1}, t.offset());
  }
  Tensor empty(DType dt, Device d) const {
    return make_view(Tensor::empty({rows, cols}, dt, d), shape, strides, 0);
  }
  bool has_layout(const Tensor& t) const {
    for (size_t i = 0; i < shape.size(); i++)
      if (shape[i] != 1 && t.strides()[i] != strides[i]) return false;
    return true;
  }
  bool contiguous() const { return strides == contiguous_strides(shape); }

  // Whether x's rows (its last dim) are contiguous and, sorted by stride, its other dims tile one dense block.
  static bool dense_rows(const Tensor& x) {
    if (x.dim() == 0 || x.numel() == 0) return false;
    if (x.shape().back() != 1 && x.strides().back() != 1) return false;
    std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of the leading dims that are not 1
    for (int64_t d = 0; d + 1 < x.dim(); d++)
      if (x.shape()[d] != 1) dims.emplace_back(x.strides()[d], x.shape()[d]);
    std::sort(dims.begin(), dims.end());
    int64_t expect = x.shape().back();
    for (auto [stride, size] : dims) {
      if (stride != expect) return false;
      expect *= size;
    }
    return true;
  }
};

// A norm backward's input gradient: the gradient x has collected so far when the walk hands it over (the kernel
// adds into it: accumulate; x contiguous), else a new tensor in the norm's layout; undefined when x needs none.
Tensor norm_input_grad(const Node& n, const NormLayout& l, DType dt, Device d, bool& accumulate) {
  accumulate = false;
  if (!needs_grad(n, 0)) return Tensor();
  Tensor gx = l.contiguous() ? take_grad_accumulator(n, 0, dt) : Tensor();
  accumulate = gx.defined();
  return accumulate ? gx : l.empty(dt, d);
}
}  // namespace

// xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps);  y = xhat * gamma + beta  (over the last dim)
// gx = rstd * (gg - mean(gg) - xhat * mean(gg * xhat)) with gg = g * gamma;  ggamma = sum_rows(g * xhat);
// gbeta = sum_rows(g). gx is added into the gradient x has collected so far when the walk hands it over.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const char* op = "layer_norm";
  // bf16 parameters: float32 ones (a bf16 x is normalised as it is; a float64 x meets the dtype check as given)
  if (x.defined() && x.dtype() != DType::F64 && autocast::wants_f32({&gamma, &beta}))
    return layer_norm(x, autocast::to_f32(gamma), autocast::to_f32(beta), eps);
  check_norm_input(op, x, eps);
  check_norm_param(op, "gamma", gamma, x);
  check_norm_param(op, "beta", beta, x);
  check_same_device(op, {x, gamma, beta});
  if (gamma.defined() && beta.defined() && gamma.dtype() != beta.dtype())
    fail(op, ": gamma ", gamma.meta_str(), " and beta ", beta.meta_str(), " differ in dtype");
  const DType pdt = norm_param_dtype(x, gamma, beta);
  const NormLayout l(x);
  Tensor xr = l.rows_of(x);
  Tensor gc = gamma.defined() ? contiguous_raw(gamma) : Tensor();
  Tensor bc = beta.defined() ? contiguous_raw(beta) : Tensor();
  Tensor mean = Tensor::empty({l.rows, 2}, stat_dtype(x), x.device());  // each row's mean as hi + lo (backend.h)
  Tensor rstd = Tensor::empty({l.rows}, stat_dtype(x), x.device());
  Tensor out = l.empty(x.dtype(), x.device());
  Tensor out_rows = l.rows_of(out);
  be(x).layer_norm(xr, gc, bc, eps, out_rows, mean, rstd);
  record(op, {x, gamma, beta}, out, {xr, gc, mean, rstd}, [l, pdt](const Node& n, const Tensor& g) {
    const Tensor &x = n.saved[0], &gamma = n.saved[1], &mean = n.saved[2], &rstd = n.saved[3];
    bool accumulate = false;
    Tensor gx = norm_input_grad(n, l, x.dtype(), x.device(), accumulate);
    Tensor gx_rows = gx.defined() ? l.rows_of(gx) : Tensor();
    const int64_t features = l.shape.back();  // l.cols is at least 1 (a [rows, 1] view of an empty x)
    Tensor ggamma = needs_grad(n, 1) ? Tensor::empty({features}, pdt, x.device()) : Tensor();
    Tensor gbeta = needs_grad(n, 2) ? Tensor::empty({features}, pdt, x.device()) : Tensor();
    if (features > 0)  // else every gradient is empty: nothing to write
      be(g).layer_norm_backward(l.rows_of(g), x, mean, rstd, gamma, gx_rows, ggamma, gbeta, accumulate);
    return std::vector<Tensor>{gx, ggamma, gbeta};
  }, {{"eps", eps}});
  return out;
}

// rstd = 1/sqrt(mean(x^2) + eps), xhat = x * rstd;  y = xhat * weight  (over the last dim)
// gx = rstd * (gw - xhat * mean(gw * xhat)) with gw = g * weight;  gweight = sum_rows(g * xhat)
// (gx added into x's gradient so far, as layer_norm's)
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  const char* op = "rms_norm";
  if (x.defined() && x.dtype() != DType::F64 && autocast::wants_f32({&weight}))  // as layer_norm
    return rms_norm(x, autocast::to_f32(weight), eps);
  check_norm_input(op, x, eps);
  check_norm_param(op, "weight", weight, x);
  check_same_device(op, {x, weight});
  const NormLayout l(x);
  Tensor xr = l.rows_of(x);
  Tensor wc = weight.defined() ? contiguous_raw(weight) : Tensor();
  Tensor rstd = Tensor::empty({l.rows}, stat_dtype(x), x.device());
  Tensor out = l.empty(x.dtype(), x.device());
  Tensor out_rows = l.rows_of(out);
  be(x).rms_norm(xr, wc, eps, out_rows, rstd);
  record(op, {x, weight}, out, {xr, wc, rstd}, [l](const Node& n, const Tensor& g) {
    const Tensor &x = n.saved[0], &weight = n.saved[1], &rstd = n.saved[2];
    bool accumulate = false;
    Tensor gx = norm_input_grad(n, l, x.dtype(), x.device(), accumulate);
    Tensor gx_rows = gx.defined() ? l.rows_of(gx) : Tensor();
    Tensor gweight = needs_grad(n, 1) ? Tensor::empty(weight.shape(), weight.dtype(), x.device()) : Tensor();
    be(g).rms_norm_backward(l.rows_of(g), x, rstd, weight, gx_rows, gweight, accumulate);
    return std::vector<Tensor>{gx, gweight};
  }, {{"eps", eps}});
  return out;
}

// s = max(||x||_2, eps) over the last dim;  y = x / s
// gx = (g - [||x|| > eps] * y * sum(g * y)) / s   (where the norm is clamped, y = x / eps is linear in x)
Tensor l2_norm(const Tensor& x, double eps) {
  const char* op = "l2_norm";
  check_norm_input(op, x, eps);
  Tensor out, s;
  {
    NoGradGuard no_grad;  // the pieces below are this one node's forward, not nodes of their own
    Shape keep = x.shape();
    keep.back() = 1;
    std::vector<bool> last_dim(x.dim(), false);
    last_dim.back() = true;
    Tensor norms = Tensor::empty(keep, x.dtype(), x.device());
    be(x).reduce(ReduceOp::Norm2, x, last_dim, norms);
    s = maximum(norms, scalar_like(x, eps));
    out = div(x, s);
  }
  record(op, {x}, out, {out, s}, [eps](const Node& n, const Tensor& g) {
    const Tensor &y = n.saved[0], &s = n.saved[1];
    Tensor unclamped = gt(s, scalar_like(s, eps));  // 1 where ||x|| > eps
    Tensor g_dot_y = mul(sum(mul(g, y), {-1}, true), unclamped);
    return std::vector<Tensor>{div(sub(g, mul(y, g_dot_y)), s)};
  }, {{"eps", eps}});
  return out;
}

// ---------------------------------------------------------------- dyt

// DyT (Zhu, Chen, He, LeCun, Liu 2025), a norm's element-wise stand-in, over the last dim:
//   t = tanh(alpha · x),  y = weight ⊙ t + bias
//   gu = g ⊙ weight ⊙ (1 − t²):  gx = alpha · gu,  galpha = Σ gu ⊙ x,  gweight = Σ_rows g ⊙ t,  gbias = Σ_rows g
// One node of family "norm", as layer_norm is, so that path analysis counts it where a norm stood; one pass forward
// and one backward (Backend::dyt, dyt_backward: the CPU's and the GPU's own kernels), alpha read on the device. The
// backward recomputes t from x: the node keeps x, as a norm does. A bf16 x takes float32 parameters (autocast), as
// the norms do.
Tensor dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias) {
  const char* op = "dyt";
  if (x.defined() && x.dtype() != DType::F64 && autocast::wants_f32({&alpha, &weight, &bias}))  // as layer_norm
    return dyt(x, autocast::to_f32(alpha), autocast::to_f32(weight), autocast::to_f32(bias));
  check_norm_input(op, x, 0);
  check_defined(op, alpha, "alpha");
  if (!(alpha.numel() == 1 && alpha.dim() <= 1))
    fail(op, ": alpha must be one number, of shape [1] or [], got ", alpha.meta_str(), " for input ", x.meta_str());
  check_norm_param_dtype(op, "alpha", alpha, x);
  check_norm_param(op, "weight", weight, x);
  check_norm_param(op, "bias", bias, x);
  check_same_device(op, {x, alpha, weight, bias});
  for (const Tensor* p : {&weight, &bias})
    if (p->defined() && p->dtype() != alpha.dtype())
      fail(op, ": alpha ", alpha.meta_str(), " and ", p == &weight ? "weight " : "bias ", p->meta_str(),
           " differ in dtype");
  const NormLayout l(x);
  Tensor xr = l.rows_of(x);
  Tensor ac = contiguous_raw(alpha);
  Tensor wc = weight.defined() ? contiguous_raw(weight) : Tensor();
  Tensor bc = bias.defined() ? contiguous_raw(bias) : Tensor();
  Tensor out = l.empty(x.dtype(), x.device());
  Tensor out_rows = l.rows_of(out);
  be(x).dyt(xr, ac, wc, bc, out_rows);
  record(op, {x, alpha, weight, bias}, out, {xr, ac, wc}, [l](const Node& n, const Tensor& g) {
    const Tensor &x = n.saved[0], &alpha = n.saved[1], &weight = n.saved[2];
    bool accumulate = false;
    Tensor gx = norm_input_grad(n, l, x.dtype(), x.device(), accumulate);
    Tensor gx_rows = gx.defined() ? l.rows_of(gx) : Tensor();
    const int64_t features = l.shape.back();
    Tensor galpha = needs_grad(n, 1) ? Tensor::empty({1}, alpha.dtype(), x.device()) : Tensor();
    Tensor gweight = needs_grad(n, 2) ? Tensor::empty({features}, alpha.dtype(), x.device()) : Tensor();
    Tensor gbias = needs_grad(n, 3) ? Tensor::empty({features}, alpha.dtype(), x.device()) : Tensor();
    if (features > 0) {  // (else every gradient but alpha's is empty: l.cols is 1 for a [rows, 0] x)
      be(g).dyt_backward(l.rows_of(g), x, alpha, weight, gx_rows, galpha, gweight, gbias, accumulate);
    } else if (galpha.defined()) {
      galpha = Tensor::zeros({1}, alpha.dtype(), x.device());
    }
    if (galpha.defined()) galpha = reshape_raw(galpha, alpha.shape());  // ([1] from the kernel; alpha may be 0-d)
    return std::vector<Tensor>{gx, galpha, gweight, gbias};
  });
  return out;
}

// ---------------------------------------------------------------- embedding

// out[i, :] = weight[ids[i], :]:  gweight[v, :] = sum over {i : ids[i] == v} of g[i, :]  (none for padding_idx)
Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx) {
  const char* op = "embedding";
  check_floating(op, weight);
  if (weight.dim() != 2)
    fail(op, ": weight must be [num_embeddings, dim], got ", weight.meta_str());
  check_defined(op, ids, "ids");
  if (ids.dtype() != DType::I64)
    fail(op, ": ids must be int64, got ", ids.meta_str());
  check_same_device(op, {weight, ids});
  const int64_t V = weight.size(0), D = weight.size(1);
  if (!(padding_idx >= -1 && padding_idx < V))
    fail(op, ": padding_idx ", padding_idx, " is out of range [0, ", V, ") (use -1 for none) for weight ",
         weight.meta_str());
  Tensor ids_c = contiguous_raw(ids);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  try {
    be(weight).embedding(contiguous_raw(weight), ids_c, out);  // checks every id is in [0, V)
  } catch (const Error& e) {  // which table: "dec.pos_embed: embedding: id 64 ... out of range [0, 64)"
    if (current_scope().empty()) throw;
    fail(current_scope(), ": ", e.what());
  }
  // gweight[ids[i]] += g[i]: scattered into the weight's gradient so far when the walk hands it over (a tied
  // embedding's: the output projection's, the other side's embedding), else into zeros
  record(op, {weight, ids}, out, {ids_c}, [V, D, padding_idx](const Node& n, const Tensor& g) {
    Tensor gweight = take_grad_accumulator(n, 0, g.dtype());
    if (!gweight.defined()) gweight = Tensor::zeros({V, D}, g.dtype(), g.device());
    be(g).embedding_backward(n.saved[0], contiguous_raw(g), gweight, padding_idx);
    return std::vector<Tensor>{gweight, Tensor()};
  }, {{"padding_idx", padding_idx}});
  return out;
}

// ---------------------------------------------------------------- cross_entropy

namespace {
const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::Mean: return "mean";
    case Reduction::Sum: return "sum";
    case Reduction::None: return "none";
  }
  return "?";
}

// max(1, number of targets != ignore_index) as a 0-dim tensor of `dtype` on the targets' device. Counted on the
// device (no host synchronisation), in float64 so that every int64 id compares exactly enough.
Tensor count_kept(const Tensor& targets, int64_t ignore_index, DType dtype) {
  const Shape& s = targets.shape();
  Tensor t = Tensor::empty(s, DType::F64, targets.device());
  be(targets).copy(targets, t);
  Tensor kept = Tensor::empty(s, DType::F64, targets.device());
  be(t).binary(BinaryOp::Ne, t, broadcast_to(scalar_like(t, (double)ignore_index), s, "cross_entropy"), kept);
  return maximum(sum(kept), scalar_like(t, 1.0)).to(dtype);
}
}  // namespace

// Per row i with logp = log_softmax(x_i), V classes and smoothing ls (as PyTorch's F.cross_entropy):
//   loss_i = (1 - ls) * (-logp[t_i]) + ls * mean_j(-logp[j]),  0 where t_i == ignore_index
//   glogits_i = gloss_i * (softmax(x_i) - (1 - ls) * onehot(t_i) - ls / V),  0 where ignored
// Mean divides the sum by the number of non-ignored rows (the loss is 0, not NaN, when every row is ignored).
// bf16 logits are read as they are and computed on in float32: the loss is float32 (autocast's policy for a loss,
// with no float32 copy of the logits), the logits' gradient bf16.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double label_smoothing,
                     Reduction reduction) {
  const char* op = "cross_entropy";
  check_floating(op, logits);
  if (!(logits.dim() >= 1 && logits.shape().back() > 0))
    fail(op, ": logits must be [..., num_classes], got ", logits.meta_str());
  check_defined(op, targets, "targets");
  if (targets.dtype() != DType::I64)
    fail(op, ": targets must be int64, got ", targets.meta_str());
  check_same_device(op, {logits, targets});
  const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  if (targets.shape() != lead)
    fail(op, ": targets ", targets.meta_str(), " must have shape ", lead,
         " (the logits' shape without the class dim) for logits ", logits.meta_str());
  check(label_smoothing >= 0 && label_smoothing <= 1, op, ": label_smoothing must be in [0, 1], got ",
        label_smoothing);
  const int64_t V = logits.shape().back(), N = numel_of(lead);
  Tensor x = reshape_raw(contiguous_raw(logits), {N, V});
  Tensor t = reshape_raw(contiguous_raw(targets), {N});
  Tensor loss = Tensor::empty({N}, stat_dtype(logits), logits.device());
  Tensor stats = Tensor::empty({N, 2}, stat_dtype(logits), logits.device());  // each row's max and log-sum-exp
  be(x).cross_entropy(x, t, ignore_index, label_smoothing, loss, stats);       // checks every target
  Tensor out, denom;
  {
    NoGradGuard no_grad;
    if (reduction == Reduction::None) {
      out = reshape_raw(loss, lead);
    } else {
      out = sum(loss);
      if (reduction == Reduction::Mean) {
        denom = count_kept(t, ignore_index, loss.dtype());
        out = div(out, denom);
      }
    }
  }
  record(op, {logits, targets}, out, {x, t, stats, denom},
         [N, reduction, ignore_index, label_smoothing, shape = logits.shape()](const Node& n, const Tensor& g) {
    const Tensor &x = n.saved[0], &t = n.saved[1], &stats = n.saved[2], &denom = n.saved[3];
    Tensor gloss;  // d out / d loss_i, [N]
    if (reduction == Reduction::None) gloss = contiguous_raw(reshape_raw(g, {N}));
    else gloss = contiguous_raw(broadcast_to(reduction == Reduction::Mean ? div(g, denom) : g, {N}, "cross_entropy"));
    Tensor gx = Tensor::empty(x.shape(), x.dtype(), x.device());
    be(g).cross_entropy_backward(x, t, stats, gloss, ignore_index, label_smoothing, gx);
    return std::vector<Tensor>{reshape_raw(gx, shape), Tensor()};
  }, {{"ignore_index", ignore_index}, {"label_smoothing", label_smoothing},
      {"reduction", std::string(reduction_name(reduction))}});
  return out;
}

// ---------------------------------------------------------------- dropout

// y = x * mask, mask_i = [u_i >= p] / (1 - p) (inverted dropout), u_i drawn from the generator's (seed, offset + i)
// for element i in row-major order:  gx = g * mask. The mask is not kept: the backward draws it again from the
// same seed and offset (Backend::dropout), so a dropout costs no memory between forward and backward.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  const char* op = "dropout";
  check_floating(op, x);
  check(p >= 0 && p <= 1, op, ": p must be in [0, 1], got ", p);
  if (!training || p == 0) return x;
  if (p == 1) return x * 0.0;  // everything dropped (torch: x times a zero; its gradient is 0)
  Generator& rng = gen ? *gen : default_generator();
  const uint64_t seed = rng.seed();
  const uint64_t offset = rng.advance((uint64_t)x.numel());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).dropout(contiguous_raw(x), out, p, seed, offset);
  record(op, {x}, out, {}, [p, seed, offset](const Node&, const Tensor& g) {
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    be(g).dropout(contiguous_raw(g), gx, p, seed, offset);
    return std::vector<Tensor>{gx};
  }, {{"p", p}});
  return out;
}

// ---------------------------------------------------------------- masked_fill, where

// y = mask != 0 ? value : x  (mask broadcast to x):  gx = mask != 0 ? 0 : g
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  const char* op = "masked_fill";
  check_defined(op, x);
  check_defined(op, mask, "mask");
  check_same_device(op, {x, mask});
  if (broadcast_shapes(mask.shape(), x.shape(), op) != x.shape())
    fail(op, ": mask ", mask.meta_str(), " cannot be broadcast to the input ", x.meta_str());
  check_fits(value, x.dtype(), op);
  if (is_integer(x.dtype()) && value != std::trunc(value))
    fail(op, ": the value ", value, " is not an integer, and ", x.meta_str(), " holds integers");
  Tensor out = where_raw(mask, scalar_like(x, value), x, x.shape(), op);
  record(op, {x, mask}, out, {mask}, [](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{where_raw(n.saved[0], scalar_like(g, 0), g, g.shape(), "masked_fill"), Tensor()};
  }, {{"value", value}});
  return out;
}

// y = cond != 0 ? a : b  (all three broadcast):  ga = sum_to(cond ? g : 0),  gb = sum_to(cond ? 0 : g)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const char* op = "where";
  check_defined(op, cond, "cond");
  check_defined(op, a, "first input");
  check_defined(op, b, "second input");
  check_same_device(op, {cond, a, b});
  if (a.dtype() != b.dtype())
    fail(op, ": dtypes differ: ", a.meta_str(), " and ", b.meta_str());
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), op), b.shape(), op);
  Tensor out = where_raw(cond, a, b, shape, op);
  record(op, {cond, a, b}, out, {cond}, [sa = a.shape(), sb = b.shape()](const Node& n, const Tensor& g) {
    const Tensor& cond = n.saved[0];
    Tensor zero = scalar_like(g, 0);
    return std::vector<Tensor>{
        Tensor(),
        needs_grad(n, 1) ? sum_to(where_raw(cond, g, zero, g.shape(), "where"), sa) : Tensor(),
        needs_grad(n, 2) ? sum_to(where_raw(cond, zero, g, g.shape(), "where"), sb) : Tensor()};
  });
  return out;
}

}  // namespace skipgrad
