// The CPU-vs-CUDA sweep over the op table: every gradcheck case (tests/test_gradcheck_all.cpp's registry: each
// op of the op table has at least one, with broadcast, transposed, sliced and permuted inputs) runs on both
// devices in float64 and float32, and the outputs and the gradients of every input that requires grad must agree
// within cuda_test_util.h's tolerances; then each case's finite-difference gradient check runs on the GPU.
// Inputs keep their layout on the device (a transposed view stays one).
// A case's function makes the tensors it holds of its own (ids, masks, targets) on its first input's device (one
// that does not fails with the mixed-device error). An op with no case run on the GPU fails the sweep.
#include <map>

#include "cuda_test_util.h"

using namespace sgtest;

namespace {

// t on `device` in `dtype` with t's layout: a non-contiguous view is the same view over a copy of its storage.
Tensor moved(const Tensor& t, Device device, DType dtype) {
  Tensor d = t.detach();
  if (!d.is_contiguous()) {
    const int64_t n = (int64_t)(d.impl().storage->nbytes / dtype_size(d.dtype()));
    Tensor whole = make_view(d, {n}, {1}, 0).to(device).to(dtype);
    d = make_view(whole, d.shape(), d.strides(), d.offset());
  } else {
    d = d.to(device).to(dtype);
  }
  if (t.requires_grad()) d.requires_grad_();
  return d;
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;  // of the inputs that require grad
};

// The case on `device` in `dtype` (floating inputs converted, integer ones kept): its output, then a backward
// with the fixed upstream gradient `gy` (made on the first run), and the inputs' gradients.
Run run_case(const GradCase& c, Device device, DType dtype, Tensor& gy) {
  std::vector<Tensor> in;
  for (const Tensor& t : c.inputs) in.push_back(moved(t, device, is_floating(t.dtype()) ? dtype : t.dtype()));
  Run r;
  r.out = c.f(in);
  if (r.out.requires_grad()) {
    if (!gy.defined()) {
      Generator g(99);
      gy = Tensor::randn(r.out.shape(), 0, 1, DType::F64, Device::cpu(), &g);
    }
    r.out.backward(gy.to(r.out.dtype()).to(r.out.device()));
  }
  for (const Tensor& t : in)
    if (t.requires_grad()) r.grads.push_back(t.grad());
  return r;
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("every op of the op table: its gradcheck cases give the CPU's outputs and gradients on the GPU") {
    if (!have_cuda()) return;
    std::map<std::string, int> on_gpu;
    for (const GradCase& c : grad_cases()) {
      CAPTURE(c.op);
      CAPTURE(c.label);
      for (DType dtype : {DType::F64, DType::F32}) {
        const std::string dt = dtype_name(dtype);
        CAPTURE(dt);
        Tensor gy;
        Run cpu = run_case(c, Device::cpu(), dtype, gy);
        Run gpu = run_case(c, Device::cuda(), dtype, gy);
        const Tol tol = tol_for(dtype);
        check_same(gpu.out, cpu.out, tol, "output");
        REQUIRE(gpu.grads.size() == cpu.grads.size());
        for (size_t i = 0; i < cpu.grads.size(); i++)
          check_same(gpu.grads[i], cpu.grads[i], tol, "gradient of input " + std::to_string(i));
        if (dtype == DType::F32) on_gpu[c.op]++;
      }
    }
    for (const OpInfo& op : op_table()) {
      INFO("op '" << std::string(op.name) << "' has no gradcheck case that runs on the GPU");
      CHECK(on_gpu[op.name] > 0);
    }
  }

  TEST_CASE("every gradcheck case passes its float64 finite-difference check on the GPU") {
    if (!have_cuda()) return;
    for (const GradCase& c : grad_cases()) {
      CAPTURE(c.op);
      CAPTURE(c.label);
      std::vector<Tensor> in;
      for (const Tensor& t : c.inputs) in.push_back(moved(t, Device::cuda(), t.dtype()));
      const GradcheckResult r = gradcheck(c.f, in, 1e-6, c.atol, c.rtol);
      INFO(r.message);
      CHECK(r.ok);
    }
  }
}
