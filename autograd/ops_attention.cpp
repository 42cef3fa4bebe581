// Fused scaled-dot-product attention and the rotary embedding of its queries and keys: one node each, forward
// and analytic backward side by side.
//
// Every product is one batched GEMM over the B*H heads; the row softmax, with the causal and padding masks
// inside, and its backward are the backend's, and so is dropout (its mask drawn again in the backward, not
// stored). q, k, v are read where they are: a Transformer's come as views [B, H, T, dh] of projections
// [B, T, H*dh] (heads dh apart, rows H*dh apart), which a GEMM with two batch dims reads without copying. The
// output and the input gradients are laid out like q (or k, v), so the caller's transpose back and reshape are
// views too.
#include <cmath>

#include "autograd/ops_common.h"

namespace skipgrad {

namespace {
// A [B, H, R, C] operand as the per-head GEMMs read it: R x C matrices with unit column stride (or, read
// transposed, unit row stride) and leading dim ld; heads stride_h apart, batch entries stride_b apart.
struct HeadMatrices {
  Tensor t;
  bool trans;
  int64_t ld, stride_h, stride_b;
};

HeadMatrices head_matrices(const Tensor& x) {
  const Shape& st = x.strides();
  const int64_t R = x.size(2), C = x.size(3);
  BlasLayout l;
  if (blas_layout(R, C, st[2], st[3], l)) return {x, l.trans, l.ld, st[1], st[0]};
  Tensor c = contiguous_raw(x);
  return {c, false, C, R * C, x.size(1) * R * C};
}

// Whether x [B, H, R, C] is a [B, R, H, C] buffer seen with heads second (a projection's view).
bool heads_interleaved(const Tensor& x) {
  const Shape& st = x.strides();
  return x.dim() == 4 && st[1] == x.size(3) && st[2] == x.size(1) * x.size(3) && st[3] == 1;
}

// An uninitialised [B, H, R, C] tensor: a [B, R, H, C] buffer seen with heads second when `interleaved`, else
// contiguous.
Tensor empty_heads(const Shape& s, bool interleaved, DType dtype, Device device) {
  const int64_t B = s[0], H = s[1], R = s[2], C = s[3];
  if (!interleaved) return Tensor::empty(s, dtype, device);
  return make_view(Tensor::empty({B, R, H, C}, dtype, device), s, {R * H * C, C, H * C, 1}, 0);
}

// An uninitialised [B, H, R, C] tensor laid out like `like` when that is a projection's view, else contiguous.
Tensor empty_heads_like(const Shape& s, const Tensor& like) {
  const bool same = like.dim() == 4 && like.size(1) == s[1] && like.size(3) == s[3];
  return empty_heads(s, same && heads_interleaved(like), like.dtype(), like.device());
}

// C[b, h] = alpha * op(A[b, h]) @ op(B[b, h]) for every batch entry b < B and head h < H, where C[b, h] is
// [m, n], op(A[b, h]) [m, k] and op(B[b, h]) [k, n]: one GEMM with two batch dims.
void head_gemm(const HeadMatrices& a, bool trans_a, const HeadMatrices& b, bool trans_b, const HeadMatrices& c,
               int64_t B, int64_t H, int64_t m, int64_t n, int64_t k, double alpha) {
  GemmArgs g;
  g.dtype = c.t.dtype();
  g.trans_a = trans_a != a.trans;
  g.trans_b = trans_b != b.trans;
  g.batch = B * H;
  g.batch_inner = H;
  g.m = m; g.n = n; g.k = k;
  g.a = a.t.data_ptr(); g.lda = a.ld; g.stride_a = a.stride_h; g.stride_a_outer = a.stride_b;
  g.b = b.t.data_ptr(); g.ldb = b.ld; g.stride_b = b.stride_h; g.stride_b_outer = b.stride_b;
  g.c = c.t.data_ptr(); g.ldc = c.ld; g.stride_c = c.stride_h; g.stride_c_outer = c.stride_b;
  g.alpha = alpha;
  be(c.t).gemm(g);
}

// The key padding mask as Backend::softmax reads it: contiguous int64, nonzero where a key is padding. The
// Transformer's (an `eq` of int64 ids) already is; any other is compared with 0 and converted.
Tensor key_padding_rows(const Tensor& mask) {
  if (mask.dtype() == DType::I64 && mask.is_contiguous()) return mask;
  Backend& backend = be(mask);
  Tensor zero = Tensor::zeros({1}, mask.dtype(), mask.device());
  Tensor nonzero = Tensor::empty(mask.shape(), mask.dtype(), mask.device());
  backend.binary(BinaryOp::Ne, mask, broadcast_to(zero, mask.shape(), "attention"), nonzero);
  Tensor rows = Tensor::empty(mask.shape(), DType::I64, mask.device());
  backend.copy(nonzero, rows);
  return rows;
}

void check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                          const AttentionOptions& opt) {
  const char* op = "attention";
  check_defined(op, q, "q");
  check_defined(op, k, "k");
  check_defined(op, v, "v");
  check_same_device(op, {q, k, v, mask});
  check_same_float_dtype(op, {q, k, v});
  check(q.dim() == 4, op, ": q must be [B, H, Tq, dh], got ", q.shape());
  check(k.dim() == 4, op, ": k must be [B, H, Tk, dh], got ", k.shape());
  check(v.dim() == 4, op, ": v must be [B, H, Tk, dh], got ", v.shape());
  check(q.size(0) == k.size(0) && q.size(1) == k.size(1), op, ": q ", q.shape(), " and k ", k.shape(),
        " differ in batch or heads");
  check(q.size(3) == k.size(3), op, ": q ", q.shape(), " and k ", k.shape(), " differ in head dim");
  check(v.shape() == k.shape(), op, ": v ", v.shape(), " must have k's shape ", k.shape());
  check(k.size(2) > 0, op, ": k ", k.shape(), " has no keys");
  check(q.size(3) > 0, op, ": q ", q.shape(), " has an empty head dim");
  if (mask.defined())
    check(mask.dim() == 2 && mask.size(0) == q.size(0) && mask.size(1) == k.size(2), op, ": key_padding_mask ",
          mask.shape(), " must be [B, Tk] = ", Shape{q.size(0), k.size(2)}, " for q ", q.shape(), " and k ",
          k.shape());
  check(opt.scale == -1 || std::isfinite(opt.scale), op, ": scale must be finite (or -1 for 1/sqrt(dh)), got ",
        opt.scale);
  check(opt.dropout >= 0 && opt.dropout < 1, op, ": dropout must be in [0, 1), got ", opt.dropout);
  const Tensor &sl = opt.alibi_slopes, &qp = opt.query_positions, &kp = opt.key_positions;
  if (!sl.defined() && !qp.defined() && !kp.defined()) return;
  const DType slope_dtype = q.dtype() == DType::BF16 ? DType::F32 : q.dtype();
  const bool ok = sl.defined() && qp.defined() && kp.defined() && sl.dtype() == slope_dtype &&
                  sl.shape() == Shape{q.size(1)} && qp.dtype() == DType::I64 && kp.dtype() == DType::I64 &&
                  qp.shape() == Shape{q.size(0), q.size(2)} && kp.shape() == Shape{q.size(0), k.size(2)};
  if (!ok)
    fail(op, ": ALiBi expects alibi_slopes [H = ", q.size(1), "] in ", dtype_name(slope_dtype),
         " and int64 query_positions [B, Tq] = ", Shape{q.size(0), q.size(2)}, " and key_positions [B, Tk] = ",
         Shape{q.size(0), k.size(2)}, "; got slopes ", sl.meta_str(), ", query positions ", qp.meta_str(),
         ", key positions ", kp.meta_str());
  check_same_device(op, {q, sl, qp, kp});
  check(!sl.requires_grad(), op, ": alibi_slopes are constants and get no gradient (detach them)");
}

// An additive bias: 4-D, each dim 1 or the scores' [B, H, Tq, Tk], q's dtype and device.
void check_attention_bias(const Tensor& q, const Tensor& k, const Tensor& bias) {
  if (!bias.defined()) return;
  const Shape scores{q.size(0), q.size(1), q.size(2), k.size(2)};
  bool fits = bias.dim() == 4 && bias.dtype() == q.dtype() && bias.device() == q.device();
  for (int64_t d = 0; fits && d < 4; d++) fits = bias.size(d) == 1 || bias.size(d) == scores[d];
  if (!fits)
    fail("attention", ": bias must be 4-D with each dim 1 or that of the scores ", scores, ", in q's ",
         q.meta_str(), "; got ", bias.meta_str());
}
}  // namespace

// Forward, per head (b, h):
//   S = scale * Q K^T  (+ bias; + ALiBi's -m_h |p_i - p_j|; -inf where masked)
//   P = softmax(S) over keys (a fully masked row gives P = 0)
//   Pd = P * M  (M: inverted-dropout mask, only when training with dropout > 0; else Pd = P)
//   O = Pd V
// Backward, given dO:
//   dV = Pd^T dO      dPd = dO V^T      dP = dPd * M
//   dS = P * (dP - rowsum(dP * P))      (softmax backward; zero where masked since P = 0 there)
//   dBias = dS summed over the dims the bias broadcasts along
//   dQ = scale * dS K      dK = scale * dS^T Q
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask,
                 const AttentionOptions& opt) {
  if (autocast::wants_bf16({&q, &k, &v, &opt.bias})) {  // (a float32 bias with bf16 q, k, v too: T5's table)
    AttentionOptions o = opt;
    if (o.bias.defined()) o.bias = autocast::to_bf16(o.bias);  // (recorded: a float32 bias gets its gradient)
    return attention(autocast::to_bf16(q), autocast::to_bf16(k), autocast::to_bf16(v), key_padding_mask, o);
  }
  check_attention_args(q, k, v, key_padding_mask, opt);
  check_attention_bias(q, k, opt.bias);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), dh = q.size(3);
  const double scale = opt.scale == -1 ? 1.0 / std::sqrt((double)dh) : opt.scale;
  const double p_drop = opt.training ? opt.dropout : 0.0;
  const DType dtype = q.dtype();
  const Device device = q.device();
  Backend& backend = be(q);

  const HeadMatrices Q = head_matrices(q), K = head_matrices(k), V = head_matrices(v);

  // S = scale * Q K^T (+ bias)
  Tensor scores = Tensor::empty({B, H, Tq, Tk}, dtype, device);
  head_gemm(Q, false, K, true, head_matrices(scores), B, H, Tq, Tk, dh, scale);
  if (opt.bias.defined())  // (elementwise, in place)
    backend.binary(BinaryOp::Add, scores, broadcast_to(opt.bias, scores.shape(), "attention"), scores);

  // P = softmax(S) row by row, the causal and padding masks inside
  SoftmaxMask mask;
  mask.causal_queries = opt.causal ? Tq : 0;
  if (key_padding_mask.defined() && H * Tq > 0) {  // no query rows (H or Tq 0): nothing to mask
    mask.key_padding = key_padding_rows(key_padding_mask);
    mask.rows_per_batch = H * Tq;
  }
  if (opt.alibi_slopes.defined()) {
    mask.alibi_slopes = contiguous_raw(opt.alibi_slopes);
    mask.query_positions = contiguous_raw(opt.query_positions);
    mask.key_positions = contiguous_raw(opt.key_positions);
  }
  Tensor probs = Tensor::empty({B, H, Tq, Tk}, dtype, device);
  backend.softmax(scores, probs, false, mask);
  scores = Tensor();

  // Pd = P * M, M drawn from (seed, offset) and drawn again by the backward (never stored)
  Tensor dropped = probs;
  uint64_t seed = 0, offset = 0;
  if (p_drop > 0) {
    Generator& gen = opt.gen ? *opt.gen : default_generator();
    seed = gen.seed();
    offset = gen.advance((uint64_t)probs.numel());
    dropped = Tensor::empty({B, H, Tq, Tk}, dtype, device);
    backend.dropout(probs, dropped, p_drop, seed, offset);
  }

  // O = Pd V, laid out like q
  Tensor out = empty_heads_like({B, H, Tq, dh}, q);
  head_gemm(head_matrices(dropped), false, V, false, head_matrices(out), B, H, Tq, dh, Tk, 1.0);

  std::vector<Tensor> inputs{q, k, v};
  const bool masked = key_padding_mask.defined(), biased = opt.bias.defined();
  if (masked) inputs.push_back(key_padding_mask);
  if (biased) inputs.push_back(opt.bias);
  const Shape bias_shape = biased ? opt.bias.shape() : Shape{};
  OpParams params{{"causal", opt.causal}, {"scale", scale}, {"dropout", p_drop}};
  if (opt.alibi_slopes.defined()) params.push_back({"alibi", true});
  if (biased) params.push_back({"bias", bias_shape});
  record("attention", inputs, out, {Q.t, K.t, V.t, probs},
         [B, H, Tq, Tk, dh, scale, p_drop, seed, offset, masked, biased, bias_shape](const Node& n,
                                                                                   const Tensor& g_in) {
           const Tensor& probs = n.saved[3];
           const HeadMatrices Q = head_matrices(n.saved[0]), K = head_matrices(n.saved[1]),
                              V = head_matrices(n.saved[2]);
           Backend& backend = be(probs);
           const DType dtype = probs.dtype();
           const Device device = probs.device();
           const HeadMatrices dO = head_matrices(g_in);
           Tensor gq, gk, gv, gbias;
           const size_t bias_input = masked ? 4 : 3;
           if (needs_grad(n, 2)) {  // dV = Pd^T dO
             Tensor dropped = probs;
             if (p_drop > 0) {
               dropped = Tensor::empty(probs.shape(), dtype, device);
               backend.dropout(probs, dropped, p_drop, seed, offset);
             }
             gv = empty_heads_like(V.t.shape(), V.t);
             head_gemm(head_matrices(dropped), true, dO, false, head_matrices(gv), B, H, Tk, dh, Tq, 1.0);
           }
           if (needs_grad(n, 0) || needs_grad(n, 1) || (biased && needs_grad(n, bias_input))) {
             // dP = (dO V^T) * M, then dS = softmax_backward(P, dP)
             Tensor dprobs = Tensor::empty(probs.shape(), dtype, device);
             head_gemm(dO, false, V, true, head_matrices(dprobs), B, H, Tq, Tk, dh, 1.0);
             if (p_drop > 0) backend.dropout(dprobs, dprobs, p_drop, seed, offset);
             Tensor dscores = Tensor::empty(probs.shape(), dtype, device);
             backend.softmax_backward(probs, dprobs, dscores, false);
             if (biased && needs_grad(n, bias_input)) gbias = sum_to(dscores, bias_shape);  // dBias = dS, unbroadcast
             const HeadMatrices dS = head_matrices(dscores);
             if (needs_grad(n, 0)) {  // dQ = scale * dS K
               gq = empty_heads_like(Q.t.shape(), Q.t);
               head_gemm(dS, false, K, false, head_matrices(gq), B, H, Tq, dh, Tk, scale);
             }
             if (needs_grad(n, 1)) {  // dK = scale * dS^T Q
               gk = empty_heads_like(K.t.shape(), K.t);
               head_gemm(dS, true, Q, false, head_matrices(gk), B, H, Tk, dh, Tq, scale);
             }
           }
           std::vector<Tensor> grads{gq, gk, gv};
           if (masked) grads.push_back(Tensor());  // the mask gets no gradient
           if (biased) grads.push_back(gbias);
           return grads;
         },
         params);
  return out;
}

// Rotary embedding. Forward: y = R(θ) x, per pair (x_i, x_{i+dh/2}) a rotation by θ_{b,t,i}:
//   y_i = x_i cos θ - x_{i+dh/2} sin θ,   y_{i+dh/2} = x_{i+dh/2} cos θ + x_i sin θ
// Backward: R is orthogonal, so dx = R(θ)ᵀ dy = R(-θ) dy: the same kernel with sin negated.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const char* op = "rotary";
  check_defined(op, x, "x");
  check_defined(op, cos, "cos");
  check_defined(op, sin, "sin");
  check_same_device(op, {x, cos, sin});
  const DType angles = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  const bool x_ok = is_floating(x.dtype()) && x.dim() == 4 && x.size(3) % 2 == 0;
  const bool angles_ok = cos.dim() == 3 && cos.shape() == sin.shape() && cos.dtype() == angles &&
                         sin.dtype() == angles && x_ok && (cos.size(0) == x.size(0) || cos.size(0) == 1) &&
                         cos.size(1) == x.size(2) && cos.size(2) == x.size(3) / 2;
  if (!x_ok || !angles_ok)
    fail(op, ": expected x floating [B, H, T, dh] with dh even and cos, sin [B or 1, T, dh/2] in ",
         x_ok ? dtype_name(angles) : "x's dtype (float32 for bfloat16 x)", "; got x ", x.meta_str(), ", cos ",
         cos.meta_str(), ", sin ", sin.meta_str());
  if (cos.requires_grad() || sin.requires_grad())
    fail(op, ": cos and sin are constants and get no gradient; got cos ", cos.requires_grad() ? "" : "not ",
         "requiring grad, sin ", sin.requires_grad() ? "" : "not ", "requiring grad (detach them)");
  const Tensor c = contiguous_raw(cos), s = contiguous_raw(sin);
  const bool interleaved = heads_interleaved(x);  // the output, and the backward's dx, laid out like x
  Tensor out = empty_heads(x.shape(), interleaved, x.dtype(), x.device());
  be(x).rotary(x, c, s, false, out);
  record(op, {x, cos, sin}, out, {c, s}, [interleaved](const Node& n, const Tensor& g_in) {
    Tensor gx = empty_heads(g_in.shape(), interleaved, g_in.dtype(), g_in.device());
    be(g_in).rotary(g_in, n.saved[0], n.saved[1], true, gx);
    return std::vector<Tensor>{gx, Tensor(), Tensor()};
  });
  return out;
}

}  // namespace skipgrad
