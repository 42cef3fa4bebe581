// Matrix products through the backend's GEMM: matmul (batched, broadcast, with transposes) and linear.
#include <algorithm>

#include "autograd/ops_common.h"

namespace skipgrad {

namespace {
// A matrix operand as GEMM wants it: batch dims collapsed to one stride, rows either unit-stride (ld = row
// stride) or columns unit-stride (read as transposed). Copies only when neither layout applies.
struct GemmOperand {
  Tensor t;        // the tensor whose data is read
  bool trans;      // read transposed
  int64_t ld, batch_stride;
};

GemmOperand gemm_operand(const Tensor& x, int64_t batch) {
  // x: [batch..., r, c] already broadcast; try strides as they are.
  const int64_t nd = x.dim();
  const int64_t r = x.size(-2), c = x.size(-1);
  const int64_t sr = x.strides()[nd - 2], sc = x.strides()[nd - 1];
  // batch dims must collapse to one stride (or be broadcast with stride 0 everywhere)
  int64_t bstride = 0;
  bool batch_ok = true;
  {
    int64_t expect = -1;
    for (int64_t d = nd - 3; d >= 0; d--) {
      if (x.size(d) == 1) continue;
      if (expect < 0) { bstride = x.strides()[d]; expect = bstride * x.size(d); }
      else if (x.strides()[d] != expect) { batch_ok = false; break; }
      else expect *= x.size(d);
    }
    if (batch == 1) bstride = 0;
  }
  BlasLayout l;
  if (batch_ok && blas_layout(r, c, sr, sc, l)) return {x, l.trans, l.ld, bstride};
  Tensor cx = contiguous_raw(x);
  return {cx, false, std::max<int64_t>(c, 1), r * c};
}

Tensor swap_last2(const Tensor& t) {
  Shape s = t.shape(), st = t.strides();
  std::swap(s[s.size() - 1], s[s.size() - 2]);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return make_view(t, s, st, t.offset());
}

// The shape of a2 @ b2: the broadcast batch dims, then [a2's rows, b2's columns].
Shape matmul_shape(const Tensor& a2, const Tensor& b2) {
  Shape ab(a2.shape().begin(), a2.shape().end() - 2), bb(b2.shape().begin(), b2.shape().end() - 2);
  Shape out_shape = broadcast_shapes(ab, bb, "matmul");
  out_shape.push_back(a2.size(-2));
  out_shape.push_back(b2.size(-1));
  return out_shape;
}

// out[...] = a2 @ b2 for operands of rank >= 2 whose batch dims broadcast (checked by the caller); with `into`
// (contiguous, of that shape) the product is added into it instead (beta = 1) and `into` returned.
Tensor matmul_raw(const Tensor& a2, const Tensor& b2, const Tensor& into = Tensor()) {
  const char* op = "matmul";
  const Shape out_shape = matmul_shape(a2, b2);
  const Shape batch_shape(out_shape.begin(), out_shape.end() - 2);
  const int64_t n = a2.size(-2), k = a2.size(-1), m = b2.size(-1), batch = numel_of(batch_shape);
  Tensor out = into.defined() ? into : Tensor::empty(out_shape, a2.dtype(), a2.device());
  if (k == 0) {
    if (!into.defined()) be(out).fill(out, 0);
    return out;
  }
  Shape as = batch_shape, bs = batch_shape;
  as.insert(as.end(), {n, k});
  bs.insert(bs.end(), {k, m});
  GemmOperand A = gemm_operand(broadcast_to(a2, as, op), batch);
  GemmOperand B = gemm_operand(broadcast_to(b2, bs, op), batch);
  GemmArgs g;
  g.dtype = a2.dtype();
  g.trans_a = A.trans;
  g.trans_b = B.trans;
  g.batch = batch;
  g.m = n;
  g.n = m;
  g.k = k;
  g.a = A.t.data_ptr(); g.lda = A.ld; g.stride_a = A.batch_stride;
  g.b = B.t.data_ptr(); g.ldb = B.ld; g.stride_b = B.batch_stride;
  g.c = out.data_ptr(); g.ldc = m; g.stride_c = n * m;
  g.beta = into.defined() ? 1 : 0;
  be(out).gemm(g);
  return out;
}

// Input j's gradient op(x) @ op(y) of a matmul node, added into the gradient collected so far when the walk hands
// it over and the product needs no sum over broadcast batch dims, else summed to `shape` on its own.
Tensor matmul_grad(const Node& n, size_t j, const Tensor& x, const Tensor& y, bool tx, bool ty, const Shape& shape) {
  const Tensor opx = tx ? swap_last2(x) : x, opy = ty ? swap_last2(y) : y;
  Tensor acc = matmul_shape(opx, opy) == shape ? take_grad_accumulator(n, j, x.dtype()) : Tensor();
  return acc.defined() ? matmul_raw(opx, opy, acc) : sum_to(matmul(x, y, tx, ty), shape);
}
}  // namespace

// C = op(A) @ op(B), op = optional transpose of the last two dims.
//   dA = ta ? op(B) @ g^T : g @ op(B)^T      dB = tb ? g^T @ op(A) : op(A)^T @ g   (then summed over broadcast;
//   added into the gradient collected so far where the walk hands it over: matmul_grad)
Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const char* op = "matmul";
  if (autocast::wants_bf16({&a, &b})) return matmul(autocast::to_bf16(a), autocast::to_bf16(b), ta, tb);
  check_defined(op, a, "first input");
  check_defined(op, b, "second input");
  check_same_device(op, {a, b});
  check_same_float_dtype(op, {a, b});
  check(a.dim() >= 1 && b.dim() >= 1, op, ": 0-d operands: ", a.shape(), " @ ", b.shape());
  if (a.dim() == 1 || b.dim() == 1) {  // numpy semantics via unsqueeze/squeeze
    check(!ta && !tb, op, ": transposes need operands of rank >= 2, got ", a.shape(), " @ ", b.shape());
    check(a.size(-1) == (b.dim() == 1 ? b.size(0) : b.size(-2)), op, ": inner dimensions differ: ", a.shape(),
          " @ ", b.shape());
    Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
    Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
    Tensor r = matmul(a2, b2);
    if (a.dim() == 1) r = r.squeeze(-2);
    if (b.dim() == 1) r = r.squeeze(-1);
    return r;
  }
  Tensor opa = ta ? swap_last2(a) : a, opb = tb ? swap_last2(b) : b;
  if (opa.size(-1) != opb.size(-2))
    fail(op, ": inner dimensions differ: ", a.shape(), ta ? "^T" : "", " @ ", b.shape(), tb ? "^T" : "");
  for (int64_t i = 3; i <= std::min(a.dim(), b.dim()); i++)
    if (a.size(-i) != b.size(-i) && a.size(-i) != 1 && b.size(-i) != 1)
      fail(op, ": batch dimensions do not broadcast: ", a.shape(), " @ ", b.shape());
  Tensor out = matmul_raw(opa, opb);
  record(op, {a, b}, out, {a, b}, [ta, tb](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    Tensor ga, gb;
    if (needs_grad(n, 0))
      ga = ta ? matmul_grad(n, 0, b, g, tb, true, a.shape()) : matmul_grad(n, 0, g, b, false, !tb, a.shape());
    if (needs_grad(n, 1))
      gb = tb ? matmul_grad(n, 1, g, a, true, ta, b.shape()) : matmul_grad(n, 1, a, g, !ta, false, b.shape());
    return std::vector<Tensor>{ga, gb};
  }, {{"trans_a", ta}, {"trans_b", tb}});
  return out;
}
Tensor Tensor::matmul(const Tensor& o) const { return skipgrad::matmul(*this, o); }

namespace {
// The GEMM C[m, n] = op(A) op(B) of two 2-D operands given as op(A) [m, k] and op(B) [k, n], into the contiguous c
// (of the operands' dtype, or float32 for bf16 operands: a gradient in its cast's source dtype, grad_dtype).
GemmArgs gemm_2d(const GemmOperand& A, const GemmOperand& B, int64_t m, int64_t n, int64_t k, Tensor& c) {
  GemmArgs g;
  g.dtype = A.t.dtype();
  g.c_float32 = c.dtype() != g.dtype;
  g.trans_a = A.trans;
  g.trans_b = B.trans;
  g.m = m; g.n = n; g.k = k;
  g.a = A.t.data_ptr(); g.lda = A.ld;
  g.b = B.t.data_ptr(); g.ldb = B.ld;
  g.c = c.data_ptr(); g.ldc = n;
  return g;
}
}  // namespace

// y = x W^T + b over x's last dim, as one GEMM with all leading dims folded into rows; the backend adds the bias
// (into the GEMM where it can: Backend::gemm_bias).
//   gx = g W;  gW = g^T x;  gb = sum of g's rows (with gW from the same GEMM: Backend::gemm_bias_grad)
// gx is added into the gradient x has collected so far, when the walk hands it over (take_grad_accumulator). Under
// autocast x, W and b are bf16 casts of float32 tensors, and the GEMMs write their gradients in float32 (grad_dtype).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  if (autocast::wants_bf16({&x, &w, &bias}))
    return linear(autocast::to_bf16(x), autocast::to_bf16(w), autocast::to_bf16(bias));
  check_defined(op, x, "input");
  check_defined(op, w, "weight");
  check_same_device(op, {x, w, bias});
  check_same_float_dtype(op, {x, w, bias});
  check(w.dim() == 2, op, ": weight must be [out, in], got ", w.shape());
  check(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": input ", x.shape(), " does not end in in_features ",
        w.size(1), " of weight ", w.shape());
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != w.size(0)))
    fail(op, ": bias ", bias.shape(), " does not match out_features ", w.size(0), " of weight ", w.shape());
  const int64_t in = w.size(1), outf = w.size(0);
  const int64_t rows = numel_of(Shape(x.shape().begin(), x.shape().end() - 1));
  Tensor x2 = reshape_raw(x, {rows, in});
  if (!x2.is_contiguous()) x2 = contiguous_raw(x2);
  Shape out_shape = x.shape();
  out_shape.back() = outf;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  Tensor out2 = make_view(out, {rows, outf}, {outf, 1}, 0);
  if (rows > 0 && in > 0) {
    GemmArgs g = gemm_2d({x2, false, in, 0}, gemm_operand(swap_last2(w), 1), rows, outf, in, out2);
    if (bias.defined()) be(x).gemm_bias(g, bias.is_contiguous() ? bias : contiguous_raw(bias), out2);
    else be(x).gemm(g);
  } else if (bias.defined()) {  // an empty sum plus the bias
    be(x).copy(broadcast_to(bias, {rows, outf}, op), out2);
  } else {
    be(x).fill(out2, 0);
  }
  record(op, {x, w, bias}, out, {x2, w}, [xs = x.shape(), rows, in, outf](const Node& n, const Tensor& g_in) {
    const Tensor &x2 = n.saved[0], &w = n.saved[1];
    Tensor g = reshape_raw(g_in, {rows, outf});
    Tensor gx, gw, gb;
    const bool want_gb = n.inputs.size() > 2 && needs_grad(n, 2);
    if (needs_grad(n, 0)) {  // gx = g W: one GEMM, [rows, outf] @ [outf, in], added into x's gradient so far
      const DType gxt = grad_dtype(n, 0);
      Tensor acc = take_grad_accumulator(n, 0, gxt);
      Tensor gx2 = acc.defined() ? reshape_raw(acc, {rows, in}) : Tensor::empty({rows, in}, gxt, g.device());
      if (rows > 0 && in > 0 && outf > 0) {
        GemmArgs args = gemm_2d(gemm_operand(g, 1), gemm_operand(w, 1), rows, in, outf, gx2);
        args.beta = acc.defined() ? 1 : 0;
        be(g).gemm(args);
      } else if (rows > 0 && in > 0 && !acc.defined()) {
        be(g).fill(gx2, 0);
      }
      gx = reshape_raw(gx2, xs);
    }
    if (needs_grad(n, 1) && want_gb && rows > 0 && in > 0) {
      gw = Tensor::empty({outf, in}, grad_dtype(n, 1), g.device());
      gb = Tensor::empty({outf}, grad_dtype(n, 2), g.device());
      const GemmOperand G = gemm_operand(swap_last2(g), 1);  // op(A) = g^T [outf, rows]
      const GemmArgs args = gemm_2d(G, {x2, false, in, 0}, outf, in, rows, gw);
      be(g).gemm_bias_grad(args, G.trans ? swap_last2(G.t) : G.t, gb);
    } else {  // each in its gradient's dtype: float32 for bf16 products of float32 weights under autocast
      if (needs_grad(n, 1)) {  // gw = gᵀ x2
        gw = Tensor::empty({outf, in}, grad_dtype(n, 1), g.device());
        if (rows > 0 && in > 0 && outf > 0)
          be(g).gemm(gemm_2d(gemm_operand(swap_last2(g), 1), {x2, false, in, 0}, outf, in, rows, gw));
        else
          be(g).fill(gw, 0);
      }
      if (want_gb) gb = sum(g.to(grad_dtype(n, 2)), {0});  // (a bf16 g summed in float32, not rounded to bf16)
    }
    return std::vector<Tensor>{gx, gw, gb};
  });
  return out;
}

}  // namespace skipgrad
