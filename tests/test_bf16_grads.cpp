// Gradients of autocast's casts written in float32 by the GEMMs that make them (GemmArgs::c_float32, grad_dtype):
// a bf16 product's weight, bias and input gradients come out of cuBLAS/sgemm unrounded, and the cast's backward
// converts nothing.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "backends/in_float32.h"
#include "cuda_test_util.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace skipgrad;
using sgtest::have_cuda;

namespace {
Tensor randn_f32(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, 0, 1, DType::F32, Device::cpu(), &g);
}
// max |a - b| / max(1, max |b|) over two float tensors of one shape (any devices).
double rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to(Device::cpu()).to(DType::F64).to_vector<double>(),
                            y = b.to(Device::cpu()).to(DType::F64).to_vector<double>();
  double d = 0, m = 1;
  for (size_t i = 0; i < x.size(); i++) {
    d = std::max(d, std::fabs(x[i] - y[i]));
    m = std::max(m, std::fabs(y[i]));
  }
  return d / m;
}
// C = op(A) op(B) of bf16 A [2, 5, 3] (as [batch, m, k], read transposed when ta) and B, into float32 C, by the
// backend's GEMM with c_float32, vs the float32 GEMM of the widened operands.
void check_c_float32_gemm(Device d, bool ta, bool tb, int64_t batch) {
  const int64_t m = 5, n = 4, k = 3;
  Tensor a32 = randn_f32(ta ? Shape{batch, k, m} : Shape{batch, m, k}, 1).to(DType::BF16).to(DType::F32);
  Tensor b32 = randn_f32(tb ? Shape{batch, n, k} : Shape{batch, k, n}, 2).to(DType::BF16).to(DType::F32);
  Tensor c0 = randn_f32({batch, m, n}, 3);
  Tensor a = a32.to(DType::BF16).to(d), b = b32.to(DType::BF16).to(d);
  for (double beta : {0.0, 1.0}) {
    CAPTURE(beta);
    Tensor c = c0.to(d).clone(), want = c0.clone();
    GemmArgs g;
    g.dtype = DType::BF16;
    g.c_float32 = true;
    g.trans_a = ta, g.trans_b = tb;
    g.batch = batch, g.m = m, g.n = n, g.k = k;
    g.a = a.data_ptr(), g.lda = ta ? m : k, g.stride_a = m * k;
    g.b = b.data_ptr(), g.ldb = tb ? k : n, g.stride_b = k * n;
    g.c = c.data_ptr(), g.ldc = n, g.stride_c = m * n;
    g.alpha = 0.5, g.beta = beta;
    backend_for(d).gemm(g);
    GemmArgs w = g;
    w.dtype = DType::F32, w.c_float32 = false;
    w.a = a32.data_ptr(), w.b = b32.data_ptr(), w.c = want.data_ptr();
    backend_for(Device::cpu()).gemm(w);
    CHECK(c.dtype() == DType::F32);
    CHECK(rel_diff(c, want) < 1e-6);
  }
}
}  // namespace

TEST_SUITE("bf16") {
  TEST_CASE("GEMM of bf16 operands into float32 C (c_float32): the float32 product, unrounded") {
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int64_t batch : {1, 2}) {
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(batch);
          check_c_float32_gemm(Device::cpu(), ta, tb, batch);
          if (have_cuda()) check_c_float32_gemm(Device::cuda(), ta, tb, batch);
        }
    GemmArgs g;  // float32 operands have no "float32 C" variant: an error naming the op, not a wrong answer
    g.dtype = DType::F32;
    g.c_float32 = true;
    g.m = g.n = g.k = 1;
    Tensor x = Tensor::ones({1}, DType::F32);
    g.a = g.b = x.data_ptr(), g.c = x.data_ptr(), g.lda = g.ldb = g.ldc = 1;
    CHECK_THROWS_WITH_AS(backend_for(Device::cpu()).gemm(g), doctest::Contains("gemm: a float32 result of float32"),
                         Error);
  }

  TEST_CASE("autocast linear: float32 gradients of x, W and b straight from the GEMMs, unrounded") {
    std::vector<Device> devices{Device::cpu()};
    if (have_cuda()) devices.push_back(Device::cuda());
    for (Device d : devices) {
      CAPTURE(d.str());
      Tensor x = randn_f32({6, 8}, 4).to(d).requires_grad_(), w = randn_f32({5, 8}, 5).to(d).requires_grad_(),
             b = randn_f32({5}, 6).to(d).requires_grad_(), gy = randn_f32({6, 5}, 7).to(DType::BF16).to(d);
      Tensor y;
      {
        AutocastBF16 on;
        y = linear(x, w, b);
      }
      REQUIRE(y.dtype() == DType::BF16);
      y.backward(gy);
      REQUIRE(x.grad().dtype() == DType::F32);
      REQUIRE(w.grad().dtype() == DType::F32);
      REQUIRE(b.grad().dtype() == DType::F32);
      // the same products in float32 of the bf16-rounded operands: what the GEMMs accumulate, before any rounding
      const Tensor g32 = gy.to(DType::F32), x16 = x.detach().to(DType::BF16).to(DType::F32),
                   w16 = w.detach().to(DType::BF16).to(DType::F32);
      CHECK(rel_diff(w.grad(), matmul(g32, x16, true, false)) < 1e-5);
      CHECK(rel_diff(x.grad(), matmul(g32, w16)) < 1e-5);
      CHECK(rel_diff(b.grad(), g32.sum({0})) < 1e-5);
      // no bias (the Transformer's output projection), and a frozen weight: each gradient unrounded all the same
      // (they were bf16 products cast back, 4e-3 off)
      Tensor w2 = w.detach().clone().requires_grad_(), b2 = b.detach().clone().requires_grad_();
      {
        AutocastBF16 on;
        y = linear(x.detach(), w2);
      }
      y.backward(gy);
      CHECK(rel_diff(w2.grad(), matmul(g32, x16, true, false)) < 1e-5);
      {
        AutocastBF16 on;
        y = linear(x.detach(), w.detach(), b2);
      }
      y.backward(gy);
      REQUIRE(b2.grad().dtype() == DType::F32);
      CHECK(rel_diff(b2.grad(), g32.sum({0})) < 1e-5);
    }
  }

  TEST_CASE("max and min of bf16 split the gradient among ties counted exactly (257 ties: 1/257 each, not 1/256)") {
    std::vector<Device> devices{Device::cpu()};
    if (have_cuda()) devices.push_back(Device::cuda());
    for (Device d : devices)
      for (bool is_max : {true, false}) {
        CAPTURE(d.str());
        Tensor x = Tensor::full({300}, is_max ? -1.0 : 1.0, DType::BF16, d);
        x = concat({Tensor::full({257}, is_max ? 2.0 : -2.0, DType::BF16, d), x}, 0).detach().requires_grad_();
        (is_max ? max(x, {0}) : min(x, {0})).backward();
        double total = 0;
        for (double v : x.grad().to_vector<double>()) total += v;
        CHECK(total == doctest::Approx(1.0).epsilon(1e-4));  // (bf16 counted 257 ties as 256: 1.0039)
      }
  }

  TEST_CASE("grad_dtype: a cast whose gradient is observed (retain_grad, a hook) gets it in its own dtype") {
    Tensor w = randn_f32({3, 4}, 8).requires_grad_(), x = randn_f32({2, 4}, 9).to(DType::BF16);
    Tensor w16 = w.to(DType::BF16);
    w16.retain_grad();
    linear(x, w16).sum().backward();
    CHECK(w16.grad().dtype() == DType::BF16);  // .grad has its tensor's dtype
    CHECK(w.grad().dtype() == DType::F32);
    Tensor v = randn_f32({3, 4}, 8).requires_grad_();
    Tensor v16 = v.to(DType::BF16);
    DType seen = DType::F64;
    v16.register_hook([&](const Tensor& g) {
      seen = g.dtype();
      return Tensor();
    });
    linear(x, v16).sum().backward();
    CHECK(seen == DType::BF16);
    CHECK(rel_diff(v.grad(), w.grad()) == 0);
  }

  TEST_CASE("grad_dtype: casts other than float32 -> bf16 (from float64, to float32) keep their own gradient dtype") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (Device d : devices) {
      CAPTURE(d.str());
      // float64 leaves cast to float32, and to bf16, into linear: each gradient is g·W / gᵀx / Σg in float64
      Tensor x64 = Tensor::ones({2, 4}, DType::F64, d).requires_grad_();
      Tensor w64 = Tensor::ones({3, 4}, DType::F64, d).requires_grad_();
      Tensor b64 = Tensor::ones({3}, DType::F64, d).requires_grad_();
      linear(x64.to(DType::F32), w64.to(DType::F32), b64.to(DType::F32)).sum().backward();
      for (Tensor* t : {&x64, &w64, &b64}) {
        REQUIRE(t->grad().dtype() == DType::F64);
        for (double v : t->grad().to(Device::cpu()).to_vector<double>()) CHECK(v == (t == &x64 ? 3.0 : 2.0));
        t->zero_grad();
      }
      linear(x64.to(DType::BF16), w64.to(DType::BF16), b64.to(DType::BF16)).sum().backward();
      for (const Tensor* t : {&x64, &w64, &b64})
        for (double v : t->grad().to(Device::cpu()).to_vector<double>()) CHECK(v == (t == &x64 ? 3.0 : 2.0));
      // a layer taken out of autocast: its float32 copy of a bf16 activation
      Tensor w = Tensor::ones({3, 4}, DType::F32, d).requires_grad_(), w2 = Tensor::ones({2, 3}, DType::F32, d);
      Tensor out;
      {
        AutocastBF16 on;
        Tensor h = relu(linear(Tensor::ones({2, 4}, DType::F32, d), w));
        AutocastBF16 off(false);
        out = linear(h.to(DType::F32), w2);
      }
      out.sum().backward();
      for (double v : w.grad().to(Device::cpu()).to_vector<double>()) CHECK(v == 4.0);
    }
  }

  TEST_CASE("autocast: the fan-in sums fold through the casts as in float32 (tracking off), and add with it on") {
    // as test_nn.cpp's float32 case: 23 sums folded into the GEMMs and kernels, in a 2 + 2-layer model
    for (const std::string topo : {"post_ln", "pre_ln"}) {
      CAPTURE(topo);
      nn::TransformerConfig c;
      c.topology = topo;
      c.enc_layers = c.dec_layers = 2;
      c.d_model = 16, c.heads = 2, c.d_ff = 32, c.vocab = 11, c.pad_id = 1, c.dropout = 0;
      Tensor src = Tensor::from_vector(std::vector<int64_t>{2, 3, 4, 5, 6, 7, 1, 1}, {2, 4});
      Tensor tin = Tensor::from_vector(std::vector<int64_t>{0, 4, 5, 0, 6, 1}, {2, 3});
      Tensor tout = Tensor::from_vector(std::vector<int64_t>{4, 5, 2, 6, 1, 1}, {2, 3});
      std::vector<std::vector<float>> grads[2];
      for (bool tracking : {false, true}) {
        manual_seed(5);
        nn::Transformer m(c);
        Tensor loss;
        {
          AutocastBF16 on;
          loss = nn::label_smoothed_nll(m.forward(src, tin), tout, 1, 0.1).loss;
        }
        {
          TrackGradNormsGuard track(tracking);
          loss.backward();
        }
        const FanInSums f = last_backward_fan_in();
        if (!tracking) {
          CHECK(f.folded == 23);
          CHECK(f.added == 0);
        } else {  // each cast's own gradient is formed (its norm is read): a sum through a cast is an add
          CHECK(f.folded + f.added == 23);
          if (topo == "post_ln") CHECK(f.added > 0);  // x feeds the residual add and the Q/K/V cast
        }
        for (const Tensor& p : m.parameters()) grads[tracking].push_back(p.grad().to_vector<float>());
      }
      // the same gradients either way, up to the order of float32 additions
      for (size_t i = 0; i < grads[0].size(); i++)
        for (size_t j = 0; j < grads[0][i].size(); j++)
          CHECK(grads[0][i][j] == doctest::Approx(grads[1][i][j]).epsilon(1e-4).scale(1e-2));
    }
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("float32 with bf16 elementwise: the kernel reads the bf16 operand as it is, no cast; gradients in each dtype") {
    std::vector<Device> devices{Device::cpu()};
    if (have_cuda()) devices.push_back(Device::cuda());
    for (Device d : devices) {
      CAPTURE(d.str());
      Tensor a = randn_f32({3, 4}, 10).to(d), b16 = randn_f32({3, 4}, 11).to(DType::BF16).to(d),
             row16 = randn_f32({4}, 12).to(DType::BF16).to(d);
      const Tensor b32 = b16.to(DType::F32), row32 = row16.to(DType::F32);
      // every binary op, both operand orders, broadcast and transposed operands: the float32 op on the widened value
      for (auto f : {+[](const Tensor& x, const Tensor& y) { return add(x, y); },
                     +[](const Tensor& x, const Tensor& y) { return sub(x, y); },
                     +[](const Tensor& x, const Tensor& y) { return mul(x, y); },
                     +[](const Tensor& x, const Tensor& y) { return div(x, y); },
                     +[](const Tensor& x, const Tensor& y) { return maximum(x, y); },
                     +[](const Tensor& x, const Tensor& y) { return gt(x, y); }}) {
        CHECK(f(a, b16).dtype() == DType::F32);
        CHECK(rel_diff(f(a, b16), f(a, b32)) == 0);
        CHECK(rel_diff(f(b16, a), f(b32, a)) == 0);
        CHECK(rel_diff(f(a, row16), f(a, row32)) == 0);
        CHECK(rel_diff(f(a.t(), b16.t()), f(a.t(), b32.t())) == 0);
      }
      // autograd: no to_dtype node; a's gradient float32, b's bf16 (each share rounded, then summed in bf16, as
      // PyTorch's engine does)
      current_tape().clear();
      Tensor x = a.detach().requires_grad_(), y = b16.detach().requires_grad_();
      Tensor out = mul(x, y) + y;
      for (const auto& node : current_tape().nodes()) CHECK(std::string(node->op->name) != "to_dtype");
      Tensor g = randn_f32({3, 4}, 13).to(d);
      out.backward(g);
      REQUIRE(x.grad().dtype() == DType::F32);
      REQUIRE(y.grad().dtype() == DType::BF16);
      CHECK(rel_diff(x.grad(), g * b32) == 0);
      CHECK(rel_diff(y.grad(), (g * a).to(DType::BF16) + g.to(DType::BF16)) == 0);
    }
    // the backend takes one dtype, or a float32 and a bf16 operand for a float32 result; anything else is an error
    Tensor h = Tensor::ones({2}, DType::BF16), f = Tensor::ones({2}, DType::F32), out16 = Tensor::empty({2}, DType::BF16);
    CHECK_THROWS_WITH_AS(backend_for(Device::cpu()).binary(BinaryOp::Add, h, h, f),
                         doctest::Contains("binary: operands bfloat16[2] cpu and bfloat16[2] cpu for float32[2]"),
                         Error);
    CHECK_THROWS_WITH_AS(backend_for(Device::cpu()).binary(BinaryOp::Add, f, h, out16), doctest::Contains("binary"),
                         Error);
    // float64 with bf16 still promotes by a recorded cast
    current_tape().clear();
    Tensor z = Tensor::ones({2}, DType::BF16).requires_grad_();
    CHECK((z + Tensor::ones({2}, DType::F64)).dtype() == DType::F64);
    CHECK(std::string(current_tape().nodes().front()->op->name) == "to_dtype");
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("cross entropy reads bf16 logits as they are: a float32 loss, bf16 logit gradients, no cast node") {
    Tensor logits32 = randn_f32({6, 9}, 14).to(DType::BF16).to(DType::F32);  // values a bf16 holds exactly
    Tensor targets = Tensor::from_vector<int64_t>({1, 8, 0, -100, 3, 3}, {6});
    // the reference: float32 logits of the same values; its gradient rounded once to bf16
    Tensor ref = logits32.detach().requires_grad_();
    Tensor want = cross_entropy(ref, targets, -100, 0.1);
    want.backward();
    std::vector<Device> devices{Device::cpu()};
    if (have_cuda()) devices.push_back(Device::cuda());
    for (Device d : devices) {
      CAPTURE(d.str());
      const int64_t before = in_float32_calls();
      current_tape().clear();
      Tensor x = logits32.to(DType::BF16).to(d).requires_grad_();
      Tensor loss;
      {
        AutocastBF16 on;  // the same in or out of a scope
        loss = cross_entropy(x, targets.to(d), -100, 0.1);
      }
      for (const auto& node : current_tape().nodes()) CHECK(std::string(node->op->name) != "to_dtype");
      REQUIRE(loss.dtype() == DType::F32);
      CHECK(loss.item() == doctest::Approx(want.item()).epsilon(1e-6));
      loss.backward();
      REQUIRE(x.grad().dtype() == DType::BF16);
      CHECK(rel_diff(x.grad(), ref.grad().to(DType::BF16)) <= (d.is_cpu() ? 0.0 : 1e-2));
      if (!d.is_cpu()) CHECK(in_float32_calls() == before);  // the GPU's kernels read bf16 natively
    }
  }

  TEST_CASE("label_smoothed_nll of bf16 logits: ntokens counts exactly past 256 (float32, as the loss), nll_sum too") {
    const int64_t N = 1001, V = 5;  // 1001 rounds to 1000 in bf16
    Tensor logits = randn_f32({N, V}, 15).to(DType::BF16);
    std::vector<int64_t> ids(N);
    for (int64_t i = 0; i < N; i++) ids[i] = 1 + i % (V - 1);  // pad id 0 never occurs
    Tensor targets = Tensor::from_vector<int64_t>(ids, {N});
    for (double eps : {0.0, 0.1}) {
      CAPTURE(eps);
      nn::LabelSmoothedLoss L = nn::label_smoothed_nll(logits, targets, 0, eps);
      REQUIRE(L.loss.dtype() == DType::F32);
      CHECK(L.ntokens.dtype() == DType::F32);
      CHECK(L.ntokens.item() == 1001.0);
      // the nll sum of the same values in float32
      const double want = cross_entropy(logits.to(DType::F32), targets, 0, 0.0, Reduction::Sum).item();
      CHECK(L.nll_sum().item() == doctest::Approx(want).epsilon(1e-5));
    }
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("norms of a bf16 input with float32 parameters: computed in float32, bf16 output, float32 parameter grads") {
    // attention's heads inside a projection, as HybridNorm's QKV norms see them
    Tensor x32 = randn_f32({2, 3, 8}, 15).to(DType::BF16).to(DType::F32).reshape({2, 3, 2, 4}).transpose(1, 2);
    Tensor gamma = randn_f32({4}, 16), beta = randn_f32({4}, 17), gy = randn_f32({2, 2, 3, 4}, 18);
    for (int rms = 0; rms < 2; rms++) {
      CAPTURE(rms);
      auto norm = [&](const Tensor& x, const Tensor& g, const Tensor& b) {
        return rms ? rms_norm(x, g) : layer_norm(x, g, b);
      };
      // the reference: float32 throughout on the same values, its output and x's gradient rounded once
      Tensor rx = x32.detach().requires_grad_(), rg = gamma.detach().requires_grad_(),
             rb = beta.detach().requires_grad_();
      Tensor want = norm(rx, rg, rb);
      want.backward(gy);
      std::vector<Device> devices{Device::cpu()};
      if (have_cuda()) devices.push_back(Device::cuda());
      for (Device d : devices) {
        CAPTURE(d.str());
        const int64_t before = in_float32_calls();
        Tensor x = x32.to(DType::BF16).to(d).requires_grad_(), g = gamma.to(d).detach().requires_grad_(),
               b = beta.to(d).detach().requires_grad_();
        Tensor y;
        {
          AutocastBF16 on;  // the same in or out of a scope: no cast either way
          current_tape().clear();
          y = norm(x, g, b);
          for (const auto& node : current_tape().nodes()) CHECK(std::string(node->op->name) != "to_dtype");
        }
        REQUIRE(y.dtype() == DType::BF16);
        const double tol = d.is_cpu() ? 0.0 : 1e-2;  // the GPU sums in another order: a bf16 rounding may flip
        CHECK(rel_diff(y, want.detach().to(DType::BF16)) <= tol);
        y.backward(gy.to(DType::BF16).to(d));
        REQUIRE(x.grad().dtype() == DType::BF16);
        REQUIRE(g.grad().dtype() == DType::F32);
        // gy rounded to bf16 is the one difference from the reference's gradients
        CHECK(rel_diff(x.grad(), rx.grad().to(DType::BF16)) < 2e-2);
        CHECK(rel_diff(g.grad(), rg.grad()) < 1e-2);
        if (!rms) CHECK(rel_diff(b.grad(), rb.grad()) < 1e-2);
        if (!d.is_cpu()) CHECK(in_float32_calls() == before);  // native (bf16, float) kernels on the GPU
      }
    }
    // parameters of another dtype than the input's, other than float32 for bf16: an error naming the op
    CHECK_THROWS_WITH_AS(layer_norm(Tensor::ones({2, 4}, DType::BF16), Tensor::ones({4}, DType::F64), Tensor()),
                         doctest::Contains("layer_norm: gamma float64[4]"), Error);
    CHECK_THROWS_WITH_AS(rms_norm(Tensor::ones({2, 4}, DType::F32), Tensor::ones({4}, DType::BF16)),
                         doctest::Contains("rms_norm: weight bfloat16[4]"), Error);
    AutocastBF16 on;  // a float64 input with bf16 parameters: the message names the dtypes given, not a cast's
    CHECK_THROWS_WITH_AS(layer_norm(Tensor::ones({2, 4}, DType::F64), Tensor::ones({4}, DType::BF16), Tensor()),
                         doctest::Contains("layer_norm: gamma bfloat16[4]"), Error);
    CHECK_THROWS_WITH_AS(rms_norm(Tensor::ones({2, 4}, DType::F64), Tensor::ones({4}, DType::BF16)),
                         doctest::Contains("rms_norm: weight bfloat16[4]"), Error);
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("a weight and bias gradient of bf16 products into float32, fused or not: the same sums, no detour") {
    // gW = g^T x and gb = the column sums of g, for g [rows, out] and x [rows, in] in bf16, both written float32:
    // by the backend's gemm_bias_grad (cuBLASLt's epilogue on the GPU where it takes it) and by the unfused
    // default (a GEMM, then a bf16 -> float32 reduction), which runs where cuBLASLt declines
    const int64_t rows = 6, in = 5, outf = 3;
    Tensor g32 = randn_f32({rows, outf}, 19).to(DType::BF16).to(DType::F32),
           x32 = randn_f32({rows, in}, 20).to(DType::BF16).to(DType::F32);
    const Tensor want_w = matmul(g32, x32, true, false), want_b = g32.sum({0});
    std::vector<Device> devices{Device::cpu()};
    if (have_cuda()) devices.push_back(Device::cuda());
    for (Device d : devices)
      for (bool fused : {true, false}) {
        CAPTURE(d.str());
        CAPTURE(fused);
        Backend& be = backend_for(d);
        Tensor g = g32.to(DType::BF16).to(d), x = x32.to(DType::BF16).to(d);
        Tensor gw = Tensor::empty({outf, in}, DType::F32, d), gb = Tensor::empty({outf}, DType::F32, d);
        GemmArgs a;  // op(A) = g^T [outf, rows], B = x [rows, in]
        a.dtype = DType::BF16, a.c_float32 = true, a.trans_a = true;
        a.m = outf, a.n = in, a.k = rows;
        a.a = g.data_ptr(), a.lda = outf, a.b = x.data_ptr(), a.ldb = in, a.c = gw.data_ptr(), a.ldc = in;
        const int64_t before = in_float32_calls();
        if (fused) be.gemm_bias_grad(a, g, gb);
        else be.Backend::gemm_bias_grad(a, g, gb);
        CHECK(rel_diff(gw, want_w) < 1e-6);
        CHECK(rel_diff(gb, want_b) < 1e-6);
        if (!d.is_cpu()) CHECK(in_float32_calls() == before);  // the reduction reads bf16 natively on the GPU
      }
  }

  TEST_CASE("precast weights get their gradient after a use under NoGradGuard, and in a second step's graph") {
    Tensor x = randn_f32({4, 8}, 21).requires_grad_(), w = randn_f32({3, 8}, 22).requires_grad_();
    Tensor want;  // w's gradient with no precast
    {
      AutocastBF16 on;
      linear(x, w).sum().backward();
      want = w.grad().clone();
      w.zero_grad();
    }
    AutocastBF16 on;
    on.precast({w});
    {
      NoGradGuard no_grad;  // an evaluation first: it must not use up the cast's one recording
      (void)linear(x, w);
    }
    for (int step = 0; step < 2; step++) {  // the second step's graph records the cast again (the first was freed)
      CAPTURE(step);
      linear(x, w).sum().backward();
      REQUIRE(w.grad().defined());
      CHECK(rel_diff(w.grad(), want) == 0);
      w.zero_grad();
    }
  }
}
