// Ops that pick elements by index: argmax, topk and sort (which elements), gather and index_select (read them, with a
// gradient scattered back), multinomial and Tensor::randint (draw indices at random).
//
// The kernels are shared: topk (argmax is k = 1) has one backend method; gather and index_select are embedding
// lookups (lookup_rows) of x seen as a table, of one-element rows at flat offsets computed here or of whole rows,
// so their forward and backward are the embedding kernels; multinomial and randint are made of existing ops
// (cumsum, rand, comparisons, topk).
#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/ops_common.h"

namespace skipgrad {

namespace {

// The indices of x's k first elements along dim in topk's order (Backend::topk). bfloat16 is compared in a float32
// copy, which holds its values exactly.
Tensor topk_indices(const Tensor& x, int64_t d, int64_t k, bool largest) {
  Tensor xc;
  if (x.dtype() == DType::BF16) {  // one copy, contiguous and in float32
    xc = Tensor::empty(x.shape(), DType::F32, x.device());
    be(x).copy(x, xc);
  } else {
    xc = contiguous_raw(x);
  }
  Shape out_shape = x.shape();
  out_shape[d] = k;
  Tensor out = Tensor::empty(out_shape, DType::I64, x.device());
  be(x).topk(xc, d, k, largest, out);
  return out;
}

// On the CPU, names the first index outside [0, n): the lookup would only say that a flat offset was bad.
void check_index_range_on_cpu(const char* op, const Tensor& idx_c, int64_t n, int64_t d, const Tensor& x) {
  if (!idx_c.device().is_cpu()) return;
  const int64_t* p = static_cast<const int64_t*>(idx_c.data_ptr());
  for (int64_t i = 0; i < idx_c.numel(); i++)
    if (p[i] < 0 || p[i] >= n)
      fail(op, ": index ", p[i], " at position ", i, " of index ", idx_c.meta_str(), " is out of range [0, ", n,
           ") for dim ", d, " of ", x.meta_str());
}

// flat where idx is in [0, n), else kGatherOutOfRange, which the embedding lookup refuses (the GPU flags it as
// gather's and the next sync reports it), so it never reads a neighbouring row. The CPU checked every index
// before (check_index_range_on_cpu): nothing to mark.
Tensor mark_out_of_range(const Tensor& idx_c, int64_t n, const Tensor& flat) {
  if (idx_c.device().is_cpu()) return flat;
  auto i64 = [&](double v) { return Tensor::scalar(v, DType::I64, idx_c.device()); };
  return where(mul(ge(idx_c, i64(0)), lt(idx_c, i64((double)n))), flat, i64((double)kGatherOutOfRange));
}

// Where each element gather reads lies in contiguous x: for idx's element at (i_0, ..., i_{r-1}),
//   flat = sum_{e != d} i_e * stride_e + idx * stride_d     (stride: x's contiguous strides)
// built on idx's device from int64 tensors; an index outside [0, x.size(d)) is marked (mark_out_of_range).
Tensor gather_offsets(const Tensor& x, int64_t d, const Tensor& idx_c) {
  const Device dev = idx_c.device();
  const int64_t r = x.dim();
  const Shape stride = contiguous_strides(x.shape());
  auto i64 = [&](double v) { return Tensor::scalar(v, DType::I64, dev); };
  Tensor flat = mul(idx_c, i64((double)stride[d]));
  for (int64_t e = 0; e < r; e++) {
    if (e == d || idx_c.size(e) == 1) continue;  // (a size-1 dim adds 0)
    Shape along(r, 1);
    along[e] = idx_c.size(e);
    flat = add(flat, reshape_raw(Tensor::arange(0, (double)(idx_c.size(e) * stride[e]), (double)stride[e],
                                                DType::I64, dev), along));
  }
  return mark_out_of_range(idx_c, x.size(d), flat);
}

// out = rows `flat` of x seen as a table [x.numel() / D, D], shaped out_shape: the embedding lookup, recorded as a
// `gather` of x by idx. Backward: the embedding's scatter-add, gx[flat] += g (repeated rows add up), into zeros of
// x's shape. gather's table has rows of one element (D = 1); index_select along dim 0 reads whole rows.
Tensor lookup_rows(const Tensor& x, const Tensor& idx, int64_t d, Tensor flat, int64_t D, const Shape& out_shape) {
  const int64_t n = flat.numel();
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (n * D > 0) {
    Tensor out_rows = reshape_raw(out, {n, D});
    be(x).embedding(reshape_raw(contiguous_raw(x), {x.numel() / D, D}), flat, out_rows);
  }
  record("gather", {x, idx}, out, {flat}, [x_shape = x.shape(), n, D](const Node& node, const Tensor& g) {
    Tensor gx = Tensor::zeros(x_shape, g.dtype(), g.device());
    Tensor gx_rows = reshape_raw(gx, {gx.numel() / D, D});
    if (n * D > 0) be(g).embedding_backward(node.saved[0], reshape_raw(contiguous_raw(g), {n, D}), gx_rows, -1);
    return std::vector<Tensor>{gx, Tensor()};
  }, {{"dim", d}});
  return out;
}

// gather of an integer x (ids; no gradient): the lookup is for floats, so x goes through float64. An int64 x is
// split first as x = hi * 2^32 + lo with hi = trunc(min(float64(x) / 2^32, 2^31 - 1)) (off by at most one; the
// min keeps hi * 2^32 in int64 where float64(x) rounds up to 2^63) and lo = x - hi * 2^32 in int64: both exact in
// float64 (|hi| <= 2^31, |lo| < 2^33), so every int64 comes back exactly.
Tensor gather_integers(const Tensor& x, int64_t d, const Tensor& idx_c) {
  NoGradGuard no_grad;
  if (x.dtype() != DType::I64) return gather(x.to(DType::F64), d, idx_c).to(x.dtype());
  const Tensor two32 = Tensor::scalar(4294967296.0, DType::I64, x.device());
  Tensor hi = minimum(mul(x.to(DType::F64), 1.0 / 4294967296.0),
                      Tensor::scalar(2147483647.0, DType::F64, x.device())).to(DType::I64);
  Tensor lo = sub(x, mul(hi, two32));
  return add(mul(gather(hi.to(DType::F64), d, idx_c).to(DType::I64), two32),
             gather(lo.to(DType::F64), d, idx_c).to(DType::I64));
}

}  // namespace

// ---------------------------------------------------------------- argmax, topk (not differentiable: indices)

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined("argmax", x);
  if (x.dim() == 0) {  // a line of one (check_scalar_dim): its first element
    check_scalar_dim("argmax", dim, x);
    return Tensor::zeros({}, DType::I64, x.device());
  }
  const int64_t d = normalize_dim(dim, x, "argmax");
  check(x.size(d) > 0, "argmax", ": dim ", dim, " of ", x.meta_str(), " is empty: no maximum");
  Tensor out = topk_indices(x, d, 1, true);
  if (keepdim) return out;
  Shape squeezed = x.shape();
  squeezed.erase(squeezed.begin() + d);
  return reshape_raw(out, squeezed);
}

// values = gather(x, dim, indices): the values carry x's gradient (each to the element it came from).
TopK topk(const Tensor& x, int64_t k, int64_t dim, bool largest) {
  check_defined("topk", x);
  if (x.dim() == 0) {
    check_scalar_dim("topk", dim, x);
    check(k == 1, "topk", ": k = ", k, " for ", x.meta_str(), ": a 0-d tensor has one element, k must be 1");
    TopK r = topk(reshape(x, {1}), 1, 0, largest);
    return {reshape(r.values, {}), reshape(r.indices, {})};
  }
  const int64_t d = normalize_dim(dim, x, "topk");
  check(k >= 0 && k <= x.size(d), "topk", ": k = ", k, " is not in [0, ", x.size(d), "], the size of dim ", dim,
        " of ", x.meta_str());
  TopK r;
  r.indices = topk_indices(x, d, k, largest);
  r.values = gather(x, d, r.indices);
  return r;
}

// A sort is the top list of the whole dim: ascending is "smallest first", descending "largest first"; equal values
// keep their index order (torch.sort(stable=True)) and NaNs go last ascending, first descending (torch's "NaN is
// larger than every number").
TopK sort(const Tensor& x, int64_t dim, bool descending) {
  check_defined("sort", x);
  if (x.dim() == 0) {
    check_scalar_dim("sort", dim, x);
    return topk(x, 1, dim, descending);
  }
  const int64_t d = normalize_dim(dim, x, "sort");
  return topk(x, x.size(d), d, descending);
}

Tensor argsort(const Tensor& x, int64_t dim, bool descending) {
  check_defined("argsort", x);
  if (x.dim() == 0) {
    check_scalar_dim("argsort", dim, x);
    return Tensor::zeros({}, DType::I64, x.device());
  }
  const int64_t d = normalize_dim(dim, x, "argsort");
  return topk_indices(x, d, x.size(d), descending);
}

// ---------------------------------------------------------------- gather, index_select

// out[..., j, ...] = x[..., idx[..., j, ...], ...] along dim, as torch.gather: idx has x's rank and, on every other
// dim, a size no larger than x's. A lookup of one-element rows at the elements' flat offsets.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& idx) {
  const char* op = "gather";
  check_defined(op, x);
  check_defined(op, idx, "index");
  if (idx.dtype() != DType::I64) fail(op, ": index must be int64, got ", idx.meta_str());
  check_same_device(op, {x, idx});
  check(x.dim() > 0 && idx.dim() == x.dim(), op, ": expected x of rank >= 1 and an index of its rank, got x ",
        x.meta_str(), " and index ", idx.meta_str());
  const int64_t d = normalize_dim(dim, x, op);
  for (int64_t e = 0; e < x.dim(); e++)
    check(e == d || idx.size(e) <= x.size(e), op, ": index ", idx.meta_str(), " is larger than x ", x.meta_str(),
          " at dim ", e, " (only dim ", d, " may be larger)");
  Tensor idx_c = contiguous_raw(idx);
  check_index_range_on_cpu(op, idx_c, x.size(d), d, x);
  if (!is_floating(x.dtype())) return gather_integers(x, d, idx_c);
  const int64_t n = idx.numel();
  Tensor flat = n ? reshape_raw(gather_offsets(x, d, idx_c), {n}) : Tensor::empty({0}, DType::I64, x.device());
  return lookup_rows(x, idx, d, flat, 1, idx.shape());
}

// x's slices at positions idx (int64, 1-D) along dim, as torch.index_select: along dim 0 a lookup of whole rows
// (as embedding), else a gather whose index is idx broadcast over the other dims; the graph shows a `gather` node.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& idx) {
  const char* op = "index_select";
  check_defined(op, x);
  check_defined(op, idx, "index");
  check(x.dim() > 0 && idx.dim() == 1 && idx.dtype() == DType::I64, op,
        ": expected x of rank >= 1 and a 1-D int64 index, got x ", x.meta_str(), " and index ", idx.meta_str());
  const int64_t d = normalize_dim(dim, x, op);
  check_index_range_on_cpu(op, contiguous_raw(idx), x.size(d), d, x);  // (naming the position in idx itself)
  Shape along(x.dim(), 1), out_shape = x.shape();
  along[d] = out_shape[d] = idx.size(0);
  check_same_device(op, {x, idx});
  if (d == 0 && is_floating(x.dtype()) && x.numel() > 0) {
    Tensor idx_c = contiguous_raw(idx);
    return lookup_rows(x, idx, 0, mark_out_of_range(idx_c, x.size(0), idx_c), x.numel() / x.size(0), out_shape);
  }
  try {
    return gather(x, d, expand(reshape(idx, along), out_shape));
  } catch (const Error& e) {
    fail(op, ": ", e.what());
  }
}

// ---------------------------------------------------------------- multinomial (not differentiable: indices)

// With replacement, each draw inverts the row's cumulative sums: with u uniform in [0, 1) and t = (1 - u) * total
// in (0, total], the sample is the number of cumulative sums below t, i.e. the i with cdf_{i-1} < t <= cdf_i,
// whose weight is > 0. Without replacement, an exponential race: category i finishes at E_i / p_i with E_i ~ Exp(1),
// and the first num_samples to finish are a draw without replacement (the topk of p_i / E_i); a zero weight never
// finishes. All in float64; the random numbers come from the counter-based generator, so a seed gives the same
// samples on every device.
Tensor multinomial(const Tensor& probs, int64_t num_samples, bool replacement, Generator* gen) {
  const char* op = "multinomial";
  check_floating(op, probs);
  check(probs.dim() >= 1 && probs.shape().back() > 0, op, ": expected weights [..., categories] with at least one "
        "category, got ", probs.meta_str());
  const int64_t V = probs.shape().back(), R = probs.numel() / V;
  check(num_samples > 0, op, ": num_samples must be > 0, got ", num_samples);
  check(replacement || num_samples <= V, op, ": cannot draw ", num_samples, " samples without replacement from ",
        V, " categories");
  Shape out_shape = probs.shape();
  out_shape.back() = num_samples;
  if (R == 0) return Tensor::empty(out_shape, DType::I64, probs.device());  // no rows
  NoGradGuard no_grad;
  const Device dev = probs.device();
  Tensor p = reshape(probs.to(DType::F64), {R, V});
  {  // one host read: [weights that are negative, inf or NaN; fewest positive weights in a row]
    const double inf = std::numeric_limits<double>::infinity();
    Tensor valid = mul(ge(p, Tensor::scalar(0, DType::F64, dev)), lt(p, Tensor::scalar(inf, DType::F64, dev)));
    Tensor positive = sum(gt(p, Tensor::scalar(0, DType::F64, dev)), {1});
    const std::vector<double> s =
        concat({reshape(sum(valid), {1}), reshape(min(positive, {0}), {1})}, 0).to_vector<double>();
    check(s[0] == (double)p.numel(), op, ": ", (int64_t)(p.numel() - s[0]), " of the weights in ", probs.meta_str(),
          " are negative, inf or NaN");
    check(s[1] > 0, op, ": a row of ", probs.meta_str(), " has no positive weight");
    check(replacement || s[1] >= num_samples, op, ": a row of ", probs.meta_str(), " has only ", (int64_t)s[1],
          " positive weights: cannot draw ", num_samples, " without replacement");
  }
  if (!replacement) {
    Tensor e = neg(log(rsub(Tensor::rand({R, V}, 0, 1, DType::F64, dev, gen), 1.0)));  // Exp(1)
    Tensor finish = where(gt(p, Tensor::scalar(0, DType::F64, dev)), div(p, e), Tensor::scalar(-1, DType::F64, dev));
    return reshape(topk(finish, num_samples, 1).indices, out_shape);
  }
  Tensor cdf = cumsum(p, 1);
  Tensor total = reshape(slice(cdf, 1, V - 1, V), {R, 1, 1});
  Tensor cdf_rows = reshape(cdf, {R, 1, V});
  const int64_t chunk = std::max<int64_t>(1, (1 << 22) / (R * V));  // [R, chunk, V] comparisons at a time
  std::vector<Tensor> pieces;
  for (int64_t s0 = 0; s0 < num_samples; s0 += chunk) {
    const int64_t c = std::min(chunk, num_samples - s0);
    Tensor t = mul(rsub(Tensor::rand({R, c, 1}, 0, 1, DType::F64, dev, gen), 1.0), total);
    pieces.push_back(sum(lt(cdf_rows, t), {2}));
  }
  Tensor counts = pieces.size() == 1 ? pieces[0] : concat(pieces, 1);
  return reshape(counts.to(DType::I64), out_shape);
}

// low + floor(u * (high - low)) with u uniform in [0, 1) from float64's 53 bits: exact for a range up to 2^53.
Tensor Tensor::randint(int64_t low, int64_t high, const Shape& shape, DType dtype, Device device, Generator* gen) {
  const int64_t limit = int64_t(1) << 53;  // (float64 holds every integer up to it)
  check(low < high && low >= -limit && high <= limit && high - low <= limit, "randint", ": expected low < high within "
        "+-2^53, at most 2^53 apart, got [", low, ", ", high, ")");
  NoGradGuard no_grad;
  Tensor steps = mul(rand(shape, 0, 1, DType::F64, device, gen), (double)high - (double)low).to(DType::I64);
  return add(steps, Tensor::scalar((double)low, DType::I64, device)).to(dtype);
}

Tensor Tensor::argmax(int64_t dim, bool keepdim) const { return skipgrad::argmax(*this, dim, keepdim); }

}  // namespace skipgrad
