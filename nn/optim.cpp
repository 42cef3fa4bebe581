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

Optimizer::Optimizer(const char* kind, std::vector<ParamGroup> groups, double lr, std::vector<std::string> slots,
                     double weight_decay, bool no_decay_on_norms_and_biases)
    : slots_(std::move(slots)), lr_(lr) {
  check(std::isfinite(lr) && lr >= 0, kind, ": learning rate must be finite and >= 0, got ", lr);
  check(std::isfinite(weight_decay) && weight_decay >= 0, kind, ": weight_decay must be >= 0, got ", weight_decay);
  std::set<std::string> names;
  std::set<const TensorImpl*> impls;
  for (size_t k = 0; k < groups.size(); k++) {
    const ParamGroup& group = groups[k];
    const double wd = group.weight_decay.value_or(weight_decay);
    check(std::isfinite(group.lr_scale) && group.lr_scale >= 0, kind, ": lr_scale of parameter group ", k,
          " must be finite and >= 0, got ", group.lr_scale);
    check(std::isfinite(wd) && wd >= 0, kind, ": weight_decay of parameter group ", k, " must be >= 0, got ", wd);
    for (const auto& [name, p] : group.params) {
      check(p.defined(), kind, ": parameter '", name, "' is undefined");
      check(p.is_leaf(), kind, ": parameter '", name, "' is the result of an op, not a leaf: it never gets a .grad "
            "(optimize the tensor it was computed from, or a detach() of it)");
      if (!is_floating(p.dtype())) fail(kind, ": parameter '", name, "' must be floating, got ", p.meta_str());
      check(names.insert(name).second, kind, ": parameter name '", name, "' given twice");
      check(impls.insert(&p.impl()).second, kind, ": parameter '", name, "' is the same tensor as another one");
      std::vector<Tensor> st;
      for (size_t s = 0; s < slots_.size(); s++) st.push_back(Tensor::zeros(p.shape(), p.dtype(), p.device()));
      state_.push_back(std::move(st));
      params_.emplace_back(name, p);
      weight_decay_.push_back(no_decay_on_norms_and_biases && is_norm_or_bias(name, p) ? 0.0 : wd);
      lr_scale_.push_back(group.lr_scale);
    }
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

double Optimizer::weight_decay(size_t i) const {
  check(i < params_.size(), kind(), ".weight_decay", ": parameter ", i, " of ", params_.size());
  return weight_decay_[i];
}

double Optimizer::lr_scale(size_t i) const {
  check(i < params_.size(), kind(), ".lr_scale", ": parameter ", i, " of ", params_.size());
  return lr_scale_[i];
}

void Optimizer::set_weight_decay(size_t i, double weight_decay) {
  check(i < params_.size(), kind(), ".set_weight_decay", ": parameter ", i, " of ", params_.size());
  check(std::isfinite(weight_decay) && weight_decay >= 0, kind(), ".set_weight_decay", ": weight_decay of '",
        params_[i].first, "' must be >= 0, got ", weight_decay);
  weight_decay_[i] = weight_decay;
}

void Optimizer::set_lr_scale(size_t i, double lr_scale) {
  check(i < params_.size(), kind(), ".set_lr_scale", ": parameter ", i, " of ", params_.size());
  check(std::isfinite(lr_scale) && lr_scale >= 0, kind(), ".set_lr_scale", ": lr_scale of '", params_[i].first,
        "' must be finite and >= 0, got ", lr_scale);
  lr_scale_[i] = lr_scale;
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

// An error for a setting name the optimizer does not have, listing those it has.
[[noreturn]] static void unknown_setting(const Optimizer& opt, const std::string& name) {
  std::string known;
  for (const auto& [k, v] : opt.settings()) known += (known.empty() ? "" : ", ") + k;
  fail(opt.kind(), ".set_setting", ": no setting '", name, "'; a ", opt.kind(), " optimizer has ",
       known.empty() ? "none" : known);
}

void Optimizer::set_setting(const std::string& name, double) { unknown_setting(*this, name); }

// ---------------------------------------------------------------- SGD

namespace {
// The checks of SGDOptions beyond the base class's (lr, weight decay); `where` names the caller in errors.
void check_sgd_options(const std::string& where, const SGDOptions& o) {
  check(std::isfinite(o.momentum) && o.momentum >= 0, where, ": momentum must be >= 0, got ", o.momentum);
  check(!o.nesterov || o.momentum > 0, where, ": nesterov needs momentum > 0");
}
}  // namespace

SGD::SGD(NamedTensors params, const SGDOptions& o) : SGD(one_group(std::move(params)), o) {}

SGD::SGD(std::vector<ParamGroup> groups, const SGDOptions& o)
    : Optimizer("sgd", std::move(groups), o.lr,
                o.momentum > 0 ? std::vector<std::string>{"momentum"} : std::vector<std::string>{}, o.weight_decay,
                o.no_decay_on_norms_and_biases),
      opt_(o) {
  check_sgd_options("sgd", o);
}

std::vector<std::pair<std::string, double>> SGD::settings() const {
  return {{"momentum", opt_.momentum}, {"nesterov", opt_.nesterov ? 1.0 : 0.0}};
}

// Momentum keeps its sign: its buffers are made (or not) with the optimizer, and a checkpoint holds them or not.
void SGD::set_setting(const std::string& name, double value) {
  SGDOptions o = opt_;
  if (name == "momentum") {
    check((value > 0) == (opt_.momentum > 0), "sgd.set_setting", ": momentum ", value, " for an optimizer made ",
          opt_.momentum > 0 ? "with momentum (its buffers need one > 0)" : "without momentum (it has no buffers)");
    o.momentum = value;
  } else if (name == "nesterov") {
    check(value == 0 || value == 1, "sgd.set_setting", ": nesterov must be 1 or 0, got ", value);
    o.nesterov = value == 1;
  } else {
    unknown_setting(*this, name);
  }
  check_sgd_options("sgd.set_setting", o);
  opt_ = o;
}

// g = grad + wd p;  buf = momentum buf + g;  d = nesterov ? g + momentum buf : buf;  p -= lr d
// (torch.optim.SGD with dampening 0: its first-step buf = g equals momentum * 0 + g.)
std::pair<Tensor, Tensor> SGD::next_values(size_t i, const Tensor& param, const Tensor& grad,
                                           const std::vector<Tensor>& state) const {
  Tensor g = grad;
  if (weight_decay(i) != 0) g = add(g, mul(param, weight_decay(i)));
  Tensor d = g, buf;
  if (opt_.momentum > 0) {
    buf = add(mul(state[0], opt_.momentum), g);
    d = opt_.nesterov ? add(g, mul(buf, opt_.momentum)) : buf;
  }
  return {sub(param, mul(d, lr_ * lr_scale(i))), buf};
}

void SGD::update(size_t i, Tensor&, const Tensor& grad, std::vector<Tensor>&) { update_all({{i, grad}}); }

void SGD::update_all(const std::vector<Pending>& todo) {
  std::vector<std::pair<Tensor, Tensor>> next;  // (new value, new momentum buffer) per parameter of the step
  next.reserve(todo.size());
  for (const Pending& u : todo) next.push_back(next_values(u.i, params_[u.i].second, u.grad, state_[u.i]));
  for (size_t k = 0; k < todo.size(); k++) {  // (copies into memory that exists: nothing left to run out of)
    if (next[k].second.defined()) state_[todo[k].i][0].copy_(next[k].second);
    params_[todo[k].i].second.copy_(next[k].first);
  }
}

// ---------------------------------------------------------------- Adam / AdamW

namespace {
// The checks of AdamOptions beyond the base class's (lr, weight decay); `where` names the caller in errors.
template <class Options>  // AdamOptions, RAdamOptions
void check_adam_options(const std::string& where, const Options& o) {
  check(o.beta1 >= 0 && o.beta1 < 1, where, ": beta1 must be in [0, 1), got ", o.beta1);
  check(o.beta2 >= 0 && o.beta2 < 1, where, ": beta2 must be in [0, 1), got ", o.beta2);
  check(std::isfinite(o.eps) && o.eps >= 0, where, ": eps must be >= 0, got ", o.eps);
}
}  // namespace

Adam::Adam(NamedTensors params, const AdamOptions& o) : Adam(one_group(std::move(params)), o, false) {}
Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& o) : Adam(std::move(groups), o, false) {}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& o, bool decoupled)
    : Optimizer(decoupled ? "adamw" : "adam", std::move(groups), o.lr, {"m", "v"}, o.weight_decay,
                o.no_decay_on_norms_and_biases),
      opt_(o),
      decoupled_(decoupled) {
  check_adam_options(kind(), o);
}

std::vector<std::pair<std::string, double>> Adam::settings() const {
  return {{"beta1", opt_.beta1}, {"beta2", opt_.beta2}, {"eps", opt_.eps}};
}

void Adam::set_setting(const std::string& name, double value) {
  AdamOptions o = opt_;
  if (name == "beta1") o.beta1 = value;
  else if (name == "beta2") o.beta2 = value;
  else if (name == "eps") o.eps = value;
  else unknown_setting(*this, name);
  check_adam_options(std::string(kind()) + ".set_setting", o);
  opt_ = o;
}

// One parameter: the same update as a step in which it alone has a gradient.
void Adam::update(size_t i, Tensor&, const Tensor& grad, std::vector<Tensor>&) { update_all({{i, grad}}); }

void Adam::update_all(const std::vector<Pending>& todo) {
  fused_adam_update(todo, opt_.beta1, opt_.beta2, opt_.eps, decoupled_, 1, 1);
}

// One fused backend call per device and learning rate (one, without parameter groups of other lr_scale) for all
// parameters (see Backend::adam_update for the formula), each with its own weight decay. The backend needs
// contiguous tensors: a strided gradient is made contiguous, a strided parameter is updated in a contiguous copy
// that is written back after.
void Optimizer::fused_adam_update(const std::vector<Pending>& todo, double beta1, double beta2, double eps,
                                  bool decoupled, double lr_factor, double decay_factor) {
  std::vector<Tensor> ps, gs;  // the contiguous operands; reserved so that AdamTensors' pointers stay valid
  ps.reserve(todo.size());
  gs.reserve(todo.size());
  struct Call {  // one backend call: a device (one in practice: Module::to) and a learning rate
    Device device;
    double lr;
    std::vector<AdamTensors> ts;
  };
  std::vector<Call> calls;
  for (const Pending& u : todo) {
    const Tensor& param = params_[u.i].second;
    ps.push_back(param.is_contiguous() ? param : param.contiguous());
    gs.push_back(u.grad.is_contiguous() ? u.grad : u.grad.contiguous());
    const double lr = lr_ * lr_scale(u.i) * lr_factor;
    auto call = std::find_if(calls.begin(), calls.end(), [&](const Call& c) {
      return c.device == param.device() && c.lr == lr;
    });
    if (call == calls.end()) call = calls.insert(calls.end(), Call{param.device(), lr, {}});
    call->ts.push_back({&ps.back(), &gs.back(), &state_[u.i][0], &state_[u.i][1], weight_decay(u.i) * decay_factor});
  }
  for (const Pending& u : todo) {  // written in place by the fused kernel (counted first: a call may throw midway)
    Tensor& param = params_[u.i].second;
    if (param.is_contiguous()) param.bump_version();  // (a strided one is written by copy_ below, which counts)
    for (Tensor& s : state_[u.i]) s.bump_version();
  }
  for (Call& c : calls) backend_for(c.device).adam_update_many(c.ts, c.lr, beta1, beta2, eps, decoupled, steps_ + 1);
  for (size_t k = 0; k < todo.size(); k++) {
    Tensor& param = params_[todo[k].i].second;
    if (!param.is_contiguous()) param.copy_(ps[k]);
  }
}

// ---------------------------------------------------------------- RAdam

std::unique_ptr<Optimizer> make_adamw_or_radam(const std::string& name, std::vector<ParamGroup> groups,
                                               const AdamOptions& o, const std::string& who) {
  check(name == "adamw" || name == "radam", who, ": unknown optimizer '", name, "'; known: adamw, radam");
  if (name == "adamw") return std::make_unique<AdamW>(std::move(groups), o);
  return std::make_unique<RAdam>(std::move(groups),
                                 RAdamOptions{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                                              .weight_decay = o.weight_decay,
                                              .no_decay_on_norms_and_biases = o.no_decay_on_norms_and_biases,
                                              .decoupled_weight_decay = true});
}

std::vector<ParamGroup> lr_scale_groups(const NamedTensors& params, const PatternValues& lr_scale_at,
                                        const std::string& who) {
  std::vector<double> scale(params.size(), 1.0);
  for (const auto& [pattern, value] : lr_scale_at) {
    check(std::isfinite(value) && value >= 0, who, ": the learning-rate scale for '", pattern, "' must be a finite ",
          "number >= 0, got ", value);
    size_t matched = 0;
    for (size_t i = 0; i < params.size(); i++)
      if (name_matches(pattern, params[i].first)) scale[i] = value, matched++;
    if (matched == 0) {
      std::string some;  // a few names, to show their form
      for (size_t i = 0; i < params.size() && i < 6; i++) some += (i ? ", " : "") + params[i].first;
      fail(who, ": the pattern '", pattern, "' matches no parameter; they are named like ", some,
           params.size() > 6 ? ", ... (" + std::to_string(params.size()) + " in all)" : std::string());
    }
  }
  std::vector<ParamGroup> groups;
  for (size_t i = 0; i < params.size(); i++) {
    auto g = std::find_if(groups.begin(), groups.end(), [&](const ParamGroup& x) { return x.lr_scale == scale[i]; });
    if (g == groups.end()) g = groups.insert(groups.end(), ParamGroup{.params = {}, .lr_scale = scale[i]});
    g->params.push_back(params[i]);
  }
  return groups.empty() ? one_group({}) : groups;
}

PatternValues parse_lr_scale_at(const std::string& text) {
  return parse_pattern_values(text, "lr_scale_at", "SCALE", "\"*.alpha=10\"");
}

std::string lr_scale_at_note(const PatternValues& lr_scale_at) {
  return lr_scale_at.empty() ? "" : " (--lr-scale-at " + pattern_values_text(lr_scale_at) + ")";
}

std::string lr_scales_summary(const Optimizer& opt) {
  std::vector<std::pair<double, std::vector<std::string>>> by_scale;  // in the order the scales first appear
  for (size_t i = 0; i < opt.named_params().size(); i++) {
    const double scale = opt.lr_scale(i);
    if (scale == 1) continue;
    auto s = std::find_if(by_scale.begin(), by_scale.end(), [&](const auto& e) { return e.first == scale; });
    if (s == by_scale.end()) s = by_scale.insert(by_scale.end(), {scale, {}});
    s->second.push_back(opt.named_params()[i].first);
  }
  std::string out;
  for (const auto& [scale, names] : by_scale) {
    out += (out.empty() ? "lr x" : "; lr x") + number_str(scale) + ": " + std::to_string(names.size()) +
           (names.size() == 1 ? " parameter (" : " parameters (") + names[0] + (names.size() > 1 ? ", ...)" : ")");
  }
  return out;
}

RAdam::RAdam(NamedTensors params, const RAdamOptions& o) : RAdam(one_group(std::move(params)), o) {}

RAdam::RAdam(std::vector<ParamGroup> groups, const RAdamOptions& o)
    : Optimizer("radam", std::move(groups), o.lr, {"m", "v"}, o.weight_decay, o.no_decay_on_norms_and_biases),
      opt_(o) {
  check_adam_options("radam", o);
}

std::vector<std::pair<std::string, double>> RAdam::settings() const {
  return {{"beta1", opt_.beta1}, {"beta2", opt_.beta2}, {"eps", opt_.eps},
          {"decoupled_weight_decay", opt_.decoupled_weight_decay ? 1.0 : 0.0}};
}

void RAdam::set_setting(const std::string& name, double value) {
  RAdamOptions o = opt_;
  if (name == "beta1") o.beta1 = value;
  else if (name == "beta2") o.beta2 = value;
  else if (name == "eps") o.eps = value;
  else if (name == "decoupled_weight_decay") {
    check(value == 0 || value == 1, "radam.set_setting", ": decoupled_weight_decay must be 1 or 0, got ", value);
    o.decoupled_weight_decay = value == 1;
  } else {
    unknown_setting(*this, name);
  }
  check_adam_options("radam.set_setting", o);
  opt_ = o;
}

double RAdam::rho(double beta2, int64_t step) {
  const double t = double(step), rho_inf = 2 / (1 - beta2) - 1;
  return rho_inf - 2 * t * std::pow(beta2, t) / (1 - std::pow(beta2, t));
}

// An SGD step (ρ_t <= 5): m and v move as Adam's, p -= lr m̂.
RAdam::Next RAdam::next_values(size_t i, const Tensor& param, const Tensor& grad,
                               const std::vector<Tensor>& state) const {
  const double lr = lr_ * lr_scale(i), wd = weight_decay(i), b1 = opt_.beta1, b2 = opt_.beta2;
  Tensor p = param, g = grad;
  if (wd != 0 && opt_.decoupled_weight_decay) p = mul(param, 1 - lr * wd);
  if (wd != 0 && !opt_.decoupled_weight_decay) g = add(g, mul(param, wd));
  Next n;
  n.m = add(mul(state[0], b1), mul(g, 1 - b1));
  n.v = add(mul(state[1], b2), mul(mul(g, g), 1 - b2));
  n.param = sub(p, mul(n.m, lr / (1 - std::pow(b1, double(steps_ + 1)))));
  return n;
}

void RAdam::update(size_t i, Tensor&, const Tensor& grad, std::vector<Tensor>&) { update_all({{i, grad}}); }

void RAdam::update_all(const std::vector<Pending>& todo) {
  const double b2 = opt_.beta2, rho_t = rho(b2, steps_ + 1);
  if (rho_t > 5) {  // the variance of the adaptive step is tractable: Adam's step, rectified
    const double rho_inf = 2 / (1 - b2) - 1, bc2 = 1 - std::pow(b2, double(steps_ + 1));
    const double rect = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
    // Adam's kernel: p -= lr'/bc1 · m / (sqrt(v)/sqrt(bc2) + eps'), with lr' = lr r_t and eps' = eps / sqrt(bc2)
    // that is lr r_t sqrt(bc2)/bc1 · m / (sqrt(v) + eps); AdamW's decay p *= 1 - lr' wd' with wd' = wd / r_t
    fused_adam_update(todo, opt_.beta1, b2, opt_.eps / std::sqrt(bc2), opt_.decoupled_weight_decay, rect,
                      opt_.decoupled_weight_decay ? 1 / rect : 1);
    return;
  }
  // SGD with momentum. Every parameter's new values first, then the copies: a step that fails (out of memory)
  // changes nothing.
  std::vector<Next> next;
  next.reserve(todo.size());
  for (const Pending& u : todo) next.push_back(next_values(u.i, params_[u.i].second, u.grad, state_[u.i]));
  for (size_t k = 0; k < todo.size(); k++) {
    state_[todo[k].i][0].copy_(next[k].m);
    state_[todo[k].i][1].copy_(next[k].v);
    params_[todo[k].i].second.copy_(next[k].param);
  }
}

}  // namespace skipgrad::nn
