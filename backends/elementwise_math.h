// The elementwise formulas, written once for both backends: y = f(x) of each UnaryOp, its derivative, and the
// BinaryOps. The CPU backend (backends/cpu/cpu_elementwise.cpp) calls them in its loops, the CUDA backend
// (backends/cuda/cuda_elementwise.cu) in its kernels, so the two devices compute the same expressions.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backends/backend.h"

#if defined(__CUDACC__)
#define SG_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SG_HOST_DEVICE inline
#endif

namespace skipgrad::elementwise {

// The float and double overloads: std's on the host, CUDA's math library in device code.
using std::fabs, std::log, std::pow, std::sqrt;

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

// The exp, tanh and erf the formulas below call, a template parameter M: std's on the host and CUDA's in device code
// by default (LibMath). The CPU backend passes cpu::VecMath (backends/cpu/vec_math.h), whose float32 functions the
// compiler vectorises where libm's are a call per element, so the formulas stay written once.
struct LibMath {
  template <class T>
  SG_HOST_DEVICE static T exp(T x) { return std::exp(x); }
  template <class T>
  SG_HOST_DEVICE static T tanh(T x) { return std::tanh(x); }
  template <class T>
  SG_HOST_DEVICE static T erf(T x) { return std::erf(x); }
};

// y = f(x); a is the op's scalar (Pow's exponent, the scalar of AddScalar, MulScalar, RsubScalar)
template <class T, class M = LibMath>
SG_HOST_DEVICE T unary_fn(UnaryOp op, T x, T a) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return M::exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Rsqrt: return T(1) / sqrt(x);
    case UnaryOp::Abs: return fabs(x);
    case UnaryOp::Tanh: return M::tanh(x);
    case UnaryOp::Sigmoid: return T(1) / (T(1) + M::exp(-x));
    case UnaryOp::Relu: return (x > T(0) || x != x) ? x : T(0);  // NaN stays NaN (as PyTorch): not hidden as 0
    case UnaryOp::GeluTanh: return T(0.5) * x * (T(1) + M::tanh(T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x)));
    case UnaryOp::GeluErf: return T(0.5) * x * (T(1) + M::erf(x * T(kInvSqrt2)));
    case UnaryOp::Silu: return x / (T(1) + M::exp(-x));
    case UnaryOp::Pow: return pow(x, a);
    case UnaryOp::AddScalar: return x + a;
    case UnaryOp::MulScalar: return x * a;
    case UnaryOp::RsubScalar: return a - x;
    case UnaryOp::Reciprocal: return T(1) / x;
  }
  return x;
}

// dy/dx given x and y = f(x)
template <class T, class M = LibMath>
SG_HOST_DEVICE T unary_deriv(UnaryOp op, T x, T y, T a) {
  switch (op) {
    case UnaryOp::Neg: return T(-1);
    case UnaryOp::Exp: return y;
    case UnaryOp::Log: return T(1) / x;
    case UnaryOp::Sqrt: return T(0.5) / y;
    case UnaryOp::Rsqrt: return T(-0.5) * y * y * y;
    case UnaryOp::Abs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
    case UnaryOp::Tanh: return T(1) - y * y;
    case UnaryOp::Sigmoid: return y * (T(1) - y);
    case UnaryOp::Relu: return x <= T(0) ? T(0) : T(1);  // 1 at NaN, as threshold_backward
    case UnaryOp::GeluTanh: {
      const T u = T(kSqrt2OverPi) * (x + T(0.044715) * x * x * x);
      const T th = M::tanh(u);
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * 0.044715) * x * x);
      return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du;
    }
    case UnaryOp::GeluErf:
      return T(0.5) * (T(1) + M::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * M::exp(T(-0.5) * x * x);
    case UnaryOp::Silu: {
      const T s = T(1) / (T(1) + M::exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::Pow: return a == T(0) ? T(0) : a * pow(x, a - T(1));  // x^0 is constant (0 * inf at x = 0)
    case UnaryOp::AddScalar: return T(1);
    case UnaryOp::MulScalar: return a;
    case UnaryOp::RsubScalar: return T(-1);
    case UnaryOp::Reciprocal: return -y * y;
  }
  return T(0);
}

// gx = gy * f'(x, y). ReLU is a select (0 where x <= 0, else gy, NaN included, as torch's threshold_backward):
// no multiply, and on the CPU it vectorises where gy * (x > 0 ? 1 : 0) compiles to a branch that mispredicts half
// the time.
template <class T, class M = LibMath>
SG_HOST_DEVICE T unary_grad(UnaryOp op, T gy, T x, T y, T a) {
  return op == UnaryOp::Relu ? (x <= T(0) ? T(0) : gy) : gy * unary_deriv<T, M>(op, x, y, a);
}

// topk's order of (value, index) pairs: larger values first (smaller first when !largest), equal values in index
// order. A NaN counts as larger than every number (torch.topk, torch.argmax), so it comes first when largest and
// last when not. A strict total order: no two pairs of one line are equal, so each rank has one element.
template <class T>
SG_HOST_DEVICE bool topk_before(T a, int64_t ia, T b, int64_t ib, bool largest) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan != b_nan) return largest ? a_nan : b_nan;
  if (!a_nan && a != b) return largest ? a > b : a < b;
  return ia < ib;
}

// The first in topk's order among x[j * stride] for j = first, first + step, ... < n that come after the pair
// (prev, iprev) (iprev < 0: no pair, all of them); -1 when there is none. Backend::topk calls it k times per line,
// each time after the element found the time before: the CPU with first 0 and step 1, a CUDA block with each
// thread on its own j = thread, thread + block size, ... and a reduction of their answers by topk_before.
template <class T>
SG_HOST_DEVICE int64_t topk_next(const T* x, int64_t n, int64_t stride, int64_t first, int64_t step, T prev,
                                 int64_t iprev, bool largest) {
  int64_t best = -1;
  T best_v = T(0);
  for (int64_t j = first; j < n; j += step) {
    const T v = x[j * stride];
    if (iprev >= 0 && !topk_before(prev, iprev, v, j, largest)) continue;
    if (best < 0 || topk_before(v, j, best_v, best, largest)) {
      best = j;
      best_v = v;
    }
  }
  return best;
}

// A whole line's first k in topk's order, into out[0], out[out_stride], ...: k calls of topk_next, each after the
// element the call before found. The CPU's topk, and the GPU's for short lines (a thread per line).
template <class T>
SG_HOST_DEVICE void topk_line(const T* x, int64_t n, int64_t stride, int64_t k, bool largest, int64_t* out,
                              int64_t out_stride) {
  int64_t prev = -1;
  for (int64_t r = 0; r < k; r++) {
    const T prev_v = prev >= 0 ? x[prev * stride] : T(0);
    prev = topk_next(x, n, stride, 0, 1, prev_v, prev, largest);
    out[r * out_stride] = prev;
  }
}

// out = a op b; the comparisons give 1 or 0 in T
template <class T>
SG_HOST_DEVICE T binary_fn(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Maximum: return (a > b || a != a) ? a : b;  // a NaN on either side gives NaN (as PyTorch)
    case BinaryOp::Minimum: return (a < b || a != a) ? a : b;
    case BinaryOp::Eq: return a == b ? T(1) : T(0);
    case BinaryOp::Ne: return a != b ? T(1) : T(0);
    case BinaryOp::Lt: return a < b ? T(1) : T(0);
    case BinaryOp::Le: return a <= b ? T(1) : T(0);
    case BinaryOp::Gt: return a > b ? T(1) : T(0);
    case BinaryOp::Ge: return a >= b ? T(1) : T(0);
  }
  return T(0);
}

// A value of S as D (the dtype-changing copies). Float to integer saturates and NaN gives 0, as a GPU's conversion
// instructions do, so both devices give the same numbers; a plain C++ cast of NaN or of a float out of the integer's
// range is undefined.
// bfloat16 goes through float: float -> bf16 rounds to nearest even, bf16 -> float is exact, so double -> bf16 rounds
// twice (as torch's does) and bf16 -> int saturates as float -> int.
template <class D, class S>
SG_HOST_DEVICE D convert(S v) {
  if constexpr (std::is_same_v<S, bf16> && !std::is_same_v<D, bf16>) return convert<D>((float)v);
  if constexpr (std::is_same_v<D, bf16> && !std::is_same_v<S, bf16>) return bf16((float)v);
  if constexpr (std::is_integral_v<D> && std::is_floating_point_v<S>) {
    constexpr D lo = sizeof(D) == 8 ? (D)INT64_MIN : (D)INT32_MIN, hi = sizeof(D) == 8 ? (D)INT64_MAX : (D)INT32_MAX;
    if (!(v == v)) return D(0);
    if (v <= (S)lo) return lo;
    if (v >= (S)hi) return hi;  // (S)hi rounds up to 2^63 or 2^31: every float below it fits
  }
  if constexpr (std::is_same_v<S, bf16> == std::is_same_v<D, bf16>) return static_cast<D>(v);
}

}  // namespace skipgrad::elementwise
