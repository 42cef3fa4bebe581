// Helpers of the CUDA test files (test_cuda.cpp, test_cuda_gemm.cpp): CPU-vs-CUDA comparison of a case built from
// the same inputs on both devices, tolerances, and the CUDA backend's counters (0 in a build without CUDA, where no
// GPU test runs). Tolerances: float64 |cuda - cpu| <= 1e-9 + 1e-7 |cpu| (different summation orders only);
// float32 |cuda - cpu| <= 1e-4 + 1e-3 |cpu| (TF32 is off, so only the order of sums differs).
#pragma once
#include <array>
#include <cmath>
#include <functional>
#include <string>

#include "test_util.h"
#ifdef SKIPGRAD_WITH_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace sgtest {

// How often the host has waited for the GPU so far (0 in a build without CUDA, where no GPU test runs).
inline int64_t gpu_host_waits() {
#ifdef SKIPGRAD_WITH_CUDA
  return static_cast<CudaBackend&>(backend_for(Device::cuda())).host_waits();
#else
  return 0;
#endif
}

// Host-to-device copies so far (0 in a build without CUDA).
inline int64_t gpu_uploads() {
#ifdef SKIPGRAD_WITH_CUDA
  return static_cast<CudaBackend&>(backend_for(Device::cuda())).uploads();
#else
  return 0;
#endif
}

// Linear-layer GEMMs so far whose bias work ran in a cuBLASLt epilogue, and those cuBLASLt declined.
inline std::array<int64_t, 2> bias_gemms() {
#ifdef SKIPGRAD_WITH_CUDA
  auto& b = static_cast<CudaBackend&>(backend_for(Device::cuda()));
  return {b.fused_bias_gemms(), b.unfused_bias_gemms()};
#else
  return {0, 0};
#endif
}

inline bool have_cuda() {
  if (cuda_available()) return true;
  MESSAGE("skipped: no CUDA device");
  return false;
}

struct Tol {
  double atol, rtol;
};
inline Tol tol_for(DType dt) { return dt == DType::F64 ? Tol{1e-9, 1e-7} : Tol{1e-4, 1e-3}; }

inline void check_same(const Tensor& gpu, const Tensor& cpu, Tol tol, const std::string& what) {
  INFO(what);
  REQUIRE(gpu.defined() == cpu.defined());
  if (!cpu.defined()) return;
  CHECK(gpu.device().is_cuda());
  REQUIRE(gpu.shape() == cpu.shape());
  auto g = gpu.to_vector<double>(), c = cpu.to_vector<double>();
  int64_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < c.size(); i++) {
    const bool both_inf = std::isinf(c[i]) && g[i] == c[i];
    const bool both_nan = std::isnan(c[i]) && std::isnan(g[i]);
    const double d = std::abs(g[i] - c[i]);
    if (!both_inf && !both_nan && !(d <= tol.atol + tol.rtol * std::abs(c[i]))) {
      bad++;
      worst = std::max(worst, d);
    }
  }
  INFO(bad << " of " << c.size() << " elements differ, worst by " << worst);
  CHECK(bad == 0);
}

// Inputs are made by `Inputs::make` on a device; the case function maps them to one output.
struct Inputs {
  Device dev;
  DType dtype;
  std::vector<Tensor> leaves;  // those that require grad: their gradients are compared
  // A leaf of values ~ N(0, scale) (or U[lo, hi) when lo < hi), same on every device for the same seed.
  Tensor rand(const Shape& s, uint64_t seed, double lo = 0, double hi = 0, bool grad = true) {
    Generator g(seed);
    Tensor t = lo < hi ? Tensor::rand(s, lo, hi, dtype, Device::cpu(), &g) : Tensor::randn(s, 0, 1, dtype, Device::cpu(), &g);
    t = t.to(dev).detach();
    if (grad) {
      t.requires_grad_();
      leaves.push_back(t);
    }
    return t;
  }
  // Non-contiguous: the transpose of a contiguous [s1, s0] leaf.
  Tensor rand_t(const Shape& s, uint64_t seed, double lo = 0, double hi = 0) {
    return rand({s[1], s[0]}, seed, lo, hi).transpose(0, 1);
  }
  Tensor ids(const std::vector<int64_t>& v, const Shape& s) { return Tensor::from_vector<int64_t>(v, s, dev); }
};

using CaseFn = std::function<Tensor(Inputs&)>;

// Runs f on the CPU and the GPU in `dtype`, compares the outputs and the gradients of every leaf. Each device's
// forward is followed by its own backward: the tape is one per thread, and a backward frees all of it.
inline void compare(const std::string& name, const CaseFn& f, DType dtype, bool backward = true, Tol tol = {-1, -1}) {
  CAPTURE(name);
  const std::string dtype_str = dtype_name(dtype);
  CAPTURE(dtype_str);
  if (tol.atol < 0) tol = tol_for(dtype);
  Inputs cpu{Device::cpu(), dtype, {}}, gpu{Device::cuda(), dtype, {}};
  Tensor yc = f(cpu), gy;
  if (backward && yc.requires_grad()) {
    Generator g(99);
    gy = Tensor::randn(yc.shape(), 0, 1, yc.dtype(), Device::cpu(), &g);
    yc.backward(gy);
  }
  Tensor yg = f(gpu);
  check_same(yg, yc, tol, name + " forward");
  if (!gy.defined()) return;
  REQUIRE(yg.requires_grad());
  yg.backward(gy.to(Device::cuda()));
  REQUIRE(cpu.leaves.size() == gpu.leaves.size());
  for (size_t i = 0; i < cpu.leaves.size(); i++)
    check_same(gpu.leaves[i].grad(), cpu.leaves[i].grad(), tol, name + " gradient of input " + std::to_string(i));
}

inline void compare_both(const std::string& name, const CaseFn& f, bool backward = true) {
  compare(name, f, DType::F64, backward);
  compare(name, f, DType::F32, backward);
}

}  // namespace sgtest
