// The core ops (elementwise, matmul/linear, reductions, views, casts, concat): forward values against
// hand-computed numbers, and float64 finite-difference gradient checks registered for the gradcheck sweep.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backends/threads.h"
#include "test_util.h"

using namespace sgtest;

namespace {
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
constexpr DType F64 = DType::F64;

// N(0,1) values pushed at least `gap` away from 0 (for abs and relu, whose derivative jumps there).
Tensor leaf_away(const Shape& s, uint64_t seed, double gap = 0.2) {
  Generator g(seed);
  std::vector<double> v = Tensor::randn(s, 0, 1, F64, Device::cpu(), &g).to_vector<double>();
  for (double& x : v)
    if (std::abs(x) < gap) x += x < 0 ? -gap : gap;
  return Tensor::from_vector(v, s).requires_grad_();
}
// A non-contiguous [s0, s1] leaf: every other column of a [s0, 2*s1] tensor.
Tensor leaf_sliced(const Shape& s, uint64_t seed = 3) {
  Generator g(seed);
  Tensor t = Tensor::randn({s[0], 2 * s[1]}, 0, 1, F64, Device::cpu(), &g).slice(1, 0, 2 * s[1], 2);
  t.requires_grad_();
  return t;
}
// A non-contiguous 3-D leaf: a permuted view of a contiguous tensor.
Tensor leaf_permuted(const Shape& s, uint64_t seed = 4) {
  Generator g(seed);
  Tensor t = Tensor::randn({s[2], s[0], s[1]}, 0, 1, F64, Device::cpu(), &g).permute({1, 2, 0});
  t.requires_grad_();
  return t;
}
Tensor f64(std::vector<double> v, const Shape& s) { return Tensor::from_vector<double>(std::move(v), s); }

// A float64 tensor of logical shape `s` stored in a random dim order, sometimes with a gap (sliced).
Tensor random_layout(const Shape& s, std::mt19937& rng) {
  const int64_t r = (int64_t)s.size();
  Shape perm(r), inv(r), stored(r);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t i = 0; i < r; i++) stored[i] = s[perm[i]], inv[perm[i]] = i;
  const int64_t pad = (int64_t)(rng() % (r + 1));  // == r: no gap
  Shape padded = stored;
  if (pad < r) padded[pad] += 2;
  Generator g(rng());
  Tensor base = Tensor::randn(padded, 0, 1, F64, Device::cpu(), &g);
  if (pad < r) base = base.slice(pad, 1, 1 + stored[pad]);
  return base.permute(inv);
}

Fn unary(Tensor (*fn)(const Tensor&)) {
  return [fn](const std::vector<Tensor>& x) { return fn(x[0]); };
}
}  // namespace

// ---------------------------------------------------------------- elementwise

REGISTER_GRAD_CASES {
  auto A = [](const std::vector<Tensor>& x) { return x[0] + x[1]; };
  auto S = [](const std::vector<Tensor>& x) { return x[0] - x[1]; };
  auto M = [](const std::vector<Tensor>& x) { return x[0] * x[1]; };
  auto D = [](const std::vector<Tensor>& x) { return x[0] / x[1]; };
  auto Max = [](const std::vector<Tensor>& x) { return maximum(x[0], x[1]); };
  auto Min = [](const std::vector<Tensor>& x) { return minimum(x[0], x[1]); };
  return std::vector<GradCase>{
      gc("add", "same shape", A, {leaf({2, 3}, 1), leaf({2, 3}, 2)}),
      gc("add", "broadcast [3,1,4] + [2,4]", A, {leaf({3, 1, 4}, 1), leaf({2, 4}, 2)}),
      gc("add", "transposed + sliced", A, {leaf_transposed({3, 4}), leaf_sliced({3, 4})}),
      gc("add", "0-d + [2,3]", A, {leaf({}, 1), leaf({2, 3}, 2)}),
      gc("add", "second input needs no grad", A, {leaf({2, 3}, 1), constant({3})}),
      gc("sub", "broadcast [3,1,4] - [2,4]", S, {leaf({3, 1, 4}, 1), leaf({2, 4}, 2)}),
      gc("sub", "transposed - [4]", S, {leaf_transposed({3, 4}), leaf({4}, 2)}),
      gc("mul", "broadcast [3,1,4] * [2,4]", M, {leaf({3, 1, 4}, 1), leaf({2, 4}, 2)}),
      gc("mul", "permuted * [1,4]", M, {leaf_permuted({2, 3, 4}), leaf({1, 4}, 2)}),
      gc("mul", "x * x", [](const std::vector<Tensor>& x) { return x[0] * x[0]; }, {leaf({2, 3}, 5)}),
      gc("div", "broadcast [3,1,4] / [2,4]", D, {leaf({3, 1, 4}, 1), leaf_uniform({2, 4}, 0.5, 2, 2)}),
      gc("div", "sliced / negative", D, {leaf_sliced({2, 3}), leaf_uniform({2, 3}, -2, -0.5, 3)}),
      gc("maximum", "broadcast [3,1,4], [2,4]", Max, {leaf({3, 1, 4}, 1), leaf({2, 4}, 2)}),
      gc("maximum", "transposed, sliced", Max, {leaf_transposed({3, 4}), leaf_sliced({3, 4})}),
      gc("minimum", "broadcast [3,1,4], [2,4]", Min, {leaf({3, 1, 4}, 1), leaf({2, 4}, 2)}),
      gc("minimum", "transposed, sliced", Min, {leaf_transposed({3, 4}), leaf_sliced({3, 4})}),
  };
}

REGISTER_GRAD_CASES {
  return std::vector<GradCase>{
      gc("neg", "transposed", unary(neg), {leaf_transposed({3, 4})}),
      gc("add_scalar", "x + 2.5", [](const std::vector<Tensor>& x) { return x[0] + 2.5; }, {leaf({2, 3})}),
      gc("add_scalar", "1 + x - 3 (sliced)", [](const std::vector<Tensor>& x) { return 1.0 + x[0] - 3.0; },
         {leaf_sliced({2, 3})}),
      gc("mul_scalar", "x * -1.5", [](const std::vector<Tensor>& x) { return x[0] * -1.5; }, {leaf({2, 3})}),
      gc("mul_scalar", "2 * x / 4", [](const std::vector<Tensor>& x) { return 2.0 * x[0] / 4.0; },
         {leaf_transposed({3, 2})}),
      gc("rsub_scalar", "3 - x", [](const std::vector<Tensor>& x) { return 3.0 - x[0]; }, {leaf({2, 3})}),
      gc("exp", "[2,3]", unary(exp), {leaf({2, 3})}),
      gc("exp", "permuted", unary(exp), {leaf_permuted({2, 3, 2})}),
      gc("log", "positive", unary(log), {leaf_uniform({2, 3}, 0.5, 2)}),
      gc("sqrt", "positive", unary(sqrt), {leaf_uniform({2, 3}, 0.5, 2)}),
      gc("rsqrt", "positive", unary(rsqrt), {leaf_uniform({2, 3}, 0.5, 2)}),
      gc("reciprocal", "away from 0", unary(reciprocal), {leaf_away({2, 3}, 6, 0.4)}),
      gc("pow", "x^3", [](const std::vector<Tensor>& x) { return pow(x[0], 3); }, {leaf({2, 3})}),
      gc("pow", "x^2.5, positive", [](const std::vector<Tensor>& x) { return pow(x[0], 2.5); },
         {leaf_uniform({2, 3}, 0.5, 2)}),
      gc("pow", "x^-1.5, positive, transposed",
         [](const std::vector<Tensor>& x) { return x[0].pow(-1.5); },
         {[] { Tensor t = Tensor::rand({3, 2}, 0.5, 2, F64).t(); return t.requires_grad_(); }()}),
      gc("abs", "away from 0", unary(abs), {leaf_away({3, 4}, 7)}),
      gc("tanh", "[2,3]", unary(tanh), {leaf({2, 3})}),
      gc("sigmoid", "[2,3] x3", [](const std::vector<Tensor>& x) { return sigmoid(x[0] * 3.0); }, {leaf({2, 3})}),
      gc("relu", "away from 0", unary(relu), {leaf_away({3, 4}, 8)}),
      gc("gelu_tanh", "[3,4]", [](const std::vector<Tensor>& x) { return gelu(x[0], GeluApprox::Tanh); },
         {leaf({3, 4}, 1, 2.0)}),
      gc("gelu_erf", "[3,4]", [](const std::vector<Tensor>& x) { return gelu(x[0], GeluApprox::Erf); },
         {leaf({3, 4}, 1, 2.0)}),
      gc("gelu_erf", "sliced", [](const std::vector<Tensor>& x) { return gelu(x[0]); }, {leaf_sliced({3, 2})}),
      gc("silu", "[3,4]", unary(silu), {leaf({3, 4}, 1, 2.0)}),
      gc("silu", "transposed", unary(silu), {leaf_transposed({2, 3})}),
  };
}

// ---------------------------------------------------------------- matmul and linear

REGISTER_GRAD_CASES {
  auto MM = [](bool ta, bool tb) {
    return [ta, tb](const std::vector<Tensor>& x) { return matmul(x[0], x[1], ta, tb); };
  };
  auto Lin = [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor()); };
  return std::vector<GradCase>{
      gc("matmul", "[3,4] @ [4,5]", MM(false, false), {leaf({3, 4}, 1), leaf({4, 5}, 2)}),
      gc("matmul", "trans_a", MM(true, false), {leaf({4, 3}, 1), leaf({4, 5}, 2)}),
      gc("matmul", "trans_b", MM(false, true), {leaf({3, 4}, 1), leaf({5, 4}, 2)}),
      gc("matmul", "trans_a trans_b", MM(true, true), {leaf({4, 3}, 1), leaf({5, 4}, 2)}),
      gc("matmul", "transposed @ sliced", MM(false, false), {leaf_transposed({3, 4}), leaf_sliced({4, 5})}),
      gc("matmul", "batch [2,1,3,4] @ [3,4,5]", MM(false, false), {leaf({2, 1, 3, 4}, 1), leaf({3, 4, 5}, 2)}),
      gc("matmul", "[2,3,4] @ [4,5]", MM(false, false), {leaf({2, 3, 4}, 1), leaf({4, 5}, 2)}),
      gc("matmul", "[3,4] @ [2,4,5]", MM(false, false), {leaf({3, 4}, 1), leaf({2, 4, 5}, 2)}),
      gc("matmul", "batch trans [2,4,3]^T @ [1,5,4]^T", MM(true, true), {leaf({2, 4, 3}, 1), leaf({1, 5, 4}, 2)}),
      gc("matmul", "permuted batch @ trans_b", MM(false, true), {leaf_permuted({2, 3, 4}), leaf({2, 5, 4}, 2)}),
      gc("matmul", "1-D @ 2-D", MM(false, false), {leaf({4}, 1), leaf({4, 5}, 2)}),
      gc("matmul", "2-D @ 1-D", MM(false, false), {leaf({3, 4}, 1), leaf({4}, 2)}),
      gc("matmul", "1-D @ 1-D", MM(false, false), {leaf({4}, 1), leaf({4}, 2)}),
      gc("matmul", "1-D @ 3-D", MM(false, false), {leaf({4}, 1), leaf({2, 4, 5}, 2)}),
      gc("matmul", "A @ A^T (same tensor)", [](const std::vector<Tensor>& x) { return matmul(x[0], x[0], false, true); },
         {leaf({3, 4}, 1)}),
      gc("linear", "3-D input with bias", Lin, {leaf({2, 3, 4}, 1), leaf({5, 4}, 2), leaf({5}, 3)}),
      gc("linear", "3-D input without bias", Lin, {leaf({2, 3, 4}, 1), leaf({5, 4}, 2)}),
      gc("linear", "permuted input, transposed weight", Lin,
         {leaf_permuted({2, 3, 4}), leaf_transposed({5, 4}), leaf({5}, 3)}),
      gc("linear", "1-D input", Lin, {leaf({4}, 1), leaf({3, 4}, 2), leaf({3}, 3)}),
      gc("linear", "weight only needs grad", Lin, {constant({3, 4}), leaf({2, 4}, 2), constant({2})}),
  };
}

// ---------------------------------------------------------------- reductions

REGISTER_GRAD_CASES {
  auto R = [](Tensor (*fn)(const Tensor&, const Shape&, bool), Shape dims, bool keep) {
    return [fn, dims, keep](const std::vector<Tensor>& x) { return fn(x[0], dims, keep); };
  };
  Tensor (*S)(const Tensor&, const Shape&, bool) = sum;
  Tensor (*M)(const Tensor&, const Shape&, bool) = mean;
  Tensor (*X)(const Tensor&, const Shape&, bool) = max;
  Tensor (*N)(const Tensor&, const Shape&, bool) = min;
  return std::vector<GradCase>{
      gc("sum", "all", [](const std::vector<Tensor>& x) { return sum(x[0]); }, {leaf({2, 3, 4})}),
      gc("sum", "dims {0,2}", R(S, {0, 2}, false), {leaf({2, 3, 4})}),
      gc("sum", "dims {0,2} keepdim", R(S, {0, 2}, true), {leaf({2, 3, 4})}),
      gc("sum", "dim -1 keepdim, permuted", R(S, {-1}, true), {leaf_permuted({2, 3, 4})}),
      gc("mean", "all", [](const std::vector<Tensor>& x) { return mean(x[0]); }, {leaf({2, 3, 4})}),
      gc("mean", "dims {1,2}", R(M, {1, 2}, false), {leaf({2, 3, 4})}),
      gc("mean", "dims {0} keepdim, transposed", R(M, {0}, true), {leaf_transposed({3, 4})}),
      gc("max", "dim 1", R(X, {1}, false), {leaf({2, 3, 4})}),
      gc("max", "dims {0,2} keepdim", R(X, {0, 2}, true), {leaf({2, 3, 4})}),
      gc("max", "all, sliced", R(X, {}, false), {leaf_sliced({3, 4})}),
      gc("max", "ties share the gradient", R(X, {1}, false),
         {f64({1, 3, 3, 2, 5, 0, 5, 1}, {2, 4}).requires_grad_()}),
      gc("min", "dim 1", R(N, {1}, false), {leaf({2, 3, 4})}),
      gc("min", "dims {0,1} keepdim, transposed", R(N, {0, 1}, true), {leaf_transposed({3, 4})}),
      gc("min", "ties share the gradient", R(N, {1}, false),
         {f64({1, 0, 3, 0, 5, 0, 5, 7}, {2, 4}).requires_grad_()}),
      gc("cumsum", "dim 1", [](const std::vector<Tensor>& x) { return cumsum(x[0], 1); }, {leaf({2, 3, 4})}),
      gc("cumsum", "dim -1, transposed", [](const std::vector<Tensor>& x) { return cumsum(x[0], -1); },
         {leaf_transposed({3, 4})}),
  };
}

// ---------------------------------------------------------------- views, copies, casts, concat

REGISTER_GRAD_CASES {
  auto V = [](std::function<Tensor(const Tensor&)> f) {
    return [f](const std::vector<Tensor>& x) { return f(x[0]); };
  };
  return std::vector<GradCase>{
      gc("reshape", "[2,3,4] -> [4,-1]", V([](const Tensor& x) { return x.reshape({4, -1}); }), {leaf({2, 3, 4})}),
      gc("reshape", "transposed -> [12] (copy)", V([](const Tensor& x) { return x.reshape({12}); }),
         {leaf_transposed({3, 4})}),
      gc("reshape", "unsqueeze, flatten, squeeze",
         V([](const Tensor& x) { return x.unsqueeze(1).flatten(0, 1).squeeze() * x.reshape({3, 4}); }),
         {leaf({3, 4})}),
      gc("transpose", "dims 0,2", V([](const Tensor& x) { return x.transpose(0, 2); }), {leaf({2, 3, 4})}),
      gc("transpose", "t() of sliced", V([](const Tensor& x) { return x.t() * 2.0; }), {leaf_sliced({3, 4})}),
      gc("permute", "{2,0,1}", V([](const Tensor& x) { return x.permute({2, 0, 1}); }), {leaf({2, 3, 4})}),
      gc("permute", "4-D {3,1,0,2}", V([](const Tensor& x) { return x.permute({3, 1, 0, 2}); }),
         {leaf({2, 3, 2, 2})}),
      gc("slice", "dim 0 step 2", V([](const Tensor& x) { return x.slice(0, 1, 5, 2); }), {leaf({5, 4})}),
      gc("slice", "dim 1 negative start", V([](const Tensor& x) { return x.slice(1, -3, 4); }), {leaf({2, 4})}),
      gc("slice", "narrow, select, of transposed",
         V([](const Tensor& x) { return x.narrow(1, 1, 2) * x.select(1, 0).unsqueeze(1); }),
         {leaf_transposed({3, 4})}),
      gc("slice", "split and chunk", V([](const Tensor& x) {
           auto p = split(x, 2, 1);
           auto c = chunk(x, 2, 0);
           return concat({concat({p[0] * p[1], p[2]}, 1), concat({c[1], c[0]}, 0)}, 1);
         }),
         {leaf({4, 5})}),
      gc("expand", "[3,1] -> [2,3,4]", V([](const Tensor& x) { return x.expand({2, 3, 4}); }), {leaf({3, 1})}),
      gc("expand", "[4] -> [3,-1]", V([](const Tensor& x) { return x.expand({3, -1}); }), {leaf({4})}),
      gc("contiguous", "of transposed", V([](const Tensor& x) { return x.contiguous(); }),
         {leaf_transposed({3, 4})}),
      gc("contiguous", "of expanded", V([](const Tensor& x) { return x.expand({3, 4}).contiguous(); }),
         {leaf({3, 1})}),
      // float32 keeps ~7 digits: scale so that the finite-difference step is exact at float32 precision
      gc("to_dtype", "float64 -> float32 -> float64",
         V([](const Tensor& x) { return (x * 1e6).to(DType::F32).to(DType::F64) * 1e-6; }),
         {leaf({2, 3}, 1, 1e-4)}),
      gc("concat", "dim 1, three inputs, one transposed",
         [](const std::vector<Tensor>& x) { return concat({x[0], x[1], x[2]}, 1); },
         {leaf({3, 2}, 1), leaf_transposed({3, 4}), leaf({3, 1}, 3)}),
      gc("concat", "dim 0 with an input needing no grad",
         [](const std::vector<Tensor>& x) { return concat({x[0], x[1]}, -2); },
         {leaf({2, 3}, 1), constant({1, 3})}),
      gc("concat", "stack", [](const std::vector<Tensor>& x) { return stack({x[0], x[1]}, 1); },
         {leaf({2, 3}, 1), leaf_sliced({2, 3})}),
  };
}

TEST_SUITE("ops") {
  TEST_CASE("binary ops with broadcasting: hand-computed values") {
    Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor b = Tensor::from_vector<float>({10, 20, 30}, {3});
    Tensor c = Tensor::from_vector<float>({2, 4}, {2, 1});
    check_close(a + b, {11, 22, 33, 14, 25, 36});
    check_close(a - c, {-1, 0, 1, 0, 1, 2});
    check_close(a * c, {2, 4, 6, 16, 20, 24});
    check_close(b / c, {5, 10, 15, 2.5, 5, 7.5});
    check_close(maximum(a, Tensor::from_vector<float>({3}, {1})), {3, 3, 3, 4, 5, 6});
    check_close(minimum(a, Tensor::from_vector<float>({3}, {1})), {1, 2, 3, 3, 3, 3});
    check_close(-a, {-1, -2, -3, -4, -5, -6});
    check_close(a + 1.5, {2.5, 3.5, 4.5, 5.5, 6.5, 7.5});
    check_close(a - 1.0, {0, 1, 2, 3, 4, 5});
    check_close(10.0 - a, {9, 8, 7, 6, 5, 4});
    check_close(a * 0.5, {0.5, 1, 1.5, 2, 2.5, 3});
    check_close(a / 4.0, {0.25, 0.5, 0.75, 1, 1.25, 1.5});
    check_close(eq(a, Tensor::from_vector<float>({2}, {1})), {0, 1, 0, 0, 0, 0});
    check_close(gt(a, c), {0, 0, 1, 0, 1, 1});
    check_close(lt(a, c), {1, 0, 0, 0, 0, 0});
    check_close(ge(a, c), {0, 1, 1, 1, 1, 1});
    check_close(le(a, c), {1, 1, 0, 1, 0, 0});
    check_close(a.min({0}), {1, 2, 3});
    check_close(min(a, {1}, true), {1, 4});
    // argmax: the first of equal values, a NaN's index if there is one (torch.argmax); int64, any float dtype
    Tensor m = Tensor::from_vector<float>({1, 5, 5, 2, 0, 9}, {2, 3});
    CHECK(argmax(m, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    CHECK(argmax(m, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 1});
    CHECK(m.argmax(-1, true).shape() == Shape{2, 1});
    CHECK(argmax(m.transpose(0, 1), 0).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    CHECK(argmax(m.to(DType::BF16), 1).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
    CHECK(argmax(Tensor::from_vector<double>({1, NAN, 3, NAN}, {4}), 0).item() == 1);
    CHECK(argmax(Tensor::from_vector<int64_t>({3, 7, 7}, {3}), 0).item() == 1);
    CHECK_THROWS_WITH_ALL(argmax(Tensor::zeros({2, 0}), 1), "argmax", "empty", "[2,0]");
    // a 0-d tensor is a line of one along dim 0 or -1, as torch: argmax 0, softmax 1, log_softmax 0
    CHECK(argmax(Tensor::scalar(1.0), 0).shape() == Shape{});
    CHECK(argmax(Tensor::scalar(1.0), -1).item() == 0);
    CHECK_THROWS_WITH_ALL(argmax(Tensor::scalar(1.0), 1), "argmax", "dim 1 out of range for float32[]", "0 or -1");
    Tensor s0 = Tensor::scalar(2.5, F64).requires_grad_();
    Tensor p0 = softmax(s0, 0);
    CHECK(p0.shape() == Shape{});
    CHECK(p0.item() == 1.0);
    CHECK(log_softmax(s0, -1).item() == 0.0);
    p0.backward();
    CHECK(s0.grad().item() == 0.0);  // d softmax / dx = y (1 - y) = 0
    CHECK_THROWS_WITH_ALL(softmax(s0, 2), "softmax", "dim 2 out of range", "0 or -1");
    // [3,1,4] op [2,4] -> [3,2,4]
    Tensor x = Tensor::arange(0, 12, 1, F64).reshape({3, 1, 4});
    Tensor y = Tensor::arange(0, 8, 1, F64).reshape({2, 4}) * 100.0;
    Tensor z = x + y;
    CHECK(z.shape() == Shape{3, 2, 4});
    CHECK(z.to_vector<double>()[(2 * 2 + 1) * 4 + 3] == 11 + 700);
    // non-contiguous operands
    check_close(a.t() * a.t(), {1, 16, 4, 25, 9, 36});
    // integer tensors add too (no gradient)
    Tensor i = Tensor::from_vector<int64_t>({1, 2}, {2});
    CHECK((i + i).to_vector<int64_t>() == std::vector<int64_t>{2, 4});
  }

  TEST_CASE("unary ops: hand-computed values") {
    Tensor x = Tensor::from_vector<double>({-1, 0.5, 2}, {3});
    check_close(exp(x), {std::exp(-1.0), std::exp(0.5), std::exp(2.0)}, 1e-12);
    check_close(abs(x), {1, 0.5, 2});
    check_close(relu(x), {0, 0.5, 2});
    check_close(tanh(x), {std::tanh(-1.0), std::tanh(0.5), std::tanh(2.0)}, 1e-12);
    check_close(sigmoid(x), {1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-0.5)), 1 / (1 + std::exp(-2.0))}, 1e-12);
    check_close(pow(x, 2), {1, 0.25, 4});
    check_close(pow(x, 3), {-1, 0.125, 8});
    check_close(reciprocal(x), {-1, 2, 0.5});
    Tensor p = Tensor::from_vector<double>({0.25, 4}, {2});
    check_close(log(p), {std::log(0.25), std::log(4.0)}, 1e-12);
    check_close(sqrt(p), {0.5, 2});
    check_close(rsqrt(p), {2, 0.5});
    // GELU and SiLU at 1 and -1 (reference values from PyTorch)
    Tensor o = Tensor::from_vector<double>({1, -1}, {2});
    check_close(gelu(o, GeluApprox::Erf), {0.8413447460685429, -0.15865525393145707}, 1e-12);
    check_close(gelu(o, GeluApprox::Tanh), {0.8411919906082768, -0.15880800939172324}, 1e-12);
    check_close(silu(o), {0.7310585786300049, -0.2689414213699951}, 1e-12);
    // float32 paths agree
    check_close(gelu(o.to(DType::F32)), {0.8413447460685429, -0.15865525393145707}, 1e-6);
    check_close(sigmoid(Tensor::from_vector<float>({0}, {1})), {0.5});
  }

  TEST_CASE("unary ops on large strided inputs (parallel path)") {
    Tensor x = Tensor::randn({300, 400}).t();  // 120000 elements, non-contiguous
    Tensor y = exp(x) * 2.0;
    auto xv = x.to_vector<float>(), yv = y.to_vector<float>();
    double err = 0;
    for (size_t i = 0; i < xv.size(); i++) err = std::max(err, (double)std::abs(yv[i] - 2 * std::exp(xv[i])) /
                                                                   (2 * std::exp(xv[i])));
    CHECK(err < 1e-6);
    Tensor s = sum(x, {0});
    auto sv = s.to_vector<float>();
    double total = 0;
    for (int64_t r = 0; r < 300; r++) total += sv[r];
    CHECK(total == doctest::Approx(sum(x).item()).epsilon(1e-4));
  }

  TEST_CASE("matmul: 2-D, transposes, batched with broadcast, 1-D") {
    Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor b = Tensor::from_vector<float>({1, 0, 0, 1, 1, 1}, {3, 2});
    check_close(matmul(a, b), {4, 5, 10, 11});
    check_close(matmul(a.t(), a.t(), true, false), {14, 32, 32, 77});  // a a^T
    check_close(matmul(a, a, false, true), {14, 32, 32, 77});
    check_close(matmul(a, a, true, false), {17, 22, 27, 22, 29, 36, 27, 36, 45});  // a^T a
    check_close(matmul(b.t().contiguous(), a, false, true), {4, 10, 5, 11});  // (a b)^T = b^T a^T
    check_close(matmul(b, a, true, true), {4, 10, 5, 11});
    // batched: [2,2,3] @ [3,2] (rhs broadcast over the batch)
    Tensor ab = stack({a, a * 2.0}, 0);
    Tensor r = matmul(ab, b);
    CHECK(r.shape() == Shape{2, 2, 2});
    check_close(r, {4, 5, 10, 11, 8, 10, 20, 22});
    // [2,1,2,3] @ [3,3,2] -> [2,3,2,2]
    Tensor bb = stack({b, b * 0.0, b * -1.0}, 0);
    Tensor r4 = matmul(ab.unsqueeze(1), bb);
    CHECK(r4.shape() == Shape{2, 3, 2, 2});
    check_close(r4.select(0, 1).select(0, 2), {-8, -10, -20, -22});
    // 1-D
    Tensor v = Tensor::from_vector<float>({1, -1, 2}, {3});
    Tensor av = matmul(a, v);
    CHECK(av.shape() == Shape{2});
    check_close(av, {5, 11});
    Tensor va = matmul(Tensor::from_vector<float>({1, 2}, {2}), a);
    CHECK(va.shape() == Shape{3});
    check_close(va, {9, 12, 15});
    Tensor vv = matmul(v, v);
    CHECK(vv.dim() == 0);
    CHECK(vv.item() == 6);
    // k = 0 gives zeros
    check_close(matmul(Tensor::ones({2, 0}), Tensor::ones({0, 3})), {0, 0, 0, 0, 0, 0});
    // float64 and a larger product against a loop
    Tensor x = Tensor::randn({17, 33}, 0, 1, F64), y = Tensor::randn({33, 9}, 0, 1, F64);
    auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
    std::vector<double> ref(17 * 9, 0.0);
    for (int i = 0; i < 17; i++)
      for (int j = 0; j < 9; j++)
        for (int k = 0; k < 33; k++) ref[i * 9 + j] += xv[i * 33 + k] * yv[k * 9 + j];
    check_close(matmul(x, y), ref, 1e-12);
    check_close(matmul(x.t().contiguous(), y, true), ref, 1e-12);
  }

  TEST_CASE("matmul on random layouts, batch broadcasts and transposes matches a loop") {
    std::mt19937 rng(11);
    const std::vector<Shape> batches = {{}, {3}, {2, 3}, {2, 1}, {1, 3}, {1}};
    for (int trial = 0; trial < 150; trial++) {
      const int64_t n = 1 + rng() % 4, k = 1 + rng() % 4, m = 1 + rng() % 4;
      Shape ba = batches[rng() % batches.size()], bb = batches[rng() % batches.size()];
      const bool ta = rng() % 2, tb = rng() % 2;
      Shape sa = ba, sb = bb;  // logical op(A) [.., n, k] and op(B) [.., k, m]
      sa.insert(sa.end(), {n, k});
      sb.insert(sb.end(), {k, m});
      Tensor A = random_layout(sa, rng), B = random_layout(sb, rng);
      CAPTURE(shape_str(sa));
      CAPTURE(shape_str(sb));
      CAPTURE(ta);
      CAPTURE(tb);
      Tensor out = matmul(ta ? A.transpose(-1, -2) : A, tb ? B.transpose(-1, -2) : B, ta, tb);
      // reference: pad batch shapes to rank 2, broadcast size-1 dims
      auto pad2 = [](Shape s) { while (s.size() < 2) s.insert(s.begin(), 1); return s; };
      Shape pa = pad2(ba), pb = pad2(bb), po = {std::max(pa[0], pb[0]), std::max(pa[1], pb[1])};
      std::vector<double> av = A.to_vector<double>(), bv = B.to_vector<double>(), ref;
      for (int64_t o0 = 0; o0 < po[0]; o0++)
        for (int64_t o1 = 0; o1 < po[1]; o1++) {
          int64_t ia = ((pa[0] == 1 ? 0 : o0) * pa[1] + (pa[1] == 1 ? 0 : o1)) * n * k;
          int64_t ib = ((pb[0] == 1 ? 0 : o0) * pb[1] + (pb[1] == 1 ? 0 : o1)) * k * m;
          for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++) {
              double acc = 0;
              for (int64_t q = 0; q < k; q++) acc += av[ia + i * k + q] * bv[ib + q * m + j];
              ref.push_back(acc);
            }
        }
      Shape expect_shape = ba.size() >= bb.size() ? ba : bb;
      for (size_t d = 0; d < std::min(ba.size(), bb.size()); d++) {
        size_t ea = ba.size() - 1 - d, eb = bb.size() - 1 - d, ee = expect_shape.size() - 1 - d;
        expect_shape[ee] = std::max(ba[ea], bb[eb]);
      }
      expect_shape.insert(expect_shape.end(), {n, m});
      CHECK(out.shape() == expect_shape);
      check_close(out, ref, 1e-12);
    }
  }

  TEST_CASE("linear with and without bias, on 3-D input") {
    Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor w = Tensor::from_vector<float>({1, 0, 1, 0, 1, 0}, {2, 3});
    Tensor b = Tensor::from_vector<float>({10, 20}, {2});
    check_close(linear(x, w, b), {14, 22, 20, 25});
    check_close(linear(x, w), {4, 2, 10, 5});
    Tensor x3 = stack({x, x * 2.0}, 0);  // [2,2,3]
    Tensor y3 = linear(x3, w, b);
    CHECK(y3.shape() == Shape{2, 2, 2});
    check_close(y3, {14, 22, 20, 25, 18, 24, 30, 30});
    check_close(linear(x3.transpose(0, 1), w), {4, 2, 8, 4, 10, 5, 20, 10});
    check_close(linear(x, w.t().contiguous().t()), {4, 2, 10, 5});  // a transposed view of a weight
    check_close(linear(Tensor::from_vector<float>({1, 1, 1}, {3}), w, b), {12, 21});
    Tensor empty_in = linear(Tensor::ones({2, 0}), Tensor::ones({3, 0}), Tensor::ones({3}));
    check_close(empty_in, {1, 1, 1, 1, 1, 1});
  }

  TEST_CASE("reductions: hand-computed values") {
    Tensor x = Tensor::arange(0, 24, 1, F64).reshape({2, 3, 4});
    CHECK(sum(x).item() == 276);
    CHECK(mean(x).item() == 11.5);
    Tensor s02 = sum(x, {0, 2});
    CHECK(s02.shape() == Shape{3});
    check_close(s02, {0 + 1 + 2 + 3 + 12 + 13 + 14 + 15, 4 + 5 + 6 + 7 + 16 + 17 + 18 + 19,
                      8 + 9 + 10 + 11 + 20 + 21 + 22 + 23});
    Tensor k = sum(x, {0, 2}, true);
    CHECK(k.shape() == Shape{1, 3, 1});
    check_close(mean(x, {-1}), {1.5, 5.5, 9.5, 13.5, 17.5, 21.5});
    check_close(max(x, {1}), {8, 9, 10, 11, 20, 21, 22, 23});
    CHECK(max(x, {1}, true).shape() == Shape{2, 1, 4});
    check_close(max(x * -1.0, {0, 2}), {-0, -4, -8});
    CHECK(max(x, {}).item() == 23);
    check_close(sum(x.transpose(0, 2), {2}), {12, 20, 28, 14, 22, 30, 16, 24, 32, 18, 26, 34});
    CHECK(x.sum({0}).shape() == Shape{3, 4});
    CHECK(x.mean({0, 1, 2}).item() == 11.5);
    CHECK(sum(Tensor::zeros({0, 3})).item() == 0);
    check_close(sum(Tensor::zeros({0, 3}), {0}), {0, 0, 0});
    CHECK(sum(Tensor::scalar(4)).item() == 4);
    check_close(sum_to(Tensor::ones({2, 3, 4}), {3, 1}), {8, 8, 8});
    // the tied maxima share the gradient equally
    Tensor t = Tensor::from_vector<double>({1, 3, 3, 2}, {4}).requires_grad_();
    max(t, {0}).backward();
    check_close(t.grad(), {0, 0.5, 0.5, 0});
  }

  TEST_CASE("cumsum: prefix sums along a dim, floats and integers, forward and backward by hand") {
    Tensor x = Tensor::arange(0, 6, 1, F64).reshape({2, 3});
    check_close(cumsum(x, 1), {0, 1, 3, 3, 7, 12});
    check_close(cumsum(x, 0), {0, 1, 2, 3, 5, 7});
    check_close(cumsum(x.transpose(0, 1), -1), {0, 3, 1, 5, 2, 7});  // a strided input is read in its own order
    Tensor ids = Tensor::from_vector<int64_t>({5, 0, 7, 7, 0, 0}, {2, 3});
    Tensor c = cumsum(ids, 1);
    CHECK(c.dtype() == DType::I64);
    CHECK(c.to_vector<int64_t>() == std::vector<int64_t>{5, 5, 12, 7, 7, 7});
    CHECK(cumsum(Tensor::zeros({0, 3}), 0).shape() == Shape{0, 3});
    // y = cumsum(x): dL/dx_j = sum_{i >= j} dL/dy_i
    Tensor t = Tensor::from_vector<double>({1, 2, 3, 4}, {4}).requires_grad_();
    (cumsum(t, 0) * Tensor::from_vector<double>({1, 10, 100, 1000}, {4})).sum().backward();
    check_close(t.grad(), {1111, 1110, 1100, 1000});
    CHECK_THROWS_WITH_AS(cumsum(x, 2), doctest::Contains("cumsum"), Error);
    Tensor c0 = Tensor::scalar(3.0, F64).requires_grad_();  // 0-d: itself, gradient 1 (torch.cumsum)
    Tensor cs = cumsum(c0, 0);
    CHECK(cs.shape() == Shape{});
    CHECK(cs.item() == 3.0);
    cs.backward();
    CHECK(c0.grad().item() == 1.0);
    CHECK_THROWS_WITH_ALL(cumsum(Tensor::scalar(1), 1), "cumsum", "dim 1 out of range", "0 or -1");
  }

  TEST_CASE("reductions: the contiguous block paths against a naive float64 loop, 1 and 2 threads alike") {
    // Sizes past the 8 summing lanes and the 256-column tile of backends/cpu/cpu_reduce.cpp, with tails, and
    // large enough for the parallel path: [O, R, K] blocks with K = 1 (rows), O = 1 (columns) and both.
    Tensor x = Tensor::randn({3, 701, 300});
    const auto xv = x.to_vector<float>();
    auto naive = [&](int64_t O, int64_t R, int64_t K, bool squares) {
      std::vector<double> out(O * K, 0.0);
      for (int64_t o = 0; o < O; o++)
        for (int64_t r = 0; r < R; r++)
          for (int64_t k = 0; k < K; k++) {
            const double v = xv[(o * R + r) * K + k];
            out[o * K + k] += squares ? v * v : v;
          }
      return out;
    };
    auto close = [](const Tensor& got, const std::vector<double>& want) {
      auto g = got.to_vector<float>();
      REQUIRE(g.size() == want.size());
      double worst = 0;
      for (size_t i = 0; i < g.size(); i++) worst = std::max(worst, std::abs(g[i] - want[i]) / (1 + std::abs(want[i])));
      CHECK(worst < 1e-6);
    };
    const int before = get_num_threads();
    std::vector<std::vector<float>> by_threads;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Tensor rows = sum(x, {2}), cols = sum(x, {0, 1}), mid = sum(x, {1}), all = sum(x);
      close(rows, naive(3 * 701, 300, 1, false));
      close(cols, naive(1, 3 * 701, 300, false));
      close(mid, naive(3, 701, 300, false));
      close(all.reshape({1}), naive(1, 3 * 701 * 300, 1, false));
      std::vector<float> flat;
      for (const Tensor& t : {rows, cols, mid, all, mean(x, {1}), max(x, {0, 1}), max(x, {2})}) {
        auto v = t.to_vector<float>();
        flat.insert(flat.end(), v.begin(), v.end());
      }
      by_threads.push_back(flat);
    }
    set_num_threads(before);
    CHECK(by_threads[0] == by_threads[1]);  // bitwise: the summation order depends on the shape only
    // Max/min propagate NaN on the block path as on the strided one.
    Tensor n = Tensor::randn({4, 1000});
    n.data<float>()[2 * 1000 + 517] = NAN;
    auto mx = max(n, {1}).to_vector<float>(), mc = max(n, {0}).to_vector<float>();
    CHECK(std::isnan(mx[2]));
    CHECK(!std::isnan(mx[0]));
    CHECK(std::isnan(mc[517]));
    CHECK(!std::isnan(mc[516]));
  }

  TEST_CASE("relu backward: gy where x > 0, else 0 (also for a non-finite gy), contiguous and strided") {
    Tensor x = Tensor::from_vector<float>({-1, 0, 2, 3, -0.5f, 4}, {2, 3}).requires_grad_();
    Tensor y = relu(x);
    y.backward(Tensor::from_vector<float>({INFINITY, NAN, 5, 6, 7, 8}, {2, 3}));
    check_close(x.grad(), {0, 0, 5, 6, 0, 8});
    Tensor xt = Tensor::from_vector<float>({-1, 0, 2, 3, -0.5f, 4}, {2, 3}).requires_grad_();
    relu(xt.t()).sum().backward();
    check_close(xt.grad(), {0, 0, 1, 1, 0, 1});
    // it keeps its output (the sign is all the derivative needs): the input, e.g. an FFN's pre-activation, is
    // not held by the tape; a NaN input passes its gradient on (relu(NaN) = NaN, PyTorch's threshold_backward), -0
    // gives 0
    Tensor z = Tensor::from_vector<float>({NAN, -0.0f, 1e-30f, -1e-30f}, {4}).requires_grad_();
    Tensor pre = z * 1.0f;
    Tensor out = relu(pre);
    REQUIRE(current_tape().nodes().back()->saved.size() == 1);
    CHECK(current_tape().nodes().back()->saved[0].shares_storage(out));
    CHECK_FALSE(current_tape().nodes().back()->saved[0].shares_storage(pre));
    out.backward(Tensor::ones({4}));
    check_close(z.grad(), {1, 0, 1, 0});
  }

  TEST_CASE("backward values of a few ops by hand") {
    Tensor a = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
    Tensor b = Tensor::from_vector<double>({1, -1, 2}, {3}).requires_grad_();
    sum(a * b).backward();                  // ga = b broadcast, gb = column sums of a
    check_close(a.grad(), {1, -1, 2, 1, -1, 2});
    check_close(b.grad(), {5, 7, 9});
    a.zero_grad();
    b.zero_grad();
    sum(matmul(a, b)).backward();           // ga[i,j] = b[j], gb[j] = sum_i a[i,j]
    check_close(a.grad(), {1, -1, 2, 1, -1, 2});
    check_close(b.grad(), {5, 7, 9});
    a.zero_grad();
    sum(concat({a, a.slice(1, 0, 1)}, 1)).backward();
    check_close(a.grad(), {2, 1, 1, 2, 1, 1});
  }
}
