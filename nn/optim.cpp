#include "nn/optim.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "backends/backend.h"

namespace skipgrad::nn {

bool is_norm_or_bias(const std::string& name, const Tensor& param) {
  const std::string suffix = ".bias";
  bool bias = name == "bias" ||
              (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0);
  return bias || param.dim() <= 1;
}

// ---------------------------------------------------------------- Optimizer

Optimizer::Optimizer(NamedTensors params, double lr, std::vector<std::string> slots, bool no_decay_on_norms_and_biases)
    : params_(std::move(params)), slots_(std::move(slots)), lr_(lr) {
  check(std::isfinite(lr) && lr >= 0, "optimizer", ": learning rate must be finite and >= 0, got ", lr);
  std::set<std::string> names;
  std::set<const TensorImpl*> impls;
  for (auto& [name, p] : params_) {
    check(p.defined(), "optimizer", ": parameter '", name, "' is undefined");
    if (!is_floating(p.dtype()))
      fail("optimizer", ": parameter '", name, "' must be floating, got ", p.meta_str());
    check(names.insert(name).second, "optimizer", ": parameter name '", name, "' given twice");
    check(impls.insert(&p.impl()).second, "optimizer", ": parameter '", name, "' is the same tensor as another one");
    std::vector<Tensor> st;
    for (size_t s = 0; s < slots_.size(); s++) st.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
    state_.push_back(std::move(st));
    decays_.push_back(!(no_decay_on_norms_and_biases && is_norm_or_bias(name, p)));
  }
}

void Optimizer::step() {
  NoGradGuard no_grad;
  std::vector<Pending> todo;
  for (size_t i = 0; i < params_.size(); i++) {
    Tensor& p = params_[i].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device()))
      fail(kind(), ".step", ": gradient ", g.meta_str(), " of '", params_[i].first, "' does not match the parameter ",
           p.meta_str());
    follow_parameter(i);
    todo.push_back({i, std::move(g)});
  }
  update_all(todo);
  steps_++;
  if (profiling()) profile_mark(std::string(kind()) + ".step");
}

void Optimizer::update_all(const std::vector<Pending>& todo) {
  for (const Pending& u : todo) update(u.i, params_[u.i].second, u.grad, state_[u.i]);
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
  if (profiling()) profile_mark(std::string(kind()) + ".zero_grad");
}

void Optimizer::set_lr(double lr) {
  check(std::isfinite(lr) && lr >= 0, kind(), ".set_lr", ": learning rate must be finite and >= 0, got ", lr);
  lr_ = lr;
}

void Optimizer::set_step_count(int64_t steps) {
  check(steps >= 0, kind(), ".set_step_count", ": step count must be >= 0, got ", steps);
  steps_ = steps;
}

std::vector<Tensor> Optimizer::params() const {
  std::vector<Tensor> out;
  for (auto& [name, p] : params_) out.push_back(p);
  return out;
}

// The state follows a parameter that was moved or cast after the optimizer was made (the values are unchanged).
void Optimizer::follow_parameter(size_t i) const {
  const Tensor& p = params_[i].second;
  for (Tensor& s : state_[i])
    if (s.device() != p.device() || s.dtype() != p.dtype()) s = s.to(p.dtype()).to(p.device());
}

NamedTensors Optimizer::named_state() const {
  for (size_t i = 0; i < params_.size(); i++) follow_parameter(i);
  NamedTensors out;
  for (size_t s = 0; s < slots_.size(); s++)
    for (size_t i = 0; i < params_.size(); i++) out.emplace_back(slots_[s] + "." + params_[i].first, state_[i][s]);
  return out;
}

// ---------------------------------------------------------------- SGD

SGD::SGD(NamedTensors params, const SGDOptions& o)
    : Optimizer(std::move(params), o.lr, o.momentum > 0 ? std::vector<std::string>{"momentum"}
                                                       : std::vector<std::string>{},
                o.no_decay_on_norms_and_biases),
      opt_(o) {
  check(std::isfinite(o.momentum) && o.momentum >= 0, "sgd", ": momentum must be >= 0, got ", o.momentum);
  check(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "sgd", ": weight_decay must be >= 0, got ",
        o.weight_decay);
  check(!o.nesterov || o.momentum > 0, "sgd", ": nesterov needs momentum > 0");
}

// g = grad + wd p;  buf = momentum buf + g;  d = nesterov ? g + momentum buf : buf;  p -= lr d
// (torch.optim.SGD with dampening 0: its first-step buf = g equals momentum * 0 + g.)
void SGD::update(size_t i, Tensor& param, const Tensor& grad, std::vector<Tensor>& state) {
  Tensor g = grad;
  if (opt_.weight_decay != 0 && decays(i)) g = add(g, mul(param, opt_.weight_decay));
  Tensor d = g;
  if (opt_.momentum > 0) {
    Tensor& buf = state[0];
    buf.copy_(add(mul(buf, opt_.momentum), g));
    d = opt_.nesterov ? add(g, mul(buf, opt_.momentum)) : buf;
  }
  param.copy_(sub(param, mul(d, lr_)));
}

// ---------------------------------------------------------------- Adam / AdamW

Adam::Adam(NamedTensors params, const AdamOptions& o) : Adam(std::move(params), o, false) {}

Adam::Adam(NamedTensors params, const AdamOptions& o, bool decoupled)
    : Optimizer(std::move(params), o.lr, {"m", "v"}, o.no_decay_on_norms_and_biases), opt_(o), decoupled_(decoupled) {
  const char* name = decoupled ? "adamw" : "adam";
  check(o.beta1 >= 0 && o.beta1 < 1, name, ": beta1 must be in [0, 1), got ", o.beta1);
  check(o.beta2 >= 0 && o.beta2 < 1, name, ": beta2 must be in [0, 1), got ", o.beta2);
  check(std::isfinite(o.eps) && o.eps >= 0, name, ": eps must be >= 0, got ", o.eps);
  check(std::isfinite(o.weight_decay) && o.weight_decay >= 0, name, ": weight_decay must be >= 0, got ",
        o.weight_decay);
}

// One parameter: the same update as a step in which it alone has a gradient.
void Adam::update(size_t i, Tensor&, const Tensor& grad, std::vector<Tensor>&) { update_all({{i, grad}}); }

// One fused backend call per device for all parameters (see Backend::adam_update for the formula), each with
// its own weight decay. The backend needs contiguous tensors: a strided gradient is made contiguous, a strided
// parameter is updated in a contiguous copy that is written back after.
void Adam::update_all(const std::vector<Pending>& todo) {
  std::vector<Tensor> ps, gs;  // the contiguous operands; reserved so that AdamTensors' pointers stay valid
  ps.reserve(todo.size());
  gs.reserve(todo.size());
  std::vector<std::pair<Device, std::vector<AdamTensors>>> groups;  // by device; one in practice (Module::to)
  for (const Pending& u : todo) {
    const Tensor& param = params_[u.i].second;
    ps.push_back(param.is_contiguous() ? param : param.contiguous());
    gs.push_back(u.grad.is_contiguous() ? u.grad : u.grad.contiguous());
    auto group = std::find_if(groups.begin(), groups.end(), [&](const auto& gr) { return gr.first == param.device(); });
    if (group == groups.end()) group = groups.insert(groups.end(), {param.device(), {}});
    group->second.push_back(
        {&ps.back(), &gs.back(), &state_[u.i][0], &state_[u.i][1], decays(u.i) ? opt_.weight_decay : 0.0});
  }
  for (auto& [device, ts] : groups)
    backend_for(device).adam_update_many(ts, lr_, opt_.beta1, opt_.beta2, opt_.eps, decoupled_, steps_ + 1);
  for (size_t k = 0; k < todo.size(); k++) {
    Tensor& param = params_[todo[k].i].second;
    if (!param.is_contiguous()) param.copy_(ps[k]);
  }
}

}  // namespace skipgrad::nn
