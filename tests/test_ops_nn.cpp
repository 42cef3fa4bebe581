// Neural-network ops: forward values against hand-computed results, finite-difference gradients for every op
// (different dims, strided inputs, optional affine parameters, ignored targets, broadcasting) and the errors.
#include <bit>
#include <cmath>
#include <limits>

#include "backends/cpu/vec_math.h"

#include "test_util.h"

using namespace sgtest;

namespace {
Tensor f64(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector<double>(v, s); }
Tensor i64(const std::vector<int64_t>& v, const Shape& s) { return Tensor::from_vector<int64_t>(v, s); }
}  // namespace

// ---------------------------------------------------------------- gradient checks

REGISTER_GRAD_CASES {
  std::vector<GradCase> cs;
  for (const char* op : {"softmax", "log_softmax"}) {
    auto f = [op](int64_t dim) {
      return [op, dim](const std::vector<Tensor>& x) {
        return std::string(op) == "softmax" ? softmax(x[0], dim) : log_softmax(x[0], dim);
      };
    };
    cs.push_back(gc(op, "2-D, dim -1", f(-1), {leaf({3, 4}, 1)}));
    cs.push_back(gc(op, "2-D, dim 0", f(0), {leaf({3, 4}, 2)}));
    cs.push_back(gc(op, "3-D, middle dim", f(1), {leaf({2, 3, 4}, 3)}));
    cs.push_back(gc(op, "transposed input, dim -1", f(-1), {leaf_transposed({4, 3}, 4)}));
    cs.push_back(gc(op, "transposed input, dim 0", f(0), {leaf_transposed({4, 3}, 5)}));
  }
  return cs;
}

REGISTER_GRAD_CASES {
  auto ln = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-5); };
  auto ln_plain = [](const std::vector<Tensor>& x) { return layer_norm(x[0], Tensor(), Tensor()); };
  auto ln_gamma = [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], Tensor()); };
  auto rms = [](const std::vector<Tensor>& x) { return rms_norm(x[0], x[1], 1e-6); };
  auto rms_plain = [](const std::vector<Tensor>& x) { return rms_norm(x[0], Tensor()); };
  return std::vector<GradCase>{
      gc("layer_norm", "affine", ln, {leaf({3, 5}, 1), leaf({5}, 2), leaf({5}, 3)}),
      gc("layer_norm", "affine, 3-D input", ln, {leaf({2, 3, 4}, 4), leaf({4}, 5), leaf({4}, 6)}),
      gc("layer_norm", "no affine", ln_plain, {leaf({4, 6}, 7)}),
      gc("layer_norm", "gamma only", ln_gamma, {leaf({3, 4}, 8), leaf({4}, 9)}),
      gc("layer_norm", "transposed input", ln, {leaf_transposed({5, 4}, 10), leaf({4}, 11), leaf({4}, 12)}),
      gc("rms_norm", "with weight", rms, {leaf({3, 5}, 13), leaf({5}, 14)}),
      gc("rms_norm", "no weight", rms_plain, {leaf({2, 3, 4}, 15)}),
      gc("rms_norm", "transposed input", rms, {leaf_transposed({4, 3}, 16), leaf({3}, 17)}),
      // attention's heads [B, H, T, dh] inside a projection's [B, T, H*dh]: normalised where they are
      gc("layer_norm", "heads inside a projection", [](const std::vector<Tensor>& x) {
        return layer_norm(x[0].reshape({2, 3, 2, 4}).transpose(1, 2), x[1], x[2]);
      }, {leaf({2, 3, 8}, 21), leaf({4}, 22), leaf({4}, 23)}),
      gc("rms_norm", "heads inside a projection", [](const std::vector<Tensor>& x) {
        return rms_norm(x[0].reshape({2, 3, 2, 4}).transpose(1, 2), x[1]);
      }, {leaf({2, 3, 8}, 24), leaf({4}, 25)}),
      gc("l2_norm", "2-D", [](const std::vector<Tensor>& x) { return l2_norm(x[0]); }, {leaf({3, 4}, 18)}),
      gc("l2_norm", "transposed input", [](const std::vector<Tensor>& x) { return l2_norm(x[0]); },
         {leaf_transposed({4, 3}, 19)}),
      // Rows of norm ~2 and ~0.02 with eps 0.5: the second row is clamped (y = x / eps).
      gc("l2_norm", "clamped row", [](const std::vector<Tensor>& x) { return l2_norm(x[0] * x[1], 0.5); },
         {leaf({2, 4}, 20), f64({1, 0.01}, {2, 1}).requires_grad_()}),
  };
}

REGISTER_GRAD_CASES {
  Tensor ids = i64({1, 3, 1, 0, 4, 3}, {2, 3});  // repeats 1 and 3; 0 is the padding id below
  // The padding row is held at zero (as nn.Embedding keeps it), so the forward does not depend on it either.
  Tensor pad_row = i64({1, 0, 0, 0, 0}, {5, 1});
  auto emb = [ids, pad_row](int64_t pad) {
    return [ids, pad_row, pad](const std::vector<Tensor>& x) {
      const Device d = x[0].device();  // the case runs on the CPU and the GPU (tests/test_cuda_sweep.cpp)
      return embedding(pad >= 0 ? masked_fill(x[0], pad_row.to(d), 0) : x[0], ids.to(d), pad);
    };
  };
  Tensor targets = i64({2, -100, 0, 4}, {4});
  auto ce = [targets](double ls, Reduction r) {
    return [targets, ls, r](const std::vector<Tensor>& x) {
      return cross_entropy(x[0], targets.to(x[0].device()), -100, ls, r);
    };
  };
  Tensor targets3 = i64({1, 3, 0, 7, 2, 3}, {2, 3});  // 7 is the ignore_index here
  auto ce3 = [targets3](const std::vector<Tensor>& x) {
    return cross_entropy(x[0], targets3.to(x[0].device()), 7, 0.2);
  };
  return std::vector<GradCase>{
      gc("embedding", "repeated ids, padding id 0", emb(0), {leaf({5, 3}, 1)}),
      gc("embedding", "repeated ids, no padding", emb(-1), {leaf({5, 3}, 2)}),
      gc("cross_entropy", "mean, ls 0, one ignored row", ce(0.0, Reduction::Mean), {leaf({4, 5}, 3)}),
      gc("cross_entropy", "mean, ls 0.1, one ignored row", ce(0.1, Reduction::Mean), {leaf({4, 5}, 4)}),
      gc("cross_entropy", "sum, ls 0.1", ce(0.1, Reduction::Sum), {leaf({4, 5}, 5)}),
      gc("cross_entropy", "none, ls 0.1", ce(0.1, Reduction::None), {leaf({4, 5}, 6)}),
      gc("cross_entropy", "none, ls 0, transposed logits", ce(0.0, Reduction::None), {leaf_transposed({4, 5}, 7)}),
      gc("cross_entropy", "3-D logits, ignore_index 7, ls 0.2", ce3, {leaf({2, 3, 4}, 8)}),
  };
}

REGISTER_GRAD_CASES {
  // A fresh generator per evaluation so every finite-difference step sees the same mask.
  auto drop = [](double p, uint64_t seed) {
    return [p, seed](const std::vector<Tensor>& x) {
      Generator g(seed);
      return dropout(x[0], p, true, &g);
    };
  };
  Tensor row_mask = i64({1, 0, 0, 1}, {1, 4});
  Tensor full_mask = f64({0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1}, {3, 4});
  Tensor cond = f64({1, 0, 1}, {3, 1});
  Tensor cond_full = i64({1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1}, {3, 4});
  auto wh = [](const Tensor& c) {
    return [c](const std::vector<Tensor>& x) { return where(c.to(x[0].device()), x[0], x[1]); };
  };
  return std::vector<GradCase>{
      gc("dropout", "p 0.3", drop(0.3, 7), {leaf({4, 5}, 1)}),
      gc("dropout", "p 0.5, transposed input", drop(0.5, 8), {leaf_transposed({5, 4}, 2)}),
      gc("masked_fill", "row mask broadcast", [row_mask](const std::vector<Tensor>& x) {
        return masked_fill(x[0], row_mask.to(x[0].device()), -3.0);
      }, {leaf({3, 4}, 3)}),
      gc("masked_fill", "full float mask, transposed input", [full_mask](const std::vector<Tensor>& x) {
        return masked_fill(x[0], full_mask.to(x[0].device()), 0.5);
      }, {leaf_transposed({3, 4}, 4)}),
      gc("where", "cond [3,1], a [3,4], b [4]", wh(cond), {leaf({3, 4}, 5), leaf({4}, 6)}),
      gc("where", "cond [3,4], a [1,4], b [3,1]", wh(cond_full), {leaf({1, 4}, 7), leaf({3, 1}, 8)}),
  };
}

// ---------------------------------------------------------------- forward values

TEST_SUITE("ops_nn") {
  TEST_CASE("softmax and log_softmax: known values, rows sum to 1, any dim, strided input") {
    Tensor x = f64({0, std::log(2.0), std::log(3.0)}, {1, 3});
    check_close(softmax(x), {1 / 6.0, 2 / 6.0, 3 / 6.0}, 1e-12);
    check_close(log_softmax(x), {std::log(1 / 6.0), std::log(2 / 6.0), std::log(3 / 6.0)}, 1e-12);

    Tensor r = leaf({3, 4, 5}, 3).detach();
    check_close(sum(softmax(r, -1), {-1}), std::vector<double>(12, 1.0), 1e-12);
    check_close(sum(softmax(r, 1), {1}), std::vector<double>(15, 1.0), 1e-12);
    check_close(sum(softmax(r, 0), {0}), std::vector<double>(20, 1.0), 1e-12);
    // over a middle dim = over the last dim of the transposed tensor
    Tensor a = softmax(r, 1), b = softmax(r.transpose(1, 2).contiguous(), -1).transpose(1, 2);
    CHECK(max_abs_diff(a, b) < 1e-14);
    CHECK(max_abs_diff(exp(log_softmax(r, 0)), softmax(r, 0)) < 1e-14);
    // a transposed (non-contiguous) input gives the same values as its contiguous copy
    Tensor t = r.select(0, 0).t();
    CHECK(max_abs_diff(softmax(t, -1), softmax(t.contiguous(), -1)) < 1e-15);
    // large logits do not overflow; float32 works too
    check_close(softmax(Tensor::from_vector<float>({1000, 1000}, {2})), {0.5, 0.5});
  }

  TEST_CASE("norms of rows laid out as a permutation (attention's heads) read and write them in place") {
    Tensor x = Tensor::randn({2, 3, 8}, 0, 1, DType::F64).reshape({2, 3, 2, 4}).transpose(1, 2);  // [B, H, T, dh]
    Tensor g = Tensor::randn({4}, 0, 1, DType::F64), b = Tensor::randn({4}, 0, 1, DType::F64);
    for (int which = 0; which < 2; which++) {
      Tensor y = which ? rms_norm(x, g) : layer_norm(x, g, b);
      Tensor want = which ? rms_norm(x.contiguous(), g) : layer_norm(x.contiguous(), g, b);
      CHECK(y.strides() == x.strides());  // the output has the input's layout: no copy in or out
      CHECK(max_abs_diff(y, want) < 1e-12);
    }
    // a layout whose rows are not contiguous (the normalised dim strided) is still copied and still right
    Tensor xt = Tensor::randn({4, 6}, 0, 1, DType::F64).t();
    CHECK(max_abs_diff(layer_norm(xt, Tensor(), Tensor()), layer_norm(xt.contiguous(), Tensor(), Tensor())) < 1e-12);
    CHECK(layer_norm(xt, Tensor(), Tensor()).is_contiguous());
  }

  TEST_CASE("layer_norm: mean 0 and variance 1 per row, then gamma and beta") {
    Tensor x = leaf({4, 8}, 5, 3.0).detach() + 2.0;
    Tensor y = layer_norm(x, Tensor(), Tensor(), 1e-12);
    check_close(mean(y, {-1}), std::vector<double>(4, 0.0), 1e-12);
    check_close(mean(y * y, {-1}), std::vector<double>(4, 1.0), 1e-9);  // biased variance, as PyTorch
    check_close(layer_norm(f64({1, 2, 3}, {3}), f64({1, 2, 3}, {3}), f64({0, 1, 0}, {3}), 0),
                {-std::sqrt(1.5), 1, std::sqrt(1.5) * 3});
  }

  TEST_CASE("rms_norm and l2_norm: hand-computed values") {
    // [3, 4]: mean square 12.5
    check_close(rms_norm(f64({3, 4}, {2}), Tensor(), 0), {3 / std::sqrt(12.5), 4 / std::sqrt(12.5)}, 1e-12);
    check_close(rms_norm(f64({3, 4}, {2}), f64({2, -1}, {2}), 0), {6 / std::sqrt(12.5), -4 / std::sqrt(12.5)},
                1e-12);
    check_close(l2_norm(f64({3, 4, 0, 0, 1e-3, 0}, {3, 2})), {0.6, 0.8, 0, 0, 1, 0}, 1e-12);
    check_close(l2_norm(f64({1e-3, 0}, {2}), 0.1), {1e-2, 0}, 1e-12);  // clamped: x / eps
    // float32 rows whose norm fits float32 but whose sum of squares would not (or would underflow)
    check_close(l2_norm(Tensor::from_vector<float>({3e20f, 4e20f, 3e-23f, 4e-23f}, {2, 2}), 1e-30),
                {0.6, 0.8, 0.6, 0.8}, 1e-6);
  }

  TEST_CASE("l2_norm, softmax, layer_norm, cross_entropy are one node each with their op name") {
    Tensor x = leaf({2, 3}, 1);
    for (auto& [name_, f] : std::vector<std::pair<std::string, std::function<Tensor()>>>{
             {"l2_norm", [&] { return l2_norm(x); }},
             {"softmax", [&] { return softmax(x, 0); }},
             {"log_softmax", [&] { return log_softmax(x); }},
             {"layer_norm", [&] { return layer_norm(x, Tensor(), Tensor()); }},
             {"cross_entropy", [&] { return cross_entropy(x, i64({0, 2}, {2})); }},
             {"dropout", [&] { return dropout(x, 0.5); }}}) {
      const std::string name = name_;  // clang 14 cannot capture a structured binding (CAPTURE does)
      CAPTURE(name);
      current_tape().clear();
      Tensor y = f();
      CHECK(current_tape().size() == 1);
      CHECK(y.node_name() == name);
    }
    current_tape().clear();
  }

  TEST_CASE("embedding gathers rows; padding rows get no gradient") {
    Tensor w = f64({0, 1, 10, 11, 20, 21}, {3, 2}).requires_grad_();
    Tensor ids = i64({2, 0, 2, 1}, {2, 2});
    Tensor y = embedding(w, ids, 2);
    CHECK(y.shape() == Shape{2, 2, 2});
    check_close(y, {20, 21, 0, 1, 20, 21, 10, 11});
    sum(y).backward();
    check_close(w.grad(), {1, 1, 1, 1, 0, 0});
  }

  TEST_CASE("cross_entropy: uniform logits give log V; label smoothing by hand; ignore_index; reductions") {
    Tensor u = Tensor::zeros({3, 7}, DType::F64);
    CHECK(cross_entropy(u, i64({0, 3, 6}, {3})).item() == doctest::Approx(std::log(7.0)).epsilon(1e-12));
    CHECK(cross_entropy(u, i64({0, 3, 6}, {3}), -100, 0.3).item() == doctest::Approx(std::log(7.0)).epsilon(1e-12));

    // logits [1, 2, 3], target 0, ls 0.1: 0.9 * (lse - 1) + 0.1 * mean(lse - x) = lse - 0.9 - 0.2
    const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    Tensor x = f64({1, 2, 3, 1, 2, 3}, {2, 3});
    Tensor t = i64({0, -100}, {2});
    check_close(cross_entropy(x, t, -100, 0.1, Reduction::None), {lse - 1.1, 0}, 1e-12);
    CHECK(cross_entropy(x, t, -100, 0.1).item() == doctest::Approx(lse - 1.1).epsilon(1e-12));  // mean of 1 row
    CHECK(cross_entropy(x, t, -100, 0.1, Reduction::Sum).item() == doctest::Approx(lse - 1.1).epsilon(1e-12));
    CHECK(cross_entropy(x, i64({0, 2}, {2}), -100, 0, Reduction::Sum).item() ==
          doctest::Approx(2 * lse - 4).epsilon(1e-12));
    CHECK(cross_entropy(x, i64({0, 2}, {2})).item() == doctest::Approx(lse - 2).epsilon(1e-12));

    // [..., V] logits with [...] targets; None keeps the targets' shape
    Tensor x3 = leaf({2, 2, 3}, 4).detach();
    Tensor none = cross_entropy(x3, i64({0, 1, 2, 0}, {2, 2}), -100, 0, Reduction::None);
    CHECK(none.shape() == Shape{2, 2});
    auto l = log_softmax(x3).to_vector<double>();
    check_close(none, {-l[0], -l[4], -l[8], -l[9]}, 1e-12);

    // every target ignored: mean is 0, not NaN, and so is the gradient
    Tensor xg = leaf({2, 3}, 5);
    Tensor all_ignored = cross_entropy(xg, i64({-100, -100}, {2}));
    CHECK(all_ignored.item() == 0.0);
    all_ignored.backward();
    check_close(xg.grad(), std::vector<double>(6, 0.0), 0);
  }

  TEST_CASE("masked classes (-inf logits) and fully masked softmax rows stay finite") {
    const double inf = std::numeric_limits<double>::infinity();
    Tensor x = f64({1, -inf, 3, -inf, 0, 0}, {2, 3});
    x.requires_grad_();
    const double lse0 = std::log(std::exp(1.0) + std::exp(3.0));
    Tensor loss = cross_entropy(x, i64({0, 1}, {2}), -100, 0, Reduction::None);
    check_close(loss, {lse0 - 1, std::log(2.0)}, 1e-12);
    sum(loss).backward();
    check_close(x.grad(), {std::exp(1 - lse0) - 1, 0, std::exp(3 - lse0), 0, -0.5, 0.5}, 1e-12);
    // a row with every entry masked: softmax gives zeros (not NaN) and so does its gradient
    Tensor m = f64({-inf, -inf, 0, 1}, {2, 2});
    m.requires_grad_();
    Tensor y = softmax(m);
    check_close(y, {0, 0, 1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-1.0))}, 1e-12);
    sum(y * f64({1, 2, 3, 4}, {2, 2})).backward();
    auto g = m.grad().to_vector<double>();
    CHECK(g[0] == 0);
    CHECK(g[1] == 0);
    // log_softmax of that row is log of those zeros, -inf (was -inf + inf = NaN), so exp(log_softmax) = softmax
    std::vector<Device> devices = {Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (Device dev : devices)
      for (DType dt : {DType::F32, DType::F64}) {
        INFO(dev.str() << " " << dtype_name(dt));
        const std::vector<double> ly = log_softmax(m.detach().to(dt).to(dev)).to_vector<double>();
        CHECK(ly[0] == -inf);
        CHECK(ly[1] == -inf);
        CHECK(ly[3] == doctest::Approx(-std::log1p(std::exp(-1.0))).epsilon(1e-6));
      }
  }

  TEST_CASE("a softmax row holding NaN or +inf is NaN throughout, as torch's; a fully masked row stays 0") {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
    std::vector<Device> devices = {Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (Device dev : devices)
      for (DType dt : {DType::F32, DType::F64}) {
        INFO(dev.str() << " " << dtype_name(dt));
        const Tensor x = f64({nan, 0, 1, inf, 0, 1, -inf, -inf, -inf, 0, 1, 2}, {4, 3}).to(dt).to(dev);
        const std::vector<double> y = softmax(x).to_vector<double>(), ly = log_softmax(x).to_vector<double>();
        for (int c = 0; c < 6; c++) {
          CHECK(std::isnan(y[c]));
          CHECK(std::isnan(ly[c]));
        }
        for (int c = 6; c < 9; c++) CHECK(y[c] == 0);
        CHECK(y[11] == doctest::Approx(std::exp(2.0) / (1 + std::exp(1.0) + std::exp(2.0))).epsilon(1e-6));
      }
  }

  TEST_CASE("dropout: keeps about 1-p, scales by 1/(1-p), same seed gives the same mask, eval is identity") {
    Tensor x = Tensor::ones({100, 100}, DType::F64);
    Generator g1(42), g2(42);
    Tensor a = dropout(x, 0.25, true, &g1);
    Tensor b = dropout(x, 0.25, true, &g2);
    CHECK(max_abs_diff(a, b) == 0);
    CHECK(g1.offset() == 10000);
    int64_t kept = 0, other = 0;
    for (double v : a.to_vector<double>()) {
      kept += std::abs(v - 1 / 0.75) < 1e-12;
      other += v != 0 && std::abs(v - 1 / 0.75) >= 1e-12;
    }
    CHECK(other == 0);
    CHECK(kept > 7300);
    CHECK(kept < 7700);
    Tensor c = dropout(x, 0.25, true, &g1);  // the generator advanced: a different mask
    CHECK(max_abs_diff(a, c) > 0);
    CHECK(dropout(x, 0.25, false, &g1).shares_storage(x));
    CHECK(dropout(x, 0.0, true, &g1).shares_storage(x));
    CHECK(g1.offset() == 20000);
    // the gradient is the mask
    Tensor xl = leaf({3, 4}, 1);
    Generator g3(9);
    Tensor y = dropout(xl, 0.5, true, &g3);
    sum(y).backward();
    Generator g4(9);
    Tensor m = dropout(Tensor::ones({3, 4}, DType::F64), 0.5, true, &g4);
    CHECK(max_abs_diff(xl.grad(), m) == 0);
  }

  TEST_CASE("dropout keeps no mask: the backward draws it again, also after the generator moved on") {
    Tensor xl = leaf({6, 5}, 2);
    Generator g(5);
    Tensor xt = xl.transpose(0, 1);  // a strided input: the mask follows y's element order
    const size_t before = current_tape().size();
    Tensor y = dropout(xt, 0.4, true, &g);
    REQUIRE(current_tape().size() == before + 1);
    CHECK(current_tape().nodes().back()->saved_bytes() == 0);
    Tensor other = dropout(Tensor::ones({7}, DType::F64), 0.4, true, &g);  // the generator advances meanwhile
    Tensor up = leaf({5, 6}, 3).detach();
    sum(y * up).backward();
    Generator g2(5);
    Tensor mask = dropout(Tensor::ones({5, 6}, DType::F64), 0.4, true, &g2);
    CHECK(max_abs_diff(y, xl.detach().transpose(0, 1) * mask) == 0);
    CHECK(max_abs_diff(xl.grad(), (up * mask).transpose(0, 1)) == 0);
    // a NaN in x stays visible where it is dropped, as x * mask shows it
    Tensor nan = Tensor::full({64}, std::nan(""), DType::F64);
    for (double v : dropout(nan, 0.5, true, &g).to_vector<double>()) CHECK(std::isnan(v));
  }

  TEST_CASE("masked_fill and where: values and broadcasting") {
    Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
    check_close(masked_fill(x, i64({0, 1, 0}, {3}), -9), {1, -9, 3, 4, -9, 6});
    check_close(masked_fill(x, f64({1, 0}, {2, 1}), 0.5), {0.5, 0.5, 0.5, 4, 5, 6});
    Tensor w = where(i64({1, 0}, {2, 1}), x, f64({-1, -2, -3}, {3}));
    check_close(w, {1, 2, 3, -1, -2, -3});
    Tensor w2 = where(f64({0, 1, 1}, {3}), f64({7}, {1}), f64({8, 9}, {2, 1}));
    CHECK(w2.shape() == Shape{2, 3});
    check_close(w2, {8, 7, 7, 9, 7, 7});
  }

  TEST_CASE("fused kernels agree with compositions of elementary ops (sizes that take the parallel paths)") {
    const int64_t R = 64, C = 300, V = 300;  // R * C > the kernels' OpenMP thresholds
    Tensor x = leaf({R, C}, 11), gamma = leaf({C}, 12), beta = leaf({C}, 13);
    Tensor w = leaf({R, C}, 14, 0.1);  // output weights, so every element matters
    auto grads_of = [&](const Tensor& y, std::vector<Tensor> ins) {
      for (Tensor& t : ins) t.zero_grad();
      sum(y * w).backward(Tensor(), true);  // pieces of the compositions are shared
      std::vector<Tensor> gs;
      for (Tensor& t : ins) gs.push_back(t.grad());
      return gs;
    };
    auto agree = [&](const Tensor& fused, const Tensor& composed, std::vector<Tensor> ins) {
      CHECK(max_abs_diff(fused, composed) < 1e-10);
      auto gf = grads_of(fused, ins), gc = grads_of(composed, ins);
      for (size_t i = 0; i < ins.size(); i++) CHECK(max_abs_diff(gf[i], gc[i]) < 1e-10);
    };
    {
      Tensor e = exp(x - max(x, {-1}, true));
      agree(softmax(x), e / sum(e, {-1}, true), {x});
      agree(log_softmax(x), log(e / sum(e, {-1}, true)), {x});
    }
    {
      Tensor c = x - mean(x, {-1}, true);
      Tensor xhat = c / sqrt(mean(c * c, {-1}, true) + 1e-5);
      agree(layer_norm(x, gamma, beta, 1e-5), xhat * gamma + beta, {x, gamma, beta});
      Tensor rms = x / sqrt(mean(x * x, {-1}, true) + 1e-6);
      agree(rms_norm(x, gamma, 1e-6), rms * gamma, {x, gamma});
      agree(l2_norm(x), x / sqrt(sum(x * x, {-1}, true)), {x});
    }
    current_tape().clear();
    {
      std::vector<int64_t> t(R);
      for (int64_t i = 0; i < R; i++) t[i] = (i * 37) % V;
      t[5] = -100;
      Tensor targets = i64(t, {R});
      std::vector<double> eye(V * V, 0.0);
      for (int64_t i = 0; i < V; i++) eye[i * V + i] = 1;
      t[5] = 0;
      Tensor onehot = embedding(f64(eye, {V, V}), i64(t, {R}));
      Tensor keep = f64(std::vector<double>(R, 1.0), {R, 1});
      keep.data<double>()[5] = 0;
      Tensor nll = -sum(log_softmax(x) * onehot * keep, {-1});
      Tensor smooth = -mean(log_softmax(x) * keep, {-1});
      Tensor wl = w.select(1, 0);
      for (double ls : {0.0, 0.1}) {
        Tensor fused = cross_entropy(x, targets, -100, ls, Reduction::None);
        Tensor composed = nll * (1 - ls) + smooth * ls;
        CHECK(max_abs_diff(fused, composed) < 1e-10);
        x.zero_grad();
        sum(fused * wl).backward(Tensor(), true);
        Tensor gf = x.grad();
        x.zero_grad();
        sum(composed * wl).backward(Tensor(), true);
        CHECK(max_abs_diff(gf, x.grad()) < 1e-10);
      }
      current_tape().clear();
    }
    {
      // embedding backward with repeated ids = onehot^T @ g
      std::vector<int64_t> ids(256);
      for (int64_t i = 0; i < 256; i++) ids[i] = (i * 7) % 50;
      Tensor table = leaf({50, C}, 15), g = leaf({256, C}, 16).detach();
      sum(embedding(table, i64(ids, {256})) * g).backward();
      std::vector<double> oh(256 * 50, 0.0);
      for (int64_t i = 0; i < 256; i++) oh[i * 50 + ids[i]] = 1;
      CHECK(max_abs_diff(table.grad(), matmul(f64(oh, {256, 50}), g, true, false)) < 1e-10);
    }
  }

  TEST_CASE("float32 matches float64") {
    Tensor x = leaf({5, 7}, 21).detach(), gamma = leaf({7}, 22).detach();
    Tensor xf = x.to(DType::F32), gf = gamma.to(DType::F32);
    CHECK(max_abs_diff(softmax(xf, 0), softmax(x, 0)) < 1e-6);
    CHECK(max_abs_diff(log_softmax(xf), log_softmax(x)) < 1e-5);
    CHECK(max_abs_diff(layer_norm(xf, gf, gf), layer_norm(x, gamma, gamma)) < 1e-5);
    CHECK(max_abs_diff(rms_norm(xf, gf), rms_norm(x, gamma)) < 1e-5);
    CHECK(max_abs_diff(l2_norm(xf), l2_norm(x)) < 1e-6);
    Tensor t = i64({0, 6, 3, -100, 2}, {5});
    CHECK(max_abs_diff(cross_entropy(xf, t, -100, 0.1), cross_entropy(x, t, -100, 0.1)) < 1e-5);
    CHECK(cross_entropy(xf, t).dtype() == DType::F32);
  }

  TEST_CASE("float32 exp of softmax and cross-entropy (exp_vec) is within 1 ulp of libm; -inf, inf, NaN kept") {
    CHECK(max_ulp_distance(-86.5f, 88.72f, 6e-6f, cpu::exp_vec, [](double x) { return std::exp(x); }) <= 1);
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(cpu::exp_vec(-inf) == 0);
    CHECK(cpu::exp_vec(-90.0f) == 0);  // flushed below e^-86.5 ~ 2.7e-38
    CHECK(cpu::exp_vec(inf) == inf);
    CHECK(cpu::exp_vec(89.0f) == inf);
    CHECK(std::isnan(cpu::exp_vec(std::numeric_limits<float>::quiet_NaN())));
    CHECK(cpu::exp_vec(0.0f) == 1.0f);
  }

  TEST_CASE("float32 masked softmax, attention and cross-entropy (values and gradients) match float64") {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
    // rows of 37 columns (a lane tail), some -inf entries, wide-range logits; softmax also gets a fully masked row
    // (log_softmax of one is NaN in any precision)
    auto logits = [&](int64_t rows) {
      std::vector<double> xv = leaf({rows, 37}, 31, 8.0).detach().to_vector<double>();
      xv[3] = xv[40] = xv[41] = -inf;
      if (rows == 6)
        for (int c = 0; c < 37; c++) xv[5 * 37 + c] = -inf;
      return f64(xv, {rows, 37});
    };
    auto finite = [&](const Tensor& y) { return masked_fill(y, eq(y, Tensor::scalar(-inf, y.dtype())), 0.0); };
    for (bool log : {false, true}) {
      const Tensor x = logits(log ? 5 : 6);
      auto run = [&](DType dt) {
        Tensor xi = x.to(dt).detach().requires_grad_();  // to(F64) of a float64 x is x itself
        Tensor y = log ? log_softmax(xi) : softmax(xi);
        sum(finite(y) * leaf(x.shape(), 32).detach().to(dt)).backward();  // -inf log-probabilities left out
        return std::vector<Tensor>{finite(y).to(DType::F64), xi.grad().to(DType::F64)};
      };
      std::vector<Tensor> r64 = run(DType::F64), r32 = run(DType::F32);
      CHECK(max_abs_diff(r32[0], r64[0]) < (log ? 1e-5 : 1e-6));  // log-probabilities reach -60: float's ulp 4e-6
      CHECK(max_abs_diff(r32[1], r64[1]) < 1e-5);
    }
    Tensor t = i64({0, 6, 3, -100, 2, 1}, {6});
    Tensor xs = finite(logits(5)).detach();
    xs = concat({xs, leaf({1, 37}, 36, 8.0).detach()}, 0);  // cross-entropy: every row finite
    for (double ls : {0.0, 0.1}) {
      Tensor a = xs.to(DType::F32).requires_grad_(), b = xs.detach().requires_grad_();
      Tensor la = cross_entropy(a, t, -100, ls);
      la.backward();
      Tensor lb = cross_entropy(b, t, -100, ls);
      lb.backward();
      CHECK(std::abs(la.item() - lb.item()) < 1e-5);
      CHECK(max_abs_diff(a.grad().to(DType::F64), b.grad()) < 1e-6);
    }
    // a NaN in a kept column makes its row NaN; one in a masked (padded) key does not
    std::vector<double> kv = leaf({1, 1, 5, 4}, 33).detach().to_vector<double>();
    kv[3 * 4] = nan;
    Tensor q = leaf({1, 1, 7, 4}, 34).detach(), k = f64(kv, {1, 1, 5, 4}), v = leaf({1, 1, 5, 4}, 35).detach();
    AttentionOptions causal;
    causal.causal = true;
    Tensor pad = i64({0, 0, 0, 1, 0}, {1, 5});
    for (DType dt : {DType::F32, DType::F64}) {
      std::vector<double> o = attention(q.to(dt), k.to(dt), v.to(dt), pad, causal).to_vector<double>();
      for (double e : o) CHECK(std::isfinite(e));
      o = attention(q.to(dt), k.to(dt), v.to(dt), Tensor(), causal).to_vector<double>();
      // 7 queries over 5 keys, causal: query i sees keys j <= i - 2; queries 0, 1 see none (zeros), 2..4 do not
      // reach key 3 (finite), 5 and 6 do (NaN)
      for (int i = 0; i < 7; i++) CHECK_MESSAGE(std::isnan(o[i * 4]) == (i >= 5), "query ", i);
    }
  }

  // ---------------------------------------------------------------- errors

  TEST_CASE("errors name the op and the offending shapes or dtypes") {
    Tensor x = leaf({2, 4}, 1);
    Tensor x32 = Tensor::zeros({2, 4});
    Tensor xi = Tensor::zeros({2, 4}, DType::I64);
    CHECK_THROWS_WITH_ALL(softmax(xi), "softmax", "int64");
    CHECK_THROWS_WITH_ALL(log_softmax(x, 2), "log_softmax", "dim 2");
    CHECK_THROWS_WITH_ALL(layer_norm(x, Tensor::ones({5}, DType::F64), Tensor()), "layer_norm", "gamma", "[4]",
                          "[5]");
    CHECK_THROWS_WITH_ALL(layer_norm(x, Tensor(), Tensor::ones({2, 4}, DType::F64)), "layer_norm", "beta");
    CHECK_THROWS_WITH_ALL(layer_norm(x, Tensor::ones({4}), Tensor()), "layer_norm", "float32", "float64");
    CHECK_THROWS_WITH_ALL(layer_norm(xi, Tensor(), Tensor()), "layer_norm", "int64");
    CHECK_THROWS_WITH_ALL(layer_norm(x, Tensor(), Tensor(), -1), "layer_norm", "eps");
    CHECK_THROWS_WITH_ALL(rms_norm(x, Tensor::ones({3}, DType::F64)), "rms_norm", "weight", "[3]");
    CHECK_THROWS_WITH_ALL(l2_norm(xi), "l2_norm", "int64");

    Tensor w = leaf({5, 3}, 2);
    CHECK_THROWS_WITH_ALL(embedding(w, Tensor::zeros({2})), "embedding", "int64", "float32");
    CHECK_THROWS_WITH_ALL(embedding(w, i64({1, 5}, {2})), "embedding", "5", "out of range");
    CHECK_THROWS_WITH_ALL(embedding(w, i64({-1}, {1})), "embedding", "-1", "out of range");
    {  // a module's table says which it is (a token and a position table look alike)
      Scope s("dec.pos_embed");
      CHECK_THROWS_WITH_ALL(embedding(w, i64({1, 5}, {2})), "dec.pos_embed: embedding", "5", "out of range");
    }
    CHECK_THROWS_WITH_ALL(embedding(leaf({5}, 2), i64({1}, {1})), "embedding", "[5]");
    CHECK_THROWS_WITH_ALL(embedding(w, i64({1}, {1}), 5), "embedding", "padding_idx");

    CHECK_THROWS_WITH_ALL(cross_entropy(x, i64({0, 1, 2}, {3})), "cross_entropy", "[3]", "[2]");
    CHECK_THROWS_WITH_ALL(cross_entropy(x, i64({0, 1}, {2, 1})), "cross_entropy", "[2,1]");
    CHECK_THROWS_WITH_ALL(cross_entropy(x, Tensor::zeros({2})), "cross_entropy", "int64");
    CHECK_THROWS_WITH_ALL(cross_entropy(x, i64({0, 4}, {2})), "cross_entropy", "4", "out of range");
    CHECK_THROWS_WITH_ALL(cross_entropy(x, i64({0, -1}, {2})), "cross_entropy", "-1", "out of range");
    CHECK_THROWS_WITH_ALL(cross_entropy(xi, i64({0, 1}, {2})), "cross_entropy", "int64");
    CHECK_THROWS_WITH_ALL(cross_entropy(x, i64({0, 1}, {2}), -100, 1.5), "cross_entropy", "label_smoothing");

    CHECK_THROWS_WITH_ALL(dropout(x, 1.5), "dropout", "p must be in [0, 1], got 1.5");
    CHECK_THROWS_WITH_ALL(dropout(x, -0.1, false), "dropout", "p must be in [0, 1]");
    {  // p = 1 drops everything (torch): zeros, and a zero gradient
      Tensor xg = Tensor::ones({2, 3}).requires_grad_();
      Tensor y = dropout(xg, 1.0);
      CHECK(y.abs().sum().item() == 0);
      sum(y).backward();
      CHECK(xg.grad().abs().sum().item() == 0);
    }
    CHECK_THROWS_WITH_ALL(dropout(xi, 0.5), "dropout", "int64");

    CHECK_THROWS_WITH_ALL(masked_fill(x, i64({1, 0, 1}, {3}), 0), "masked_fill", "[3]", "[2,4]");
    CHECK_THROWS_WITH_ALL(masked_fill(x, i64({1, 0, 1, 0, 1, 0, 1, 0}, {2, 1, 4}), 0), "masked_fill",
                          "[2,1,4]", "cannot be broadcast to the input");
    CHECK_THROWS_WITH_ALL(where(i64({1, 0}, {2, 1}), x, x32), "where", "float64", "float32");
    CHECK_THROWS_WITH_ALL(where(i64({1, 0, 1}, {3}), x, x), "where", "[3]", "[2,4]");
  }
}
