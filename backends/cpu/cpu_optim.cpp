// CPU optimizer updates.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/strided_loop.h"
#include "backends/in_float32.h"
#include "backends/optim_math.h"

namespace skipgrad {

// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// Adam adds wd*p to g first; AdamW (decoupled) multiplies p by (1 - lr*wd) first: optim_math::adam_element, the
// CUDA kernels' update too.
void CpuBackend::adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                             double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
  if (in_float32::adam_update(*this, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step))
    return;
  cpu::dispatch_float(param.dtype(), "adam_update", [&]<class T>() {
    T* p = static_cast<T*>(param.data_ptr());
    const T* g = static_cast<const T*>(grad.data_ptr());
    T* mp = static_cast<T*>(m.data_ptr());
    T* vp = static_cast<T*>(v.data_ptr());
    const int64_t n = param.numel();
    const optim_math::AdamScalars<T> s = optim_math::adam_scalars<T>(lr, beta1, beta2, eps, step);
    const T wd = (T)weight_decay, decay = (T)(1 - lr * weight_decay);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) optim_math::adam_element(p, g, mp, vp, i, s, wd, decay, decoupled);
  });
}

}  // namespace skipgrad
