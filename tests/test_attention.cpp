// Fused attention: forward against a plain loop reference, masks, dropout, the recorded node, errors and
// finite-difference gradients.
#include <cmath>
#include <limits>

#include "test_util.h"

using namespace sgtest;

namespace {
// softmax(scale * q k^T, masked) v by plain loops, in double. `drop_seed`/`drop_offset` reproduce the dropout
// mask of the backend (mask[i] = (u_i >= p) / (1 - p), u_i = random_uniform01(seed, offset + i)).
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const std::vector<int64_t>& padding, bool causal, double scale,
                                        double p = 0, uint64_t drop_seed = 0, uint64_t drop_offset = 0) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), dh = q.size(3);
  auto Q = q.to_vector<double>(), K = k.to_vector<double>(), V = v.to_vector<double>();
  std::vector<double> out(B * H * Tq * dh, 0.0);
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < Tq; i++) {
        const int64_t bh = b * H + h;
        std::vector<double> s(Tk);
        std::vector<bool> masked(Tk);
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; j++) {
          masked[j] = (causal && j > i + (Tk - Tq)) || (!padding.empty() && padding[b * Tk + j] != 0);
          double dot = 0;
          for (int64_t d = 0; d < dh; d++) dot += Q[(bh * Tq + i) * dh + d] * K[(bh * Tk + j) * dh + d];
          s[j] = dot * scale;
          if (!masked[j]) mx = std::max(mx, s[j]);
        }
        double total = 0;
        for (int64_t j = 0; j < Tk; j++) total += masked[j] ? 0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < Tk; j++) {
          double pij = masked[j] ? 0 : std::exp(s[j] - mx) / total;
          if (p > 0) {
            uint64_t counter = drop_offset + (uint64_t)((bh * Tq + i) * Tk + j);
            pij *= random_uniform01(drop_seed, counter) >= p ? 1.0 / (1.0 - p) : 0.0;
          }
          for (int64_t d = 0; d < dh; d++) out[(bh * Tq + i) * dh + d] += pij * V[(bh * Tk + j) * dh + d];
        }
      }
  return out;
}

Tensor padding_mask(const std::vector<int64_t>& m, int64_t B, int64_t Tk, Device device = Device::cpu()) {
  return Tensor::from_vector<int64_t>(m, {B, Tk}, device);
}

AttentionOptions causal_opts() {
  AttentionOptions o;
  o.causal = true;
  return o;
}
}  // namespace

TEST_SUITE("attention") {
  TEST_CASE("forward matches a loop reference: plain, causal, padding, both, float32 and float64") {
    const int64_t B = 2, H = 3, Tq = 4, Tk = 5, dh = 8;
    const std::vector<int64_t> pad = {0, 0, 0, 1, 1, 0, 1, 0, 0, 0};
    for (DType dt : {DType::F64, DType::F32}) {
      CAPTURE(dtype_name(dt));
      Tensor q = leaf({B, H, Tq, dh}, 1).detach().to(dt), k = leaf({B, H, Tk, dh}, 2).detach().to(dt),
             v = leaf({B, H, Tk, dh}, 3).detach().to(dt);
      Tensor kq = leaf({B, H, Tq, dh}, 4).detach().to(dt), vq = leaf({B, H, Tq, dh}, 5).detach().to(dt);
      const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
      const double scale = 1.0 / std::sqrt((double)dh);
      check_close(attention(q, k, v), reference_attention(q, k, v, {}, false, scale), tol, tol);
      check_close(attention(q, kq, vq, Tensor(), causal_opts()), reference_attention(q, kq, vq, {}, true, scale),
                  tol, tol);
      check_close(attention(q, k, v, Tensor(), causal_opts()), reference_attention(q, k, v, {}, true, scale), tol,
                  tol);
      check_close(attention(q, k, v, padding_mask(pad, B, Tk)), reference_attention(q, k, v, pad, false, scale),
                  tol, tol);
      AttentionOptions both = causal_opts();
      both.scale = 0.3;
      check_close(attention(q, k, v, padding_mask(pad, B, Tk), both), reference_attention(q, k, v, pad, true, 0.3),
                  tol, tol);
      // a float mask works too: nonzero (0.5, -1) = masked; and a strided int64 one (a transposed [Tk, B])
      Tensor float_pad = padding_mask(pad, B, Tk).to(dt) * Tensor::from_vector<double>({0.5, -1}, {2, 1}).to(dt);
      check_close(attention(q, k, v, float_pad), reference_attention(q, k, v, pad, false, scale), tol, tol);
      Tensor strided_pad = padding_mask(pad, B, Tk).transpose(0, 1).contiguous().transpose(0, 1);
      REQUIRE_FALSE(strided_pad.is_contiguous());
      check_close(attention(q, k, v, strided_pad, both), reference_attention(q, k, v, pad, true, 0.3), tol, tol);
    }
  }

  TEST_CASE("forward and gradients match the composition softmax(masked_fill(q k^T * scale)) v") {
    const int64_t B = 2, H = 2, Tq = 3, Tk = 5, dh = 4;
    Tensor q = leaf({B, H, Tq, dh}, 1), k = leaf({B, H, Tk, dh}, 2), v = leaf({B, H, Tk, dh}, 3);
    Tensor w = leaf({B, H, Tq, dh}, 4).detach();
    Tensor pad = padding_mask({0, 0, 1, 0, 1, 0, 0, 0, 0, 1}, B, Tk);
    // masked[b, 1, i, j] = causal(i, j) or pad[b, j]
    Tensor future = gt(Tensor::arange(0, Tk, 1, DType::F64).reshape({1, Tk}),
                       Tensor::arange(Tk - Tq, Tk, 1, DType::F64).reshape({Tq, 1}));
    Tensor masked = maximum(future.reshape({1, 1, Tq, Tk}), pad.to(DType::F64).reshape({B, 1, 1, Tk}));
    const double scale = 0.6;
    Tensor scores = masked_fill(matmul(q, k, false, true) * scale, masked, -INFINITY);
    Tensor composed = matmul(softmax(scores, -1), v);
    sum(composed * w).backward();
    Tensor gq = q.grad(), gk = k.grad(), gv = v.grad();
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
    AttentionOptions o = causal_opts();
    o.scale = scale;
    Tensor fused = attention(q, k, v, pad, o);
    CHECK(max_abs_diff(fused, composed) < 1e-12);
    sum(fused * w).backward();
    CHECK(max_abs_diff(q.grad(), gq) < 1e-12);
    CHECK(max_abs_diff(k.grad(), gk) < 1e-12);
    CHECK(max_abs_diff(v.grad(), gv) < 1e-12);
  }

  TEST_CASE("non-contiguous q, k, v give the same result as contiguous ones") {
    Tensor q = leaf({2, 5, 3, 4}, 1).detach().transpose(1, 2), k = leaf({2, 6, 3, 4}, 2).detach().transpose(1, 2),
           v = leaf({2, 6, 3, 4}, 3).detach().transpose(1, 2);
    REQUIRE(!q.is_contiguous());
    Tensor a = attention(q, k, v, Tensor(), causal_opts());
    Tensor b = attention(q.contiguous(), k.contiguous(), v.contiguous(), Tensor(), causal_opts());
    CHECK(max_abs_diff(a, b) == 0);
    check_close(a, reference_attention(q, k, v, {}, true, 0.5), 1e-12, 1e-12);
  }

  TEST_CASE("heads read in place from projection views; output and gradients laid out like them (no copies)") {
    // A Transformer's q = proj.reshape(B, T, H, dh).transpose(1, 2): heads dh apart inside rows of H*dh
    const int64_t B = 2, H = 3, Tq = 4, Tk = 6, dh = 5;
    Tensor pq = leaf({B, Tq, H * dh}, 1), pk = leaf({B, Tk, H * dh}, 2), pv = leaf({B, Tk, H * dh}, 3);
    auto heads = [&](const Tensor& p, int64_t T) { return p.reshape({B, T, H, dh}).transpose(1, 2); };
    Tensor w = leaf({B, H, Tq, dh}, 4).detach();
    Tensor pad = padding_mask({0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1}, B, Tk);
    Tensor out = attention(heads(pq, Tq), heads(pk, Tk), heads(pv, Tk), pad, causal_opts());
    CHECK(out.transpose(1, 2).is_contiguous());  // the merge of heads that follows is a view
    sum(out * w).backward();
    const std::vector<Tensor> grads{pq.grad(), pk.grad(), pv.grad()};
    for (Tensor* p : {&pq, &pk, &pv}) p->zero_grad();
    // the same with contiguous copies of the heads
    Tensor ref = attention(heads(pq, Tq).contiguous(), heads(pk, Tk).contiguous(), heads(pv, Tk).contiguous(), pad,
                           causal_opts());
    CHECK(ref.is_contiguous());
    sum(ref * w).backward();
    CHECK(max_abs_diff(out, ref) < 1e-14);
    CHECK(max_abs_diff(grads[0], pq.grad()) < 1e-14);
    CHECK(max_abs_diff(grads[1], pk.grad()) < 1e-14);
    CHECK(max_abs_diff(grads[2], pv.grad()) < 1e-14);
  }

  TEST_CASE("a fully masked row gives zeros, and zero gradients, not NaN") {
    // batch 1 has every key padded; with causal and Tq > Tk the first query of batch 0 sees no key either
    Tensor q = leaf({2, 2, 3, 4}, 1), k = leaf({2, 2, 2, 4}, 2), v = leaf({2, 2, 2, 4}, 3);
    Tensor mask = padding_mask({0, 0, 1, 1}, 2, 2);
    Tensor out = attention(q, k, v, mask, causal_opts());
    auto o = out.to_vector<double>();
    for (double x : o) CHECK(std::isfinite(x));
    for (int64_t i = 2 * 3 * 4; i < 4 * 3 * 4; i++) CHECK(o[i] == 0);  // batch 1, both heads
    for (int64_t h = 0; h < 2; h++)
      for (int64_t d = 0; d < 4; d++) CHECK(o[(h * 3 + 0) * 4 + d] == 0);  // batch 0, query 0
    sum(out * out).backward();
    auto gq = q.grad().to_vector<double>();
    for (double x : gq) CHECK(std::isfinite(x));
    for (int64_t i = 2 * 3 * 4; i < 4 * 3 * 4; i++) CHECK(gq[i] == 0);
    for (double x : k.grad().to_vector<double>()) CHECK(std::isfinite(x));
  }

  TEST_CASE("the backend's masked softmax equals softmax of the masked_fill'ed scores (and log_softmax)") {
    // 2 batch entries x 2 blocks of Q = 3 queries over C = 5 keys: query i keeps keys j <= i + 2; and Q = 6 > C: the
    // first row keeps none. Key padding: batch 0 drops keys 1 and 4, batch 1 drops them all (rows with no key).
    const Tensor pad = Tensor::from_vector<int64_t>({0, 1, 0, 0, 1, 1, 1, 1, 1, 1}, {2, 1, 1, 5});
    for (int64_t Q : {0, 3, 6}) {
      for (bool padded : {false, true}) {
        if (Q == 0 && !padded) continue;
        const int64_t rows = Q ? Q : 4;
        Tensor x = leaf({2, 2, rows, 5}, 7).detach();
        Tensor masked = x;
        if (Q) {
          Tensor future = gt(Tensor::arange(0, 5, 1, DType::F64).reshape({1, 5}),
                             Tensor::arange(5 - Q, 5, 1, DType::F64).reshape({Q, 1}));
          masked = masked_fill(masked, future, -INFINITY);
        }
        SoftmaxMask mask;
        mask.causal_queries = Q;
        if (padded) {
          masked = masked_fill(masked, pad, -INFINITY);
          mask.key_padding = pad.reshape({2, 5});
          mask.rows_per_batch = 2 * rows;
        }
        for (bool log : {false, true}) {
          if (log && (Q > 5 || padded)) continue;  // log_softmax of a row with no key is NaN either way
          Tensor y = Tensor::empty(x.shape(), DType::F64);
          backend_for(Device::cpu()).softmax(x, y, log, mask);
          Tensor ref = log ? log_softmax(masked, -1) : softmax(masked, -1);  // a row with no key: P = 0
          CHECK(max_abs_diff(log ? exp(y) : y, log ? exp(ref) : ref) == 0);
        }
      }
    }
  }

  TEST_CASE("the backend's softmax refuses a mask that does not fit its rows") {
    Tensor x = Tensor::zeros({2, 3, 5}, DType::F64), y = Tensor::empty({2, 3, 5}, DType::F64);
    Backend& cpu = backend_for(Device::cpu());
    SoftmaxMask causal;
    causal.causal_queries = 4;  // 6 rows are not blocks of 4
    CHECK_THROWS_WITH(cpu.softmax(x, y, false, causal), doctest::Contains("causal_queries = 4"));
    SoftmaxMask pad;
    pad.key_padding = Tensor::zeros({2, 5}, DType::F64);
    pad.rows_per_batch = 3;
    CHECK_THROWS_WITH(cpu.softmax(x, y, false, pad), doctest::Contains("key_padding must be contiguous int64"));
    pad.key_padding = Tensor::zeros({2, 4}, DType::I64);
    CHECK_THROWS_WITH(cpu.softmax(x, y, false, pad), doctest::Contains("does not give one row of 5 columns"));
    pad.key_padding = Tensor::zeros({2, 5}, DType::I64);
    pad.rows_per_batch = 4;
    CHECK_THROWS_WITH(cpu.softmax(x, y, false, pad), doctest::Contains("per 4 of x's 6 rows"));
    pad.rows_per_batch = 3;
    cpu.softmax(x, y, false, pad);
    check_close(y, std::vector<double>(30, 0.2));
  }

  TEST_CASE("causal: the first query sees only key 0") {
    Tensor q = leaf({1, 2, 4, 3}, 1).detach(), k = leaf({1, 2, 4, 3}, 2).detach(), v = leaf({1, 2, 4, 3}, 3).detach();
    Tensor out = attention(q, k, v, Tensor(), causal_opts());
    CHECK(max_abs_diff(out.slice(2, 0, 1), v.slice(2, 0, 1)) < 1e-15);
    // and with Tq < Tk, the last query sees every key: it equals non-causal attention
    Tensor q1 = q.slice(2, 3, 4);
    CHECK(max_abs_diff(attention(q1, k, v, Tensor(), causal_opts()), attention(q1, k, v)) < 1e-15);
  }

  TEST_CASE("dropout: mask from the generator, reproducible, identity in eval mode") {
    const int64_t B = 2, H = 2, Tq = 3, Tk = 4, dh = 5;
    Tensor q = leaf({B, H, Tq, dh}, 1).detach(), k = leaf({B, H, Tk, dh}, 2).detach(),
           v = leaf({B, H, Tk, dh}, 3).detach();
    Generator gen(42);
    gen.advance(7);
    AttentionOptions o;
    o.dropout = 0.4;
    o.gen = &gen;
    Tensor a = attention(q, k, v, Tensor(), o);
    CHECK(gen.offset() == 7 + (uint64_t)(B * H * Tq * Tk));
    check_close(a, reference_attention(q, k, v, {}, false, 1 / std::sqrt(5.0), 0.4, 42, 7), 1e-12, 1e-12);
    gen.set_state(42, 7);
    CHECK(max_abs_diff(attention(q, k, v, Tensor(), o), a) == 0);
    CHECK(max_abs_diff(attention(q, k, v, Tensor(), o), a) > 0);  // the generator moved on
    o.training = false;
    const uint64_t before = gen.offset();
    CHECK(max_abs_diff(attention(q, k, v, Tensor(), o), attention(q, k, v)) == 0);
    CHECK(gen.offset() == before);
  }

  TEST_CASE("dropout keeps no mask: gradients equal those of softmax -> dropout -> matmul, saved bytes unchanged") {
    const int64_t B = 2, H = 2, Tq = 3, Tk = 4, dh = 5;
    Tensor q = leaf({B, H, Tq, dh}, 1), k = leaf({B, H, Tk, dh}, 2), v = leaf({B, H, Tk, dh}, 3);
    Tensor q2 = q.detach().requires_grad_(), k2 = k.detach().requires_grad_(), v2 = v.detach().requires_grad_();
    Tensor up = leaf({B, H, Tq, dh}, 4).detach();
    Generator gen(3), gen2(3);
    AttentionOptions o;
    o.dropout = 0.5;
    o.gen = &gen;
    Tensor fused = attention(q, k, v, Tensor(), o);
    const size_t saved_with_dropout = current_tape().nodes().back()->saved_bytes();
    attention(q, k, v);
    CHECK(current_tape().nodes().back()->saved_bytes() == saved_with_dropout);
    Tensor composed = matmul(dropout(softmax(matmul(q2, k2.transpose(2, 3)) * (1 / std::sqrt(5.0)), -1), 0.5, true,
                                     &gen2), v2);
    CHECK(max_abs_diff(fused, composed) < 1e-14);
    (sum(fused * up) + sum(composed * up)).backward();  // one backward: it frees the tape
    CHECK(max_abs_diff(q.grad(), q2.grad()) < 1e-14);
    CHECK(max_abs_diff(k.grad(), k2.grad()) < 1e-14);
    CHECK(max_abs_diff(v.grad(), v2.grad()) < 1e-14);
  }

  TEST_CASE("one node named attention with its params; the mask is an input without gradient") {
    Tensor q = leaf({1, 2, 3, 4}, 1), k = leaf({1, 2, 3, 4}, 2), v = leaf({1, 2, 3, 4}, 3);
    const size_t before = current_tape().size();
    AttentionOptions o = causal_opts();
    o.scale = 0.25;
    Tensor out = attention(q, k, v, padding_mask({0, 0, 1}, 1, 3), o);
    REQUIRE(current_tape().size() == before + 1);
    const Node& n = *current_tape().nodes().back();
    CHECK(std::string(n.op->name) == "attention");
    CHECK(n.name == "attention");
    CHECK(n.inputs.size() == 4);
    CHECK(n.saved_bytes() > 0);
    REQUIRE(n.params.size() == 3);
    CHECK(n.params[0].first == "causal");
    CHECK(std::get<bool>(n.params[0].second) == true);
    CHECK(n.params[1].first == "scale");
    CHECK(std::get<double>(n.params[1].second) == 0.25);
    CHECK(n.params[2].first == "dropout");
    CHECK(std::get<double>(n.params[2].second) == 0.0);
    sum(out).backward();
    CHECK(q.grad().defined());
    CHECK(k.grad().defined());
    CHECK(v.grad().defined());
    {
      NoGradGuard ng;
      const size_t n0 = current_tape().size();
      attention(q, k, v);
      CHECK(current_tape().size() == n0);
    }
  }

  TEST_CASE("float32 gradients agree with float64 ones") {
    Tensor q = leaf({2, 2, 3, 4}, 1), k = leaf({2, 2, 5, 4}, 2), v = leaf({2, 2, 5, 4}, 3);
    Tensor w = leaf({2, 2, 3, 4}, 4).detach();
    sum(attention(q, k, v, Tensor(), causal_opts()) * w).backward();
    Tensor q32 = q.detach().to(DType::F32).requires_grad_(), k32 = k.detach().to(DType::F32).requires_grad_(),
           v32 = v.detach().to(DType::F32).requires_grad_();
    sum(attention(q32, k32, v32, Tensor(), causal_opts()) * w.to(DType::F32)).backward();
    CHECK(max_abs_diff(q32.grad(), q.grad()) < 1e-5);
    CHECK(max_abs_diff(k32.grad(), k.grad()) < 1e-5);
    CHECK(max_abs_diff(v32.grad(), v.grad()) < 1e-5);
  }

  TEST_CASE("an additive bias (SDPA's float mask): the composition's forward and gradients, broadcast, refusals") {
    const Tensor pad = padding_mask({0, 1, 0, 0, 0, 0, 0, 1}, 2, 4);
    for (const Shape& bs : {Shape{2, 2, 3, 4}, Shape{1, 2, 1, 4}, Shape{1, 1, 3, 4}}) {
      INFO("bias " << bs);
      const Tensor q = leaf({2, 2, 3, 3}, 1), k = leaf({2, 2, 4, 3}, 2), v = leaf({2, 2, 4, 3}, 3), b = leaf(bs, 4);
      AttentionOptions o = causal_opts();
      o.bias = b;
      const Tensor got = attention(q, k, v, pad, o);
      got.sum().backward();  // (a backward clears the tape: the reference is recorded after it)
      const std::vector<Tensor> g_got = {q.grad(), k.grad(), v.grad(), b.grad()};
      for (Tensor t : {q, k, v, b}) t.zero_grad();
      Tensor s = add(mul(matmul(q, k, false, true), 1.0 / std::sqrt(3.0)), b);
      const Tensor future = gt(Tensor::arange(0, 4, 1, DType::F64).reshape({1, 4}),
                               Tensor::arange(1, 4, 1, DType::F64).reshape({3, 1}));
      s = masked_fill(masked_fill(s, future, -INFINITY), pad.reshape({2, 1, 1, 4}), -INFINITY);
      const Tensor want = matmul(softmax(s, 3), v);
      CHECK(max_abs_diff(got, want) < 1e-14);
      want.sum().backward();
      const std::vector<Tensor> g_want = {q.grad(), k.grad(), v.grad(), b.grad()};
      for (size_t i = 0; i < 4; i++) CHECK(max_abs_diff(g_got[i], g_want[i]) < 1e-13);
      CHECK(g_got[3].shape() == bs);
    }
    {  // under bf16 autocast a float32 bias is cast with q, k, v and gets a float32 gradient
      const Tensor q32 = leaf({2, 2, 3, 3}, 1).detach().to(DType::F32);
      Tensor b32 = leaf({1, 2, 3, 3}, 6).detach().to(DType::F32);
      b32.requires_grad_();
      AttentionOptions o;
      o.bias = b32;
      Tensor y;
      {
        AutocastBF16 on;
        y = attention(q32, q32, q32, Tensor(), o);
      }
      CHECK(y.dtype() == DType::BF16);
      y.to(DType::F32).sum().backward();
      REQUIRE(b32.grad().defined());
      CHECK(b32.grad().dtype() == DType::F32);
      CHECK(b32.grad().shape() == Shape{1, 2, 3, 3});
    }
    const Tensor q = leaf({2, 2, 3, 3}, 1), k = leaf({2, 2, 4, 3}, 2);
    AttentionOptions o;
    o.bias = leaf({2, 2, 4, 3}, 5);  // Tq and Tk swapped
    CHECK_THROWS_WITH_ALL(attention(q, k, k, Tensor(), o), "attention", "bias must be 4-D", "[2,2,3,4]",
                          "float64[2,2,4,3]");
    o.bias = leaf({2, 3, 4}, 5);
    CHECK_THROWS_WITH_ALL(attention(q, k, k, Tensor(), o), "attention", "bias must be 4-D");
    o.bias = leaf({1, 1, 3, 4}, 5).detach().to(DType::F32);
    CHECK_THROWS_WITH_ALL(attention(q, k, k, Tensor(), o), "attention", "in q's float64", "float32[1,1,3,4]");
  }

  TEST_CASE("bad arguments throw clear errors") {
    Tensor q = Tensor::zeros({2, 4, 5, 16}), k = Tensor::zeros({2, 4, 7, 16}), v = Tensor::zeros({2, 4, 7, 16});
    CHECK_THROWS_WITH_ALL(attention(q, Tensor::zeros({2, 4, 7, 8}), v), "attention", "[2,4,5,16]", "[2,4,7,8]",
                          "head dim");
    CHECK_THROWS_WITH_ALL(attention(q, Tensor::zeros({2, 3, 7, 16}), v), "attention", "batch or heads");
    CHECK_THROWS_WITH_ALL(attention(q, k, Tensor::zeros({2, 4, 6, 16})), "attention", "v [2,4,6,16]",
                          "k's shape [2,4,7,16]");
    CHECK_THROWS_WITH_ALL(attention(Tensor::zeros({4, 5, 16}), k, v), "attention", "q must be [B, H, Tq, dh]",
                          "[4,5,16]");
    CHECK_THROWS_WITH_ALL(attention(q, k, v, Tensor::zeros({2, 5})), "attention", "key_padding_mask [2,5]",
                          "[2,7]");
    CHECK_THROWS_WITH_ALL(attention(q, k.to(DType::F64), v), "attention", "dtypes differ", "float64");
    CHECK_THROWS_WITH_ALL(attention(q, k, Tensor::zeros({2, 4, 7, 16}, DType::I64)), "attention", "floating",
                          "int64");
    CHECK_THROWS_WITH_ALL(attention(q, Tensor(), v), "attention", "k is an undefined tensor");
    CHECK_THROWS_WITH_ALL(attention(q, Tensor::zeros({2, 4, 0, 16}), Tensor::zeros({2, 4, 0, 16})), "attention",
                          "no keys");
    AttentionOptions o;
    o.dropout = 1.0;
    CHECK_THROWS_WITH_ALL(attention(q, k, v, Tensor(), o), "attention", "dropout must be in [0, 1)");
    o.dropout = 0;
    o.scale = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH_ALL(attention(q, k, v, Tensor(), o), "attention", "scale must be finite");
  }
}

REGISTER_GRAD_CASES {
  using V = std::vector<Tensor>;
  auto causal = [](const V& x) { return attention(x[0], x[1], x[2], Tensor(), causal_opts()); };
  auto padded = [](const V& x) { return attention(x[0], x[1], x[2], padding_mask({0, 1, 0, 0, 0, 0, 1, 1}, 2, 4, x[0].device())); };
  auto both = [](const V& x) {
    AttentionOptions o = causal_opts();
    o.scale = 0.7;
    return attention(x[0], x[1], x[2], padding_mask({1, 0, 0, 0, 0, 0, 0, 1}, 2, 4, x[0].device()), o);
  };
  auto fully_masked = [](const V& x) {  // batch 1 sees no key; causal with Tq > Tk leaves query 0 with none
    return attention(x[0], x[1], x[2], padding_mask({0, 0, 1, 1}, 2, 2, x[0].device()), causal_opts());
  };
  auto transposed = [](const V& x) {  // [B, T, H, dh] leaves viewed as [B, H, T, dh]
    return attention(x[0].transpose(1, 2), x[1].transpose(1, 2), x[2].transpose(1, 2), Tensor(), causal_opts());
  };
  auto dropout = [](const V& x) {
    Generator gen(7);
    AttentionOptions o;
    o.dropout = 0.3;
    o.gen = &gen;
    return attention(x[0], x[1], x[2], padding_mask({0, 0, 0, 1, 0, 0, 0, 0}, 2, 4, x[0].device()), o);
  };
  auto with_bias = [](const V& x) {
    AttentionOptions o;
    o.bias = x[3];
    return attention(x[0], x[1], x[2], Tensor(), o);
  };
  auto with_bias_masked = [](const V& x) {
    AttentionOptions o = causal_opts();
    o.bias = x[3];
    return attention(x[0], x[1], x[2], padding_mask({0, 0, 0, 1, 1, 0, 0, 0}, 2, 4, x[0].device()), o);
  };
  return std::vector<GradCase>{
      {"attention", "plain", [](const V& x) { return attention(x[0], x[1], x[2]); },
       {leaf({2, 2, 3, 3}, 1), leaf({2, 2, 4, 3}, 2), leaf({2, 2, 4, 3}, 3)}},
      {"attention", "causal, Tq == Tk", causal, {leaf({2, 2, 4, 3}, 4), leaf({2, 2, 4, 3}, 5), leaf({2, 2, 4, 3}, 6)}},
      {"attention", "causal, Tq < Tk", causal, {leaf({2, 2, 2, 3}, 7), leaf({2, 2, 4, 3}, 8), leaf({2, 2, 4, 3}, 9)}},
      {"attention", "key padding mask", padded,
       {leaf({2, 2, 3, 3}, 10), leaf({2, 2, 4, 3}, 11), leaf({2, 2, 4, 3}, 12)}},
      {"attention", "causal and key padding mask, scale 0.7", both,
       {leaf({2, 2, 4, 3}, 13), leaf({2, 2, 4, 3}, 14), leaf({2, 2, 4, 3}, 15)}},
      {"attention", "fully masked rows", fully_masked,
       {leaf({2, 2, 3, 3}, 16), leaf({2, 2, 2, 3}, 17), leaf({2, 2, 2, 3}, 18)}},
      {"attention", "non-contiguous q, k, v", transposed,
       {leaf({2, 3, 2, 3}, 19), leaf({2, 4, 2, 3}, 20), leaf({2, 4, 2, 3}, 21)}},
      {"attention", "dropout 0.3, fixed generator", dropout,
       {leaf({2, 2, 3, 3}, 22), leaf({2, 2, 4, 3}, 23), leaf({2, 2, 4, 3}, 24)}},
      {"attention", "a bias [B,H,Tq,Tk] that requires grad", with_bias,
       {leaf({2, 2, 3, 3}, 25), leaf({2, 2, 4, 3}, 26), leaf({2, 2, 4, 3}, 27), leaf({2, 2, 3, 4}, 28)}},
      {"attention", "a bias [1,H,1,Tk] broadcast, causal and key padding", with_bias_masked,
       {leaf({2, 2, 4, 3}, 29), leaf({2, 2, 4, 3}, 30), leaf({2, 2, 4, 3}, 31), leaf({1, 2, 1, 4}, 32)}},
  };
}

// The rotary embedding of q and k (tests/test_positions.cpp has its behaviour).
REGISTER_GRAD_CASES {
  using V = std::vector<Tensor>;
  auto rot = [](const V& x) { return rotary(x[0], x[1], x[2]); };
  auto heads_view = [](const V& x) { return rotary(x[0].transpose(1, 2), x[1], x[2]); };  // [B, T, H, dh] leaf
  const auto [c1, s1] = random_angles(2, 3, 2, 31);
  const auto [c2, s2] = random_angles(1, 4, 3, 32);  // one batch entry of angles serves both
  const auto [c3, s3] = random_angles(3, 1, 1, 33);
  return std::vector<GradCase>{
      gc("rotary", "contiguous x [2,2,3,4], angles [2,3,2]", rot, {leaf({2, 2, 3, 4}, 41), c1, s1}),
      gc("rotary", "x a [B,T,H,dh] view, angles [1,T,h] for every batch entry", heads_view,
         {leaf({2, 4, 3, 6}, 42), c2, s2}),
      gc("rotary", "dh 2, one position", rot, {leaf({3, 2, 1, 2}, 43), c3, s3}),
  };
}
