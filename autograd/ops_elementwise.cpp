// Elementwise ops with numpy broadcasting: forward, backward and checks side by side.
#include <cmath>
#include <limits>

#include "autograd/ops_common.h"

namespace skipgrad {

void check_same_device(const char* op, const std::vector<Tensor>& ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    else if (t.device() != first->device())
      fail(op, ": tensors are on different devices: ", first->meta_str(), " and ", t.meta_str());
  }
}

void check_same_float_dtype(const char* op, const std::vector<Tensor>& ts) {
  const Tensor* first = nullptr;
  for (const Tensor& t : ts) {
    if (!t.defined()) continue;
    if (!is_floating(t.dtype())) fail(op, ": expected floating tensors, got ", t.meta_str());
    if (!first) first = &t;
    else if (t.dtype() != first->dtype())
      fail(op, ": dtypes differ: ", first->meta_str(), " and ", t.meta_str());
  }
}

// ---------------------------------------------------------------- binary

namespace {
// An elementwise op on a bfloat16 and a float32/float64 tensor runs in the wider dtype (as torch's type promotion).
// With float32 the kernel reads the bf16 operand as it is (autocast's x + sublayer(x): no cast, as PyTorch's
// TensorIterator); with float64 the bf16 operand is cast first, by a recorded to_dtype node. The bf16 operand's
// gradient comes back in bf16 (the backward converts it: backward_node).
bool bf16_with_f64(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && ((a.dtype() == DType::BF16 && b.dtype() == DType::F64) ||
                                        (a.dtype() == DType::F64 && b.dtype() == DType::BF16));
}
Tensor promoted(const Tensor& t, const Tensor& other) {
  return t.dtype() == DType::BF16 ? t.to(other.dtype()) : t;
}

Tensor binary_forward(const char* name, BinaryOp op, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "first input");
  check_defined(name, b, "second input");
  check_same_device(name, {a, b});
  const bool mixed = float32_with_bf16(a.dtype(), b.dtype());
  if (a.dtype() != b.dtype() && !mixed) fail(name, ": dtypes differ: ", a.meta_str(), " and ", b.meta_str());
  Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, mixed ? DType::F32 : a.dtype(), a.device());
  be(a).binary(op, broadcast_to(a, shape, name), broadcast_to(b, shape, name), out);
  return out;
}
}  // namespace

// c = a + b:  ga = sum_to(g, a),  gb = sum_to(g, b)
Tensor add(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return add(promoted(a, b), promoted(b, a));
  Tensor out = binary_forward("add", BinaryOp::Add, a, b);
  record("add", {a, b}, out, {}, [sa = a.shape(), sb = b.shape()](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{needs_grad(n, 0) ? sum_to(g, sa) : Tensor(),
                               needs_grad(n, 1) ? sum_to(g, sb) : Tensor()};
  });
  return out;
}

// c = a - b:  ga = g,  gb = -g
Tensor sub(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return sub(promoted(a, b), promoted(b, a));
  Tensor out = binary_forward("sub", BinaryOp::Sub, a, b);
  record("sub", {a, b}, out, {}, [sa = a.shape(), sb = b.shape()](const Node& n, const Tensor& g) {
    return std::vector<Tensor>{needs_grad(n, 0) ? sum_to(g, sa) : Tensor(),
                               needs_grad(n, 1) ? sum_to(neg(g), sb) : Tensor()};
  });
  return out;
}

// c = a * b:  ga = g b,  gb = g a
Tensor mul(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return mul(promoted(a, b), promoted(b, a));
  Tensor out = binary_forward("mul", BinaryOp::Mul, a, b);
  record("mul", {a, b}, out, {a, b}, [](const Node& n, const Tensor& g) {
    const Tensor &a = n.saved[0], &b = n.saved[1];
    return std::vector<Tensor>{needs_grad(n, 0) ? sum_to(mul(g, b), a.shape()) : Tensor(),
                               needs_grad(n, 1) ? sum_to(mul(g, a), b.shape()) : Tensor()};
  });
  return out;
}

// c = a / b:  ga = g / b,  gb = -g a / b^2 = -g c / b
Tensor div(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return div(promoted(a, b), promoted(b, a));
  // Integer division would trap (or, on a GPU, give garbage) on a zero divisor that only the data shows; PyTorch's
  // `/` of integers is true division anyway: ask for a floating dtype.
  if (a.defined() && b.defined() && (is_integer(a.dtype()) || is_integer(b.dtype())))
    fail("div", ": integer tensors (", a.meta_str(), " / ", b.meta_str(),
         "): convert them to a floating dtype first (.to(DType::F32))");
  Tensor out = binary_forward("div", BinaryOp::Div, a, b);
  record("div", {a, b}, out, {b, out}, [sa = a.shape()](const Node& n, const Tensor& g) {
    const Tensor &b = n.saved[0], &c = n.saved[1];
    return std::vector<Tensor>{needs_grad(n, 0) ? sum_to(div(g, b), sa) : Tensor(),
                               needs_grad(n, 1) ? sum_to(neg(div(mul(g, c), b)), b.shape()) : Tensor()};
  });
  return out;
}

// The gradient weights of c = max(a, b) (loses = Lt) or min(a, b) (loses = Gt), PyTorch's formula since 1.9:
// 1 - [x loses to y] - [x == y] / 2 for each side, so the winner takes the gradient, a tie splits it evenly and a
// NaN (no comparison holds) passes it to both.
namespace {
std::vector<Tensor> extremum_backward(const char* op, BinaryOp loses, const Node& n, const Tensor& g) {
  const Tensor &a = n.saved[0], &b = n.saved[1];
  Tensor half_tie = mul(binary_forward(op, BinaryOp::Eq, a, b), 0.5);
  auto weighted = [&](const Tensor& x, const Tensor& y) {
    return sum_to(mul(g, rsub(add(binary_forward(op, loses, x, y), half_tie), 1.0)), x.shape());
  };
  return {needs_grad(n, 0) ? weighted(a, b) : Tensor(), needs_grad(n, 1) ? weighted(b, a) : Tensor()};
}
}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return maximum(promoted(a, b), promoted(b, a));
  Tensor out = binary_forward("maximum", BinaryOp::Maximum, a, b);
  record("maximum", {a, b}, out, {a, b},
         [](const Node& n, const Tensor& g) { return extremum_backward("maximum", BinaryOp::Lt, n, g); });
  return out;
}

Tensor minimum(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return minimum(promoted(a, b), promoted(b, a));
  Tensor out = binary_forward("minimum", BinaryOp::Minimum, a, b);
  record("minimum", {a, b}, out, {a, b},
         [](const Node& n, const Tensor& g) { return extremum_backward("minimum", BinaryOp::Gt, n, g); });
  return out;
}

Tensor eq(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return eq(promoted(a, b), promoted(b, a));
  return binary_forward("eq", BinaryOp::Eq, a, b);
}
Tensor gt(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return gt(promoted(a, b), promoted(b, a));
  return binary_forward("gt", BinaryOp::Gt, a, b);
}
Tensor lt(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return lt(promoted(a, b), promoted(b, a));
  return binary_forward("lt", BinaryOp::Lt, a, b);
}
Tensor ge(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return ge(promoted(a, b), promoted(b, a));
  return binary_forward("ge", BinaryOp::Ge, a, b);
}
Tensor le(const Tensor& a, const Tensor& b) {
  if (bf16_with_f64(a, b)) return le(promoted(a, b), promoted(b, a));
  return binary_forward("le", BinaryOp::Le, a, b);
}

// ---------------------------------------------------------------- unary

namespace {
// What the derivative of a unary op reads, so a node keeps only that alive.
enum class Saves { Nothing, X, Y };  // f' constant (neg, x+c, x*c, c-x) | f'(x) | f'(y) from the output

// y = f(x) with gx = g * f'(x).
Tensor unary_op(const char* name, UnaryOp op, const Tensor& x, double alpha, Saves saves) {
  check_floating(name, x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  be(x).unary(op, x, out, alpha);
  Tensor kept = saves == Saves::X ? x : saves == Saves::Y ? out : Tensor();
  record(name, {x}, out, {kept}, [op, alpha, saves](const Node& n, const Tensor& g) {
    // The kernel reads x and y; the one not kept is never looked at, so anything of g's shape stands in.
    const Tensor& kept = n.saved[0].defined() ? n.saved[0] : g;
    Tensor gx = Tensor::empty(g.shape(), g.dtype(), g.device());
    be(g).unary_backward(op, kept, saves == Saves::Y ? kept : Tensor(), g, gx, alpha);
    return std::vector<Tensor>{gx};
  }, alpha != 0 ? OpParams{{"alpha", alpha}} : OpParams{});
  return out;
}
}  // namespace

// y = f(x) and f', which the backward reads from the saved x or y (backends/elementwise_math.h computes both):
//   neg  -x, -1          add_scalar  x + c, 1          mul_scalar  c x, c          rsub_scalar  c - x, -1
//   exp  e^x, y          log  ln x, 1/x                sqrt  √x, 1/(2y)            rsqrt  1/√x, -y³/2
//   reciprocal  1/x, -y²   pow  x^p, p x^(p-1)         abs  |x|, sign x            tanh  tanh x, 1 - y²
//   sigmoid  σ(x), y(1 - y)   relu  max(x, 0), [x > 0]   silu  x σ(x), σ(x)(1 + x(1 - σ(x)))
//   gelu_erf  x Φ(x), Φ(x) + x φ(x)     gelu_tanh  x (1 + tanh u)/2 with u = √(2/π)(x + 0.044715 x³)
Tensor neg(const Tensor& a) { return unary_op("neg", UnaryOp::Neg, a, 0, Saves::Nothing); }
Tensor add(const Tensor& a, double s) { return unary_op("add_scalar", UnaryOp::AddScalar, a, s, Saves::Nothing); }
Tensor mul(const Tensor& a, double s) { return unary_op("mul_scalar", UnaryOp::MulScalar, a, s, Saves::Nothing); }
Tensor rsub(const Tensor& a, double s) { return unary_op("rsub_scalar", UnaryOp::RsubScalar, a, s, Saves::Nothing); }
Tensor exp(const Tensor& a) { return unary_op("exp", UnaryOp::Exp, a, 0, Saves::Y); }
Tensor log(const Tensor& a) { return unary_op("log", UnaryOp::Log, a, 0, Saves::X); }
Tensor sqrt(const Tensor& a) { return unary_op("sqrt", UnaryOp::Sqrt, a, 0, Saves::Y); }
Tensor rsqrt(const Tensor& a) { return unary_op("rsqrt", UnaryOp::Rsqrt, a, 0, Saves::Y); }
Tensor reciprocal(const Tensor& a) { return unary_op("reciprocal", UnaryOp::Reciprocal, a, 0, Saves::Y); }
Tensor pow(const Tensor& a, double e) { return unary_op("pow", UnaryOp::Pow, a, e, Saves::X); }
Tensor abs(const Tensor& a) { return unary_op("abs", UnaryOp::Abs, a, 0, Saves::X); }
Tensor tanh(const Tensor& a) { return unary_op("tanh", UnaryOp::Tanh, a, 0, Saves::Y); }
Tensor sigmoid(const Tensor& a) { return unary_op("sigmoid", UnaryOp::Sigmoid, a, 0, Saves::Y); }
// relu keeps its output, not its input: its derivative reads only the sign, and y > 0 exactly where x > 0 (the
// backend's Relu derivative is given y as x). The next layer keeps y anyway (an FFN's fc2 input), so the
// pre-activation is freed after the forward: 12 x 32 MB less at the step's peak for the GPU benchmark's model
// (bench/cuda_step.cpp: d 512, FFN 2048, 64 x 64 tokens).
Tensor relu(const Tensor& a) { return unary_op("relu", UnaryOp::Relu, a, 0, Saves::Y); }
Tensor gelu(const Tensor& a, GeluApprox approx) {
  return approx == GeluApprox::Tanh ? unary_op("gelu_tanh", UnaryOp::GeluTanh, a, 0, Saves::X)
                                    : unary_op("gelu_erf", UnaryOp::GeluErf, a, 0, Saves::X);
}
Tensor silu(const Tensor& a) { return unary_op("silu", UnaryOp::Silu, a, 0, Saves::X); }

// ---------------------------------------------------------------- operators and methods

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
Tensor operator-(double s, const Tensor& a) { return rsub(a, s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
// x * (1/s): one multiply (as torch's CUDA kernel does) while 1/s is a normal number of x's dtype; past that, two
// factors of 1/sqrt|s|, so that in float32 1e38 / 1e50 is 1e-12 (not 0) and 0 / 1e-40 is 0 (not 0 * inf = NaN).
Tensor operator/(const Tensor& a, double s) {
  const double inv = 1.0 / s;
  const bool f64 = a.defined() && a.dtype() == DType::F64;
  const double lo = f64 ? std::numeric_limits<double>::min() : std::numeric_limits<float>::min();
  const double hi = f64 ? std::numeric_limits<double>::max() : std::numeric_limits<float>::max();
  if (s == 0 || !std::isfinite(s) || (std::fabs(inv) >= lo && std::fabs(inv) <= hi)) return mul(a, inv);
  const double half = 1.0 / std::sqrt(std::fabs(s));
  return mul(mul(a, half), std::copysign(half, s));
}

Tensor Tensor::exp() const { return skipgrad::exp(*this); }
Tensor Tensor::log() const { return skipgrad::log(*this); }
Tensor Tensor::sqrt() const { return skipgrad::sqrt(*this); }
Tensor Tensor::pow(double e) const { return skipgrad::pow(*this, e); }
Tensor Tensor::abs() const { return skipgrad::abs(*this); }
Tensor Tensor::relu() const { return skipgrad::relu(*this); }
Tensor Tensor::tanh() const { return skipgrad::tanh(*this); }
Tensor Tensor::sigmoid() const { return skipgrad::sigmoid(*this); }

}  // namespace skipgrad
