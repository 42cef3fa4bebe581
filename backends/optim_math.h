// Adam's per-element update, written once for both backends (as elementwise_math.h is for the maps): the CPU loop
// (backends/cpu/cpu_optim.cpp) and the CUDA kernels (backends/cuda/cuda_optim.cu) call adam_element, so the two
// devices compute the same expressions in the same order (they can still differ in the last bit where GCC or nvcc
// fuses a multiply-add).
//
// Per element, with t the step count and wd the parameter's weight decay:
//   Adam:  g += wd p;   AdamW (decoupled): p *= 1 - lr wd;   then
//   m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2;   p -= lr/bc1 * m / (sqrt(v) * (1/sqrt(bc2)) + eps)
// The bias corrections bc1 = 1 - b1^t and bc2 = 1 - b2^t are computed on the host in double from the step count
// (no device round trip), and each scalar is rounded to the parameter's type once.
#pragma once
#include <cmath>
#include <cstdint>

#include "backends/elementwise_math.h"  // SG_HOST_DEVICE

namespace skipgrad::optim_math {

using std::sqrt;  // float and double: std's on the host, CUDA's in device code

// The scalars of one step, shared by every parameter: step_size = lr/bc1, inv_sqrt_bc2 = 1/sqrt(bc2).
template <class T>
struct AdamScalars {
  T b1, b2, step_size, inv_sqrt_bc2, eps;
};

template <class T>
inline AdamScalars<T> adam_scalars(double lr, double beta1, double beta2, double eps, int64_t step) {
  const double bc1 = 1 - std::pow(beta1, (double)step), bc2 = 1 - std::pow(beta2, (double)step);
  return {(T)beta1, (T)beta2, (T)(lr / bc1), (T)(1 / std::sqrt(bc2)), (T)eps};
}

// Element i of one parameter; wd is its weight decay and decay = 1 - lr wd.
template <class T>
SG_HOST_DEVICE void adam_element(T* p, const T* g, T* m, T* v, int64_t i, const AdamScalars<T>& s, T wd, T decay,
                                 bool decoupled) {
  T gi = g[i], pi = p[i];
  if (!decoupled) gi += wd * pi;
  else pi *= decay;
  const T mi = s.b1 * m[i] + (T(1) - s.b1) * gi;
  const T vi = s.b2 * v[i] + (T(1) - s.b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  p[i] = pi - s.step_size * mi / (sqrt(vi) * s.inv_sqrt_bc2 + s.eps);
}

}  // namespace skipgrad::optim_math
