#include "nn/module.h"

#include <algorithm>

#include "autograd/node.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

void Module::check_new_name(const char* op, const std::string& name) const {
  const std::string where = name_.empty() ? "the module" : "'" + name_ + "'";
  check(!name.empty() && name.find('.') == std::string::npos, op, ": '", name, "' in ", where,
        " is not a name: it must be non-empty and without '.' (dots join the names of nested modules)");
  const char* taken = nullptr;
  for (auto& entry : params_) taken = entry.first == name ? "a parameter" : taken;
  for (auto& entry : buffers_) taken = entry.first == name ? "a buffer" : taken;
  for (auto& entry : children_) taken = entry.first == name ? "a child module" : taken;
  if (taken) fail(op, ": '", name, "' is registered twice in ", where, " (it is already ", taken, ")");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  check(t.defined(), "register_parameter", ": parameter '", name, "' is undefined");
  if (!is_floating(t.dtype()))
    fail("register_parameter", ": parameter '", name, "' must be floating, got ", t.meta_str());
  check_new_name("register_parameter", name);
  // (torch: "cannot assign non-leaf Tensor to parameter"; a detached copy would cut the graph without a word)
  check(t.is_leaf(), "register_parameter", ": parameter '", name, "' ", t.meta_str(),
        " is the result of a recorded op; register a leaf (t.detach(), or make it under NoGradGuard)");
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::tie_parameter(const std::string& name, const Tensor& shared) {
  const char* op = "tie_parameter";
  const std::string who = name_.empty() ? "the module" : "'" + name_ + "'";  // (a module not registered: no name)
  const std::string param = "'" + (name_.empty() ? name : name_ + "." + name) + "'";
  auto it = std::find_if(params_.begin(), params_.end(), [&](const auto& entry) { return entry.first == name; });
  if (it == params_.end()) {
    std::string names;
    for (auto& [n, p] : params_) names += " " + n;
    fail(op, ": ", who, " has no parameter '", name, "'; it has:", names.empty() ? " none" : names);
  }
  check(shared.defined() && shared.is_leaf() && shared.requires_grad(), op, ": ", param,
        " can be tied to another module's parameter only (a leaf that requires grad), got ",
        shared.defined() ? shared.meta_str() : "an undefined tensor");
  const Tensor& old = it->second;
  if (!(old.shape() == shared.shape() && old.dtype() == shared.dtype() && old.device() == shared.device()))
    fail(op, ": ", param, " is ", old.meta_str(), ", the tensor to tie it to ", shared.meta_str());
  it->second = shared;
  return it->second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check(t.defined(), "register_buffer", ": buffer '", name, "' is undefined");
  check_new_name("register_buffer", name);
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

Tensor& Module::register_constant_buffer(const std::string& name, Tensor t) {
  check(t.defined() && is_floating(t.dtype()), "register_constant_buffer", ": buffer '", name,
        "' must be floating, got ", t.defined() ? t.meta_str() : "an undefined tensor");
  Tensor& b = register_buffer(name, std::move(t));
  constant_buffers_.insert(name);
  return b;
}

void Module::check_loaded_buffer(const std::string& name, const Tensor& value, const std::string& context) const {
  if (!constant_buffers_.count(name)) return;
  const auto own =
      std::find_if(buffers_.begin(), buffers_.end(), [&](const auto& entry) { return entry.first == name; });
  const std::vector<float> want = own->second.to(Device::cpu()).to(DType::F32).contiguous().to_vector<float>(),
                           got = value.to(Device::cpu()).to(DType::F32).contiguous().to_vector<float>();
  for (size_t i = 0; i < want.size(); i++) {
    if (got[i] == want[i]) continue;  // (a NaN never is)
    std::vector<int64_t> index(own->second.dim());  // the element's index, for the message
    int64_t rest = (int64_t)i;
    for (int64_t d = own->second.dim() - 1; d >= 0; d--) {
      index[d] = rest % own->second.size(d);
      rest /= own->second.size(d);
    }
    fail(context, " holds ", got[i], " at ", Shape(index), " where the module's settings give ", want[i],
         ": the buffer follows from them, so the file was edited or saved with other settings");
  }
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(const std::string& prefix,
                                                                     bool remove_duplicate) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  collect_parameters(prefix, &out, nullptr, remove_duplicate ? &seen : nullptr);
  return out;
}

// The same order as named_parameters, without building the names (training loops call this every step).
std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  std::unordered_set<const TensorImpl*> seen;
  collect_parameters("", nullptr, &out, &seen);
  return out;
}

void Module::collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* named,
                                std::vector<Tensor>* plain, std::unordered_set<const TensorImpl*>* seen) const {
  const std::string p = prefix.empty() ? "" : prefix + ".";
  for (auto& [n, t] : params_) {
    if (seen && !seen->insert(&t.impl()).second) continue;  // tied: listed under its first name
    if (named) named->emplace_back(p + n, t);
    if (plain) plain->push_back(t);
  }
  for (auto& [n, c] : children_) c->collect_parameters(named ? p + n : "", named, plain, seen);
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  const std::string p = prefix.empty() ? "" : prefix + ".";
  for (auto& [n, t] : buffers_) out.emplace_back(p + n, t);
  for (auto& [n, c] : children_) {
    auto sub = c->named_buffers(p + n);
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

Tensor Module::parameter(const std::string& full_name) const {
  for (auto& [n, t] : named_parameters("", /*remove_duplicate=*/false))  // a tied parameter's every name
    if (n == full_name) return t;
  std::string close;
  for (auto& [n, t] : named_parameters())
    if (n.find(full_name.substr(full_name.rfind('.') + 1)) != std::string::npos && close.size() < 300)
      close += " " + n;
  fail("Module::parameter", ": no parameter named '", full_name, "'", close.empty() ? "" : "; similar:", close);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& t : parameters()) n += t.numel();
  return n;
}

void Module::name_parameters(const std::string& prefix) {
  for (auto& [n, t] : named_parameters(prefix)) t.ensure_autograd_meta().name = n;
}

// A function step opens scope "i" itself; a module step's forward opens its own (its name is "i").
void Sequential::push_back(Step f) {
  check(f != nullptr, "Sequential::push_back", ": step ", steps_.size(), " of '", name_, "' is an empty function");
  steps_.push_back([f = std::move(f), i = steps_.size()](const Tensor& x) {
    Scope step(std::to_string(i));
    return f(x);
  });
}

Tensor Sequential::forward(const Tensor& x) {
  Scope s(name());
  Tensor y = x;
  for (const Step& step : steps_) y = step(y);
  return y;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::walk_once(const std::string& prefix, const std::function<void(const std::string&, Module&)>& pre,
                       const std::function<void(Module&)>& post) {
  std::unordered_set<const Module*> seen;
  std::function<void(Module&, const std::string&)> visit = [&](Module& m, const std::string& path) {
    if (!seen.insert(&m).second) return;
    if (pre) pre(path, m);
    for (auto& [name, child] : m.children_) visit(*child, path.empty() ? name : path + "." + name);
    if (post) post(m);
  };
  visit(*this, prefix);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out;
  walk_once(prefix, [&](const std::string& path, Module& m) { out.emplace_back(path, &m); }, nullptr);
  return out;
}

void Module::apply(const std::function<void(Module&)>& fn) { walk_once("", nullptr, fn); }

void Module::zero_grad() {
  for (auto& [n, t] : params_) t.zero_grad();
  for (auto& [n, c] : children_) c->zero_grad();
}

// Parameters are changed in place (same TensorImpl), so every handle a module holds sees the new data.
static void replace_data(Tensor& t, const Tensor& moved) {
  TensorImpl& im = t.impl();
  // a write of new memory: a node that saved t sees it changed (the count goes on from the old memory's)
  moved.impl().storage->version.store(t.version() + 1, std::memory_order_relaxed);
  im.storage = moved.impl().storage;
  im.shape = moved.shape();
  im.strides = moved.strides();
  im.offset = moved.offset();
  im.dtype = moved.dtype();
  im.device = moved.device();
  if (im.autograd) {  // an accumulated gradient moves with its parameter (torch's Module.to converts .grad too)
    Tensor& g = im.autograd->grad;
    if (g.defined()) g = g.to(moved.device()).to(moved.dtype());
    im.autograd->device = im.device;
    im.autograd->dtype = im.dtype;
  }
}

void Module::to(Device device) {
  for (auto& [n, t] : params_)
    if (t.device() != device) replace_data(t, t.detach().to(device));
  for (auto& [n, b] : buffers_)
    if (b.device() != device) replace_data(b, b.detach().to(device));
  for (auto& [n, c] : children_) c->to(device);
}

Device Module::device() const {
  for (const Tensor& t : parameters()) return t.device();
  for (auto& [n, b] : named_buffers()) return b.device();
  return Device::cpu();
}

void Module::to(DType dtype) {
  if (!is_floating(dtype))  // parameters must stay floating (PyTorch's Module.to refuses too)
    fail("Module::to", ": a module casts to a floating dtype only, got ", dtype_name(dtype));
  for (auto& [n, t] : params_)
    if (t.dtype() != dtype) replace_data(t, t.detach().to(dtype));
  for (auto& [n, b] : buffers_)
    if (is_floating(b.dtype()) && b.dtype() != dtype) replace_data(b, b.detach().to(dtype));
  for (auto& [n, c] : children_) c->to(dtype);
}

std::vector<std::string> parameters_without_grad(const Module& model) {
  std::vector<std::string> out;
  for (const auto& [name, t] : model.named_parameters())
    if (t.requires_grad() && !t.grad().defined()) out.push_back(name);
  return out;
}

std::string without_grad_warning(const std::vector<std::string>& names, size_t shown) {
  if (names.empty()) return "";
  std::string s = std::to_string(names.size()) + (names.size() == 1 ? " parameter" : " parameters") +
                  " got no gradient in the first step (the forward does not use them; a module built but never "
                  "called?): ";
  for (size_t i = 0; i < names.size() && i < shown; i++) s += (i ? ", " : "") + names[i];
  if (names.size() > shown) s += ", ...";
  return s;
}

}  // namespace skipgrad::nn
