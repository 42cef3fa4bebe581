// CPU optimizer updates.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/strided_loop.h"
#include "backends/in_float32.h"

namespace skipgrad {

// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// Adam adds wd*p to g first; AdamW (decoupled) multiplies p by (1 - lr*wd) first.
void CpuBackend::adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                             double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
  if (in_float32::adam_update(*this, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step))
    return;
  const double bc1 = 1 - std::pow(beta1, (double)step), bc2 = 1 - std::pow(beta2, (double)step);
  cpu::dispatch_float(param.dtype(), "adam_update", [&]<class T>() {
    T* p = static_cast<T*>(param.data_ptr());
    const T* g = static_cast<const T*>(grad.data_ptr());
    T* mp = static_cast<T*>(m.data_ptr());
    T* vp = static_cast<T*>(v.data_ptr());
    const int64_t n = param.numel();
    const T b1 = (T)beta1, b2 = (T)beta2, step_size = (T)(lr / bc1), inv_sqrt_bc2 = (T)(1 / std::sqrt(bc2));
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay), e = (T)eps;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
      T gi = g[i];
      if (!decoupled) gi += wd * p[i];
      else p[i] *= decay;
      mp[i] = b1 * mp[i] + (1 - b1) * gi;
      vp[i] = b2 * vp[i] + (1 - b2) * gi * gi;
      p[i] -= step_size * mp[i] / (std::sqrt(vp[i]) * inv_sqrt_bc2 + e);
    }
  });
}

}  // namespace skipgrad
