// Fused scaled-dot-product attention: one node, forward and analytic backward side by side.
//
// Every product is one batched GEMM over the B*H heads of contiguous [B*H, T, dh] buffers; masks and dropout
// are backend kernels (where, binary, dropout_mask); the row softmax and its backward are the backend's.
#include <cmath>
#include <limits>

#include "autograd/ops_common.h"

namespace skipgrad {

namespace {
// C[b] = alpha * op(A[b]) @ op(B[b]) for b < batch, where C[b] is [m, n] and every operand is a contiguous
// [batch, rows, cols] buffer: A[b] is [m, k] (or [k, m] when trans_a), B[b] is [k, n] (or [n, k] when trans_b).
void batched_gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, int64_t batch,
                  int64_t m, int64_t n, int64_t k, double alpha) {
  GemmArgs g;
  g.dtype = c.dtype();
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.batch = batch;
  g.m = m; g.n = n; g.k = k;
  g.a = a.data_ptr(); g.lda = trans_a ? m : k; g.stride_a = m * k;
  g.b = b.data_ptr(); g.ldb = trans_b ? k : n; g.stride_b = k * n;
  g.c = c.data_ptr(); g.ldc = n;                g.stride_c = m * n;
  g.alpha = alpha;
  be(c).gemm(g);
}

// scores[b, h, i, j] = -inf wherever key j is masked for query i: causal (j > i + Tk - Tq) and/or
// key_padding_mask[b, j] != 0. Applied in place with the backend's `where`.
void mask_scores(Tensor& scores, const Tensor& key_padding_mask, bool causal) {
  const char* op = "attention";
  const Shape& s = scores.shape();  // [B, H, Tq, Tk]
  const int64_t B = s[0], Tq = s[2], Tk = s[3];
  Backend& backend = be(scores);
  Tensor minus_inf = Tensor::full({1}, -std::numeric_limits<double>::infinity(), scores.dtype(), scores.device());
  if (causal) {
    // query i sits at absolute position i + (Tk - Tq); key j is in its future when j > that position
    Tensor key_pos = reshape_raw(Tensor::arange(0, (double)Tk, 1, scores.dtype(), scores.device()), {1, Tk});
    Tensor query_pos =
        reshape_raw(Tensor::arange((double)(Tk - Tq), (double)Tk, 1, scores.dtype(), scores.device()), {Tq, 1});
    Tensor future = Tensor::empty({Tq, Tk}, scores.dtype(), scores.device());
    backend.binary(BinaryOp::Gt, broadcast_to(key_pos, {Tq, Tk}, op), broadcast_to(query_pos, {Tq, Tk}, op), future);
    backend.where(broadcast_to(future, s, op), broadcast_to(minus_inf, s, op), scores, scores);
  }
  if (key_padding_mask.defined()) {
    // [B, Tk] seen as [B, 1, 1, Tk]
    const Shape& st = key_padding_mask.strides();
    Tensor padded = make_view(key_padding_mask, {B, 1, 1, Tk}, {st[0], 0, 0, st[1]}, key_padding_mask.offset());
    backend.where(broadcast_to(padded, s, op), broadcast_to(minus_inf, s, op), scores, scores);
  }
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
}
}  // namespace

// Forward, per head (b, h):
//   S = scale * Q K^T  (-inf where masked)    P = softmax(S) over keys (a fully masked row gives P = 0)
//   Pd = P * M  (M: inverted-dropout mask, only when training with dropout > 0; else Pd = P)
//   O = Pd V
// Backward, given dO:
//   dV = Pd^T dO      dPd = dO V^T      dP = dPd * M
//   dS = P * (dP - rowsum(dP * P))      (softmax backward; zero where masked since P = 0 there)
//   dQ = scale * dS K      dK = scale * dS^T Q
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask,
                 const AttentionOptions& opt) {
  check_attention_args(q, k, v, key_padding_mask, opt);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), dh = q.size(3), BH = B * H;
  const double scale = opt.scale == -1 ? 1.0 / std::sqrt((double)dh) : opt.scale;
  const double p_drop = opt.training ? opt.dropout : 0.0;
  const DType dtype = q.dtype();
  const Device device = q.device();
  Backend& backend = be(q);

  Tensor qc = contiguous_raw(q), kc = contiguous_raw(k), vc = contiguous_raw(v);

  // S = scale * Q K^T, masked
  Tensor scores = Tensor::empty({B, H, Tq, Tk}, dtype, device);
  batched_gemm(qc, false, kc, true, scores, BH, Tq, Tk, dh, scale);
  if (opt.causal || key_padding_mask.defined()) mask_scores(scores, key_padding_mask, opt.causal);

  // P = softmax(S) row by row
  Tensor probs = Tensor::empty({B, H, Tq, Tk}, dtype, device);
  backend.softmax(scores, probs, false);
  scores = Tensor();

  // Pd = P * M
  Tensor drop_mask, dropped = probs;
  if (p_drop > 0) {
    Generator& gen = opt.gen ? *opt.gen : default_generator();
    drop_mask = Tensor::empty({B, H, Tq, Tk}, dtype, device);
    backend.dropout_mask(drop_mask, p_drop, gen.seed(), gen.advance((uint64_t)drop_mask.numel()));
    dropped = Tensor::empty({B, H, Tq, Tk}, dtype, device);
    backend.binary(BinaryOp::Mul, probs, drop_mask, dropped);
  }

  // O = Pd V
  Tensor out = Tensor::empty({B, H, Tq, dh}, dtype, device);
  batched_gemm(dropped, false, vc, false, out, BH, Tq, dh, Tk, 1.0);

  std::vector<Tensor> inputs{q, k, v};
  if (key_padding_mask.defined()) inputs.push_back(key_padding_mask);
  record("attention", inputs, out, {qc, kc, vc, probs, drop_mask},
         [BH, Tq, Tk, dh, scale](const Node& n, const Tensor& g_in) {
           const Tensor &qc = n.saved[0], &kc = n.saved[1], &vc = n.saved[2], &probs = n.saved[3],
                        &drop_mask = n.saved[4];
           Backend& backend = be(probs);
           const DType dtype = probs.dtype();
           const Device device = probs.device();
           Tensor g = contiguous_raw(g_in);  // dO [B, H, Tq, dh]
           Tensor gq, gk, gv;
           if (needs_grad(n, 2)) {  // dV = Pd^T dO
             Tensor dropped = probs;
             if (drop_mask.defined()) {
               dropped = Tensor::empty(probs.shape(), dtype, device);
               backend.binary(BinaryOp::Mul, probs, drop_mask, dropped);
             }
             gv = Tensor::empty(vc.shape(), dtype, device);
             batched_gemm(dropped, true, g, false, gv, BH, Tk, dh, Tq, 1.0);
           }
           if (needs_grad(n, 0) || needs_grad(n, 1)) {
             // dP = (dO V^T) * M, then dS = softmax_backward(P, dP)
             Tensor dprobs = Tensor::empty(probs.shape(), dtype, device);
             batched_gemm(g, false, vc, true, dprobs, BH, Tq, Tk, dh, 1.0);
             if (drop_mask.defined()) backend.binary(BinaryOp::Mul, dprobs, drop_mask, dprobs);
             Tensor dscores = Tensor::empty(probs.shape(), dtype, device);
             backend.softmax_backward(probs, dprobs, dscores, false);
             if (needs_grad(n, 0)) {  // dQ = scale * dS K
               gq = Tensor::empty(qc.shape(), dtype, device);
               batched_gemm(dscores, false, kc, false, gq, BH, Tq, dh, Tk, scale);
             }
             if (needs_grad(n, 1)) {  // dK = scale * dS^T Q
               gk = Tensor::empty(kc.shape(), dtype, device);
               batched_gemm(dscores, true, qc, false, gk, BH, Tk, dh, Tq, scale);
             }
           }
           std::vector<Tensor> grads{gq, gk, gv};
           if (n.inputs.size() > 3) grads.push_back(Tensor());  // the mask gets no gradient
           return grads;
         },
         {{"causal", opt.causal}, {"scale", scale}, {"dropout", p_drop}});
  return out;
}

}  // namespace skipgrad
