#include "nn/clip.h"

#include <cmath>

#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "backends/backend.h"

namespace skipgrad::nn {

namespace {
// The gradients that exist, all on one device.
std::vector<Tensor> defined_grads(const std::vector<Tensor>& params) {
  std::vector<Tensor> grads;
  for (const Tensor& p : params) {
    check(p.defined(), "clip_grad_norm", ": a parameter is undefined");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!is_floating(g.dtype()))
      fail("clip_grad_norm", ": gradient must be floating, got ", g.meta_str());
    if (!(grads.empty() || g.device() == grads[0].device()))
      fail("clip_grad_norm", ": gradients are on different devices: ", grads.empty() ? "" : grads[0].meta_str(),
           " and ", g.meta_str());
    grads.push_back(g);
  }
  return grads;
}

void check_max_norm(double max_norm) {
  check(std::isfinite(max_norm) && max_norm >= 0, "clip_grad_norm", ": max_norm must be finite and >= 0, got ",
        max_norm);
}
}  // namespace

// total = sqrt(sum_p ||g_p||^2), on the device: the per-tensor norms in one call, in double (a float32 or bf16
// gradient's norm is right whenever its square fits a double: far beyond float32's range), their squares and sum
// in float64
Tensor total_grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  std::vector<Tensor> grads = defined_grads(params);
  if (grads.empty()) return Tensor();
  const Tensor n = norm2_f64(grads);
  return sqrt(sum(mul(n, n))).reshape({1});
}

// g_p *= max_norm / (total + 1e-6) when that factor is below 1 (total + 1e-6 > max_norm): torch's
// clip_grad_norm_ multiplies by min(1, max_norm / (total + 1e-6)), so it scales a total just under max_norm too
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total) {
  check_max_norm(max_norm);
  if (max_norm > 0 && std::isfinite(total) && total + 1e-6 > max_norm) {
    NoGradGuard no_grad;
    const double scale = max_norm / (total + 1e-6);
    for (Tensor& g : defined_grads(params)) {
      g.bump_version();  // written in place (a node that saved a .grad sees it)
      backend_for(g.device()).unary(UnaryOp::MulScalar, g, g, scale);
    }
  }
  profile_mark("clip_grad_norm");  // the scaling, and what ran since the last op (clip_grad_norm: the norm's read)
}

// factor = max_norm / (total + 1e-6) where max_norm < total + 1e-6 and total < inf (NaN compares false), else 1,
// on total's device
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, const Tensor& total) {
  check_max_norm(max_norm);
  check(total.defined() && total.numel() == 1 && total.dtype() == DType::F64, "clip_grad_norm",
        ": the total norm must be a float64 tensor of one element (total_grad_norm's), got ",
        total.defined() ? total.meta_str() : "none");
  NoGradGuard no_grad;
  std::vector<Tensor> grads = defined_grads(params);
  if (max_norm > 0 && !grads.empty()) {
    const Device dev = total.device();
    const Tensor t = total.reshape({1});
    const Tensor limit = Tensor::full({1}, max_norm, DType::F64, dev);
    const Tensor t_eps = t + 1e-6;
    const Tensor in_range = gt(t_eps, limit) * lt(t, Tensor::full({1}, INFINITY, DType::F64, dev));
    const Tensor factor = where(in_range, limit / t_eps, Tensor::ones({1}, DType::F64, dev));
    std::vector<Tensor*> ts;
    for (Tensor& g : grads) {
      g.bump_version();  // written in place
      ts.push_back(&g);
    }
    backend_for(dev).scale_many(ts, factor);
  }
  profile_mark("clip_grad_norm");
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  check_max_norm(max_norm);
  Tensor norm = total_grad_norm(params);
  if (!norm.defined()) return 0.0;
  const double total = norm.item();  // the one read-back
  clip_grads_to_norm(params, max_norm, total);
  return total;
}

double clip_grad_norm(const std::vector<std::pair<std::string, Tensor>>& named_params, double max_norm) {
  std::vector<Tensor> params;
  for (auto& [name, p] : named_params) params.push_back(p);
  return clip_grad_norm(params, max_norm);
}

std::vector<std::pair<std::string, double>> grad_norms(const std::vector<std::pair<std::string, Tensor>>& named_params) {
  const GradNorms g = grad_norms_on_device(named_params);
  std::vector<std::pair<std::string, double>> out;
  if (g.names.empty()) return out;
  const std::vector<double> values = g.norms.to_vector<double>();  // the one read-back
  for (size_t i = 0; i < g.names.size(); i++) out.emplace_back(g.names[i], values[i]);
  return out;
}

GradNorms grad_norms_on_device(const std::vector<std::pair<std::string, Tensor>>& named_params) {
  NoGradGuard no_grad;
  std::vector<std::string> names;
  std::vector<Tensor> grads;
  for (auto& [name, p] : named_params) {
    check(p.defined(), "grad_norms", ": parameter '", name, "' is undefined");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!(grads.empty() || g.device() == grads[0].device()))
      fail("grad_norms", ": gradient of '", name, "' is on ", g.device().str(), ", others on ",
           grads.empty() ? "" : grads[0].device().str());
    check(is_floating(g.dtype()), "grad_norms", ": gradient of '", name, "' must be floating, got ", g.meta_str());
    names.push_back(name);
    grads.push_back(g);
  }
  if (grads.empty()) return {};
  return {std::move(names), norm2_f64(grads)};
}

}  // namespace skipgrad::nn
