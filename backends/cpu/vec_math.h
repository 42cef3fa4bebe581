// exp(x) (and tanh(x) and erf(x), below) for float32 in plain arithmetic the compiler can vectorise. libm's expf is
// a call per element (4–6 ns each): softmax, log-softmax and cross-entropy spent most of their time in it, and the
// exp, sigmoid and silu ops do too (through VecMath, at the end). This is Cephes' expf: split x = n·ln2 + r with
// |r| <= ln2/2, e^r by a degree-7 polynomial, then 2^n put into the exponent bits.
// Error at most 2 ulp against libm over [-86.5, 88.72] (tests/test_ops_nn.cpp sweeps it); -inf -> 0, +inf -> inf,
// NaN -> NaN.
// Results under ~3e-38 (x < -86.5) are flushed to 0: in a softmax row, whose largest term is e^0 = 1, such a term
// is 37 orders of magnitude below the rounding of the sum. float64 keeps std::exp (the gradient checks run in it).
#pragma once
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace skipgrad::cpu {

// c[0] + x·(c[1] + x·(c[2] + ...)) by Horner's rule, the lowest coefficient first: the polynomials below
template <size_t N>
inline float horner(float x, const float (&c)[N]) {
  float p = c[N - 1];
  for (size_t i = N - 1; i-- > 0;) p = p * x + c[i];
  return p;
}

inline float exp_vec(float x) {
  constexpr float kLo = -86.5f, kHi = 88.7228f;  // 2^n with n in [-125, 128] below, as 2^(n-1) * 2
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // ln2 = hi + lo, hi exact in 9 bits
  constexpr float kRound = 12582912.0f;                               // 1.5·2^23: adding it rounds to an integer
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);               // NaN passes through both tests
  const float t = xc * kLog2e + kRound;                               // n sits in t's low mantissa bits
  const float n = t - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  const float p = horner(r, {5.0000001201e-1f, 1.6666665459e-1f, 4.1665795894e-2f, 8.3334519073e-3f,
                              1.3981999507e-3f, 1.9875691500e-4f}) * (r * r) + r + 1.0f;
  // 2^(n-1) built in unsigned arithmetic (no overflow or shift rules to break for a NaN's garbage n)
  const uint32_t bits = (std::bit_cast<uint32_t>(t) - std::bit_cast<uint32_t>(kRound) + 126u) << 23;
  const float y = p * std::bit_cast<float>(bits) * 2.0f;
  return x < kLo ? 0.0f : (x > kHi ? std::numeric_limits<float>::infinity() : y);
}


// tanh(x) for float32 the same way (DyT's kernels, the tanh op and the tanh GELU; libm's tanhf is a call per
// element): for |x| < 0.625, x + x³·P(x²), P of degree 4 fitted for this file (weighted least squares on tanh's
// relative error, then rounded to float); else sign(x)·(1 − 2/(e^{2|x|} + 1)) with exp_vec. Error 1 ulp against
// libm over [-12, 12] (tests/test_dyt.cpp sweeps it, allowing 2); ±inf -> ±1, ±0 -> ±0, NaN -> NaN.
inline float tanh_vec(float x) {
  const float a = x < 0 ? -x : x;
  const float s = x * x;
  const float p = horner(s, {-3.33332896e-1f, 1.33316994e-1f, -5.37620038e-2f, 2.07137372e-2f, -5.79009997e-3f});
  const float small = a == 0 ? x : x + x * s * p;  // (keeps -0 as -0)
  const float large = 1.0f - 2.0f / (exp_vec(2.0f * a) + 1.0f);  // (exp_vec(+inf) = inf: 1)
  return a < 0.625f ? small : (x < 0 ? -large : large);  // (NaN fails a < 0.625: large is NaN)
}


// erf(x) for float32 the same way (the GELU's; libm's erff is a call per element, 12 ns here): for |x| < 1,
// x + x·(2/√π − 1 + x²·P(x²)), P of degree 5; else sign(x)·(1 − e^{−x²}·Q(1/|x|)), Q of degree 6 for
// erfc(a)·e^{a²} on a in [1, 4] (both fitted for this file by iteratively reweighted least squares on erf's
// relative error, then rounded to float). erf(4) rounds to 1, so |x| is clamped there. Error 1 ulp against libm
// over ±[1e-30, 10] (tests/test_ops_nn_precision.cpp sweeps it, allowing 2); ±inf -> ±1, ±0 -> ±0, NaN -> NaN.
inline float erf_vec(float x) {
  const float a = x < 0 ? -x : x;
  const float s = x * x;
  const float p = horner(s, {-3.761262982e-01f, 1.128361738e-01f, -2.685491642e-02f, 5.190163107e-03f,
                              -8.024823608e-04f, 7.898709865e-05f});
  const float small = x + x * (0.128379167f + s * p);  // (x exact, the rest is the 11 % correction; keeps -0)
  const float b = a > 4.0f ? 4.0f : a;                 // (NaN fails the test and stays NaN)
  const float t = 1.0f / b;
  const float q = horner(t, {-1.698681316e-03f, 5.781939841e-01f, -3.505804681e-02f, -3.079202774e-01f,
                              3.065672319e-01f, -1.376318936e-01f, 2.513126866e-02f});
  const float large = 1.0f - exp_vec(-b * b) * q;
  return a < 1.0f ? small : (x < 0 ? -large : large);
}


// The CPU's exp, tanh and erf: float32 through exp_vec, tanh_vec and erf_vec, float64 through libm (exact, for
// float64 runs and the gradient checks). The elementwise formulas (backends/elementwise_math.h: exp, sigmoid, silu,
// tanh and both GELUs, forward and backward) take it as their math; softmax, cross-entropy and DyT call it directly.
struct VecMath {
  static float exp(float x) { return exp_vec(x); }
  static double exp(double x) { return std::exp(x); }
  static float tanh(float x) { return tanh_vec(x); }
  static double tanh(double x) { return std::tanh(x); }
  static float erf(float x) { return erf_vec(x); }
  static double erf(double x) { return std::erf(x); }
};

}  // namespace skipgrad::cpu
