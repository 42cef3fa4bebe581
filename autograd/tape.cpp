#include "autograd/tape.h"

#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/tape_internal.h"
#include "backends/backend.h"

namespace skipgrad {

// ---------------------------------------------------------------- node helpers

size_t Node::saved_bytes() const {
  size_t b = 0;
  for (const Tensor& t : saved)
    if (t.defined()) b += t.nbytes();
  return b;
}

std::string param_str(const ParamValue& v) {
  std::ostringstream os;
  std::visit([&](const auto& x) {
    using T = std::decay_t<decltype(x)>;
    if constexpr (std::is_same_v<T, Shape>) os << shape_str(x);
    else if constexpr (std::is_same_v<T, bool>) os << (x ? "true" : "false");
    else os << x;
  }, v);
  return os.str();
}

// ---------------------------------------------------------------- tape

Tape& current_tape() {
  thread_local Tape tape;
  return tape;
}

Node* Tape::find(int64_t id) const {
  if (nodes_.empty()) return nullptr;
  int64_t first = nodes_.front()->id;
  int64_t i = id - first;
  return (i >= 0 && i < (int64_t)nodes_.size()) ? nodes_[i].get() : nullptr;
}

Node& Tape::append(std::unique_ptr<Node> n) {
  n->id = next_id_++;
  nodes_.push_back(std::move(n));
  return *nodes_.back();
}

namespace detail {
thread_local bool t_in_backward = false;
thread_local bool t_in_node_backward = false;
}  // namespace detail

void Tape::clear() {
  check(!detail::t_in_backward, "Tape::clear", ": called inside a backward (from a gradient hook? gradcheck() clears the "
        "tape too), which still walks it; do it after backward returns");
  release();
}

void Tape::release() {
  for (auto& n : nodes_)
    if (n->output && n->output->producer == n.get()) {
      n->output->producer = nullptr;
      n->output->name = std::move(n->name);  // remembered for the error if a later backward reaches it
    }
  nodes_.clear();
}

// ---------------------------------------------------------------- modes and scopes

namespace {
thread_local bool t_grad_enabled = true;
thread_local std::vector<std::string> t_scopes;
// Per thread, as grad mode and autocast: a thread's guard cannot switch another thread's backward mid-walk, and
// guards in two threads cannot leave the other's setting behind when they end out of order. A new thread starts
// from the defaults (anomaly off, tracking on), not from the setting of the thread that made it.
thread_local bool t_anomaly = false;
thread_local bool t_track_norms = true;
// Held while a tensor that requires no grad (data, masks) gets its metadata on first use, and while record()
// copies that metadata: several threads may record ops on one shared input (docs/reliability.md, "Threads").
std::mutex g_input_meta_mutex;
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(t_grad_enabled) { t_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { t_grad_enabled = prev_; }

void set_anomaly_mode(bool on) { t_anomaly = on; }
bool anomaly_mode() { return t_anomaly; }
AnomalyGuard::AnomalyGuard(bool on) : prev_(t_anomaly) { t_anomaly = on; }
AnomalyGuard::~AnomalyGuard() { t_anomaly = prev_; }

void set_track_grad_norms(bool on) { t_track_norms = on; }
bool track_grad_norms() { return t_track_norms; }
TrackGradNormsGuard::TrackGradNormsGuard(bool on) : prev_(t_track_norms) { t_track_norms = on; }
TrackGradNormsGuard::~TrackGradNormsGuard() { t_track_norms = prev_; }

// t_scopes holds the joined name of every open scope ("enc", "enc.3", "enc.3.ffn"): a node's name is then one
// concatenation, not a join of the whole stack per recorded op. Empty parts are skipped.
Scope::Scope(const std::string& name) {
  std::string joined = t_scopes.empty() || t_scopes.back().empty() ? name
                       : name.empty()                              ? t_scopes.back()
                                                                   : t_scopes.back() + "." + name;
  t_scopes.push_back(std::move(joined));
}
Scope::~Scope() { t_scopes.pop_back(); }

std::string current_scope() { return t_scopes.empty() ? std::string() : t_scopes.back(); }
// An out-of-memory message names the scope of the op that asked (tensor/error.h)
[[maybe_unused]] static const bool g_oom_context_set = (set_oom_context(&current_scope), true);
std::string current_scope_or(std::string_view fallback) {
  std::string scope = current_scope();  // "" also inside the scope of a module that has no name
  return scope.empty() ? std::string(fallback) : scope;
}
std::string scoped(std::string_view leaf) {
  if (t_scopes.empty() || t_scopes.back().empty()) return std::string(leaf);
  const std::string& prefix = t_scopes.back();
  std::string s;
  s.reserve(prefix.size() + 1 + leaf.size());
  s += prefix;
  s += '.';
  s += leaf;
  return s;
}

// ---------------------------------------------------------------- recording

AutogradMeta& Tensor::ensure_autograd_meta() const {
  TensorImpl& im = impl();
  if (!im.autograd) {
    im.autograd = std::make_shared<AutogradMeta>();
    im.autograd->shape = im.shape;
    im.autograd->dtype = im.dtype;
    im.autograd->device = im.device;
    im.autograd->value = impl_ptr();
    im.autograd_published.store(im.autograd.get(), std::memory_order_release);
  }
  return *im.autograd;
}

bool should_record(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void detail::fail_if_nonfinite(const Tensor& t, const std::string& who, const std::string& what) {
  if (!t.defined() || !is_floating(t.dtype())) return;
  if (int64_t bad = backend_for(t.device()).count_nonfinite(t))
    fail("anomaly", ": ", who, " produced ", bad, " NaN/Inf values in ", what, " ", t.meta_str());
}

void check_finite(const Tensor& t, const char* op) {
  if (t_anomaly) detail::fail_if_nonfinite(t, "forward op '" + std::string(op) + "' in scope '" + current_scope() + "'",
                                   "its output");
}

Node* record(const OpInfo& op, const std::vector<Tensor>& inputs, Tensor& out, std::vector<Tensor> saved,
             BackwardFn backward, OpParams params) {
  if (!should_record(inputs)) {
    check_finite(out, op.name);
    if (Profiler* p = detail::current_profiler(); p && !detail::t_in_node_backward)
      p->mark(scoped(op.name), op.name, ProfilePhase::Forward);
    return nullptr;
  }
  if (op.arity >= 0 && inputs.size() != (size_t)op.arity)  // a bug in the op, caught by any test that runs it
    fail("record", ": op '", op.name, "' recorded with ", inputs.size(), " inputs; the op table says ", op.arity);
  auto node = std::make_unique<Node>();
  node->op = &op;
  node->name = scoped(op.name);
  node->inputs.reserve(inputs.size());
  node->input_requires_grad.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    node->input_requires_grad.push_back(t.defined() && t.requires_grad());
    if (!t.defined()) {
      node->inputs.push_back(nullptr);
    } else if (t.requires_grad()) {  // has metadata already, and a graph of its thread
      node->inputs.push_back(t.impl().autograd);
    } else {  // data or a mask, maybe shared with other threads recording at the same time
      std::lock_guard<std::mutex> lock(g_input_meta_mutex);
      t.ensure_autograd_meta();
      node->inputs.push_back(t.impl().autograd);
    }
  }
  // The output gets fresh metadata: a tensor is produced by exactly one node. An op that hands back one of its
  // inputs must not record (it would cut that input from its own graph): a bug in the op, caught here.
  for (const Tensor& t : inputs)
    if (t.defined() && t.impl_ptr() == out.impl_ptr())
      fail("record", ": op '", op.name, "' returned its input as its output; return it without recording");
  out.impl().autograd_published.store(nullptr, std::memory_order_relaxed);  // unpublished before it is freed
  out.impl().autograd.reset();
  AutogradMeta& om = out.ensure_autograd_meta();
  om.requires_grad = true;
  om.produced = true;
  node->output = out.impl().autograd;
  node->saved = std::move(saved);
  node->saved_versions.reserve(node->saved.size());
  for (const Tensor& t : node->saved) node->saved_versions.push_back(t.defined() ? t.version() : 0);
  node->backward = std::move(backward);
  node->params = std::move(params);
  Tape& tape = current_tape();
  Node& n = tape.append(std::move(node));
  om.producer = &n;
  om.tape = &tape;
  if (t_anomaly)
    detail::fail_if_nonfinite(out, "forward op '" + std::string(op.name) + "' (node " + n.name + ")", "its output");
  if (Profiler* p = detail::current_profiler()) p->mark(n.name, op.name, ProfilePhase::Forward, n.id);
  return &n;
}

// ---------------------------------------------------------------- Tensor's autograd methods

bool Tensor::requires_grad() const { return autograd_meta() && autograd_meta()->requires_grad; }

Tensor& Tensor::requires_grad_(bool on) {
  check(defined(), "requires_grad_", ": the tensor is an undefined tensor");
  if (on && !is_floating(dtype()))
    fail("requires_grad_", ": only floating tensors can require grad, got ", meta_str());
  check(is_leaf() || on, "requires_grad_", ": cannot turn off requires_grad of a non-leaf tensor; use detach()");
  ensure_autograd_meta().requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const { return !autograd_meta() || !autograd_meta()->produced; }

Tensor Tensor::grad() const { return autograd_meta() ? autograd_meta()->grad : Tensor(); }
void Tensor::set_grad(const Tensor& g) {
  check(defined(), "set_grad", ": the tensor is an undefined tensor");
  if (g.defined() && (g.shape() != shape() || g.dtype() != dtype() || g.device() != device()))
    fail("set_grad", ": gradient ", g.meta_str(), " does not match the tensor ", meta_str());
  ensure_autograd_meta().grad = g;
}
void Tensor::zero_grad() {
  if (autograd_meta()) autograd_meta()->grad = Tensor();
}
void Tensor::retain_grad() {
  check(defined(), "retain_grad", ": the tensor is an undefined tensor");
  if (!requires_grad()) fail("retain_grad", ": tensor ", meta_str(), " does not require grad");
  ensure_autograd_meta().retain_grad = true;
}

Tensor Tensor::detach() const {
  check(defined(), "detach", ": the tensor is an undefined tensor");
  return make_view(*this, shape(), strides(), offset());
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const { skipgrad::backward(*this, grad, retain_graph); }

void Tensor::register_hook(std::function<Tensor(const Tensor&)> hook) {
  check(defined(), "register_hook", ": the tensor is an undefined tensor");
  if (!requires_grad()) fail("register_hook", ": tensor ", meta_str(), " does not require grad");
  ensure_autograd_meta().hooks.push_back(std::move(hook));
}

Tensor& Tensor::named(const std::string& name) {
  AutogradMeta* m = autograd_meta();
  if (m && m->producer) {
    m->producer->name = scoped(name);
    if (Profiler* p = detail::current_profiler()) p->renamed(m->producer->id, m->producer->name);
  } else if (m && requires_grad()) {
    m->name = scoped(name);
  } else if (defined() && t_grad_enabled) {  // data, a mask: metadata as record() gives an input, under its lock
    // (in no-grad mode nothing is recorded, so nothing would show the name: evaluation and decoding skip the lock)
    std::lock_guard<std::mutex> lock(g_input_meta_mutex);
    ensure_autograd_meta().name = scoped(name);
  }
  return *this;
}

std::string Tensor::node_name() const {
  AutogradMeta* m = autograd_meta();
  if (!m) return "";
  return m->producer ? m->producer->name : m->name;
}

int64_t Tensor::node_id() const {
  AutogradMeta* m = autograd_meta();
  return m && m->producer ? m->producer->id : -1;
}

}  // namespace skipgrad
