#include "autograd/tape.h"

#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/profiler.h"
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

namespace {
// True while this thread's backward() walks its tape: a backward, Tape::clear() or gradcheck() from inside it (a hook)
// would free the nodes being walked. Off before backward's own clear.
thread_local bool t_in_backward = false;
struct InBackward {
  InBackward() { t_in_backward = true; }
  ~InBackward() { t_in_backward = false; }
  void done() { t_in_backward = false; }
};
}  // namespace

void Tape::clear() {
  check(!t_in_backward, "Tape::clear", ": called inside a backward (from a gradient hook? gradcheck() clears the "
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
// True while backward_node runs: the ops a node's backward calls (matmul, sum, casts) are part of that node's
// backward interval in a profile, not forward intervals of their own.
thread_local bool t_in_node_backward = false;
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

namespace {
// Anomaly mode's check: "anomaly: <who> produced N NaN/Inf values in <what> float32[2,4] cpu" (one host wait).
void fail_if_nonfinite(const Tensor& t, const std::string& who, const std::string& what) {
  if (!t.defined() || !is_floating(t.dtype())) return;
  if (int64_t bad = backend_for(t.device()).count_nonfinite(t))
    fail("anomaly", ": ", who, " produced ", bad, " NaN/Inf values in ", what, " ", t.meta_str());
}
}  // namespace

void check_finite(const Tensor& t, const char* op) {
  if (t_anomaly) fail_if_nonfinite(t, "forward op '" + std::string(op) + "' in scope '" + current_scope() + "'",
                                   "its output");
}

Node* record(const OpInfo& op, const std::vector<Tensor>& inputs, Tensor& out, std::vector<Tensor> saved,
             BackwardFn backward, OpParams params) {
  if (!should_record(inputs)) {
    check_finite(out, op.name);
    if (profiling() && !t_in_node_backward) detail::t_profiler->mark(scoped(op.name), op.name, ProfilePhase::Forward);
    return nullptr;
  }
  if (op.arity >= 0 && inputs.size() != (size_t)op.arity)  // a bug in the op, caught by any test that runs it
    fail("record", ": op '", op.name, "' recorded with ", inputs.size(), " inputs; the op table says ", op.arity);
  auto node = std::make_unique<Node>();
  node->op = &op;
  node->name = scoped(op.name);
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
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
  node->backward = std::move(backward);
  node->params = std::move(params);
  Tape& tape = current_tape();
  Node& n = tape.append(std::move(node));
  om.producer = &n;
  om.tape = &tape;
  if (t_anomaly)
    fail_if_nonfinite(out, "forward op '" + std::string(op.name) + "' (node " + n.name + ")", "its output");
  if (profiling()) detail::t_profiler->mark(n.name, op.name, ProfilePhase::Forward, n.id);
  return &n;
}

// ---------------------------------------------------------------- backward

namespace {
thread_local FanInSums t_fan_in;
}  // namespace
FanInSums last_backward_fan_in() { return t_fan_in; }

namespace {
// The source of m when m is a bfloat16 cast (to_dtype) of a float32 tensor on the live tape whose gradient no tensor
// hook or retain_grad observes; else null. Only that pair: a float32 result of bf16 operands is what the kernels
// make (GemmArgs::c_float32); a cast from float64, or to float32, keeps its own dtype's gradient.
AutogradMeta* cast_source(const AutogradMeta* m) {
  static const OpInfo* cast = &op_info("to_dtype");
  const Node* p = m ? m->producer : nullptr;
  if (!p || p->op != cast || m->retain_grad || !m->hooks.empty() || m->dtype != DType::BF16) return nullptr;
  const AutogradMeta* source = p->inputs[0].get();
  return source && source->dtype == DType::F32 ? p->inputs[0].get() : nullptr;
}
}  // namespace

DType grad_dtype(const Node& n, size_t j) {
  const AutogradMeta* m = n.inputs.at(j).get();
  const AutogradMeta* source = cast_source(m);
  return source ? source->dtype : m ? m->dtype : DType::F32;
}

namespace {
// A leaf's gradient during a walk is the walk's own (the leaves of a model shared by threads are shared): kept in the
// backward's map, not in the leaf's `pending`, and added to its .grad under g_leaf_grad_mutex at the end.
thread_local std::unordered_map<AutogradMeta*, Tensor>* t_leaf_pending = nullptr;
std::mutex g_leaf_grad_mutex;
// The gradient collected so far for m in this thread's walk.
Tensor& pending_of(AutogradMeta& m) { return !m.producer && t_leaf_pending ? (*t_leaf_pending)[&m] : m.pending; }
}  // namespace

Tensor take_grad_accumulator(const Node& n, size_t j, DType dtype) {
  AutogradMeta* m = j < n.inputs.size() ? n.inputs[j].get() : nullptr;
  if (!m) return Tensor();
  // Through a cast (autocast's bf16 copy of a float32 activation) with no gradient of its own yet, when the share
  // comes in the source's dtype (grad_dtype): the source's gradient so far, which the cast's backward then passes
  // back to it, sum included. The cast's own gradient is then that sum, not its share: only where nothing reads it
  // (no gradient-norm tracking, no node hook).
  if (AutogradMeta* source = cast_source(m);
      source && !m->pending.defined() && source->dtype == dtype && !t_track_norms && m->producer->hooks.empty())
    m = source;
  Tensor& pending = pending_of(*m);
  if (!pending.defined()) return Tensor();
  // sole_owner: no other tensor (the caller's own upstream gradient, a retained .grad, a saved tensor) shares it
  if (!pending.sole_owner() || pending.dtype() != dtype) return Tensor();
  t_fan_in.folded++;
  return std::move(pending);
}

namespace {
// acc = acc + g (out of place: g may alias another tensor's gradient).
void accumulate(Tensor& acc, const Tensor& g) { acc = acc.defined() ? add(acc, g) : g; }

// The gradient norms of a backward walk (set_track_grad_norms). On the CPU each is read at once; on a GPU they
// stay on the device until the walk ends and come back in one copy, so tracking costs one wait, not one per node.
struct NormTracker {
  std::vector<std::pair<Node*, Tensor>> on_device;
  void add(Node& n, const Tensor& g) {
    // Kept in double (norm_many): not rounded to bf16's 8 bits, no float32 overflow past 3.4e38. On a GPU a float32
    // or float64 gradient takes one reduction in its own dtype instead (norm_many uploads a table per call).
    if (g.device().is_cpu()) {
      n.grad_norm = norm2_f64({g}).item();
    } else {
      on_device.emplace_back(&n, g.dtype() == DType::BF16 ? norm2_f64({g}) : norm2(g).to(DType::F64));
    }
  }
  void read_back() {
    if (on_device.empty()) return;
    std::vector<Tensor> parts;
    for (auto& [n, s] : on_device) parts.push_back(s);
    const std::vector<double> v = concat(parts, 0).to_vector<double>();
    for (size_t i = 0; i < v.size(); i++) on_device[i].first->grad_norm = v[i];
    on_device.clear();
  }
};

// Runs `hooks` on g in order; a hook returning a defined tensor replaces the gradient (with one of g's shape, dtype
// and device: anything else would reach .grad or the next backward unnoticed).
// The list is a copy: a hook may register more hooks on the same tensor (they run from the next backward on).
Tensor run_hooks(std::vector<std::function<Tensor(const Tensor&)>> hooks, Tensor g) {
  for (auto& h : hooks) {
    Tensor r = h(g);
    if (!r.defined()) continue;
    if (r.shape() != g.shape() || r.dtype() != g.dtype() || r.device() != g.device())
      fail("backward", ": a gradient hook returned ", r.meta_str(), " for the gradient ", g.meta_str(),
           " (a hook may change the values only)");
    g = r;
  }
  return g;
}

// Why a graph is no longer on the tape, for the errors that find it gone.
constexpr const char* kGraphGone =
    "a backward without retain_graph clears the calling thread's whole tape, every graph recorded until then "
    "(this one too; pass retain_graph=true to keep them), as do Tape::clear() and gradcheck(); or it was recorded on "
    "a thread that has ended";

// While it lives, the ops run are part of a backward's bookkeeping and take no profile mark of their own.
struct InNodeBackward {
  bool outer = std::exchange(t_in_node_backward, true);
  ~InNodeBackward() { t_in_node_backward = outer; }
};

// One node of the reverse walk: take its output gradient, call its backward, pass the results to its inputs.
void backward_node(Node& n, bool retain_graph, const std::function<void(AutogradMeta&, const Tensor&)>& add_to,
                   NormTracker& norms) {
  InNodeBackward in_node_backward;
  AutogradMeta& om = *n.output;
  Tensor g = run_hooks(om.hooks, std::move(om.pending));
  om.pending = Tensor();
  if (om.retain_grad) accumulate(om.grad, g);
  for (auto& h : n.hooks) h(n, g);
  if (t_track_norms) norms.add(n, g);
  if (!n.backward)
    fail("backward", ": node '", n.name, "' was already run by an earlier backward (pass retain_graph=true to "
         "backward twice)");
  std::vector<Tensor> grads = n.backward(n, g);
  if (grads.size() != n.inputs.size())
    fail("backward", ": op '", n.op->name, "' returned ", grads.size(), " gradients for ", n.inputs.size(),
         " inputs");
  for (size_t j = 0; j < grads.size(); j++) {
    AutogradMeta* im = n.inputs[j].get();
    if (!im || !im->requires_grad || !grads[j].defined()) continue;
    if (grads[j].shape() != im->shape)
      fail("backward", ": op '", n.op->name, "' (node ", n.name, ") returned a gradient of shape ", grads[j].shape(),
           " for input ", j, " of shape ", im->shape);
    // A gradient comes in its tensor's dtype (as in PyTorch's engine): a mixed float32/bf16 op's float32 gradient
    // for its bf16 input is rounded here, unless the input is a cast that takes its source's dtype (grad_dtype).
    if (grads[j].dtype() != im->dtype && grads[j].dtype() != grad_dtype(n, j)) grads[j] = grads[j].to(im->dtype);
    if (t_anomaly)
      fail_if_nonfinite(grads[j], "backward of op '" + std::string(n.op->name) + "' (node " + n.name + ")",
                        "the gradient of input " + std::to_string(j));
    if (!im->producer && im->produced)
      fail("backward", ": the gradient reached '", im->name, "', whose graph was freed: ", kGraphGone);
    add_to(*im, grads[j]);
  }
  if (!retain_graph) {
    n.saved.clear();
    n.backward = nullptr;
  }
  if (profiling()) detail::t_profiler->mark(n.name, n.op->name, ProfilePhase::Backward);
}
}  // namespace

void backward(const Tensor& root, const Tensor& grad_in, bool retain_graph) {
  check(root.defined(), "backward", ": called on an undefined tensor");
  // Gradients come in the dtypes of the forward: ops that backward closures call must not be cast again.
  AutocastBF16 no_autocast(false);
  if (!root.requires_grad())
    fail("backward", ": tensor ", root.meta_str(),
         " does not require grad (no parameter or requires_grad_() input reached it)");
  AutogradMeta& rm = *root.autograd_meta();
  check(rm.producer != nullptr || !rm.produced, "backward", ": the graph of '", rm.name, "' was freed: ", kGraphGone);
  check(!t_in_backward, "backward", ": called from inside another backward (in a gradient hook?), which is not "
        "supported: the outer walk still reads the tape; run it after the outer backward returns");
  Tensor g0 = grad_in;
  if (!g0.defined()) {
    if (root.numel() != 1)
      fail("backward", ": grad can be implicitly created only for a one-element tensor, got ", root.meta_str(),
           "; pass a gradient of that shape");
    g0 = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  if (g0.shape() != root.shape() || g0.dtype() != root.dtype() || g0.device() != root.device())
    fail("backward", ": gradient ", g0.meta_str(), " does not match the tensor ", root.meta_str());

  Tape& tape = current_tape();
  // Compared by the tape's address, never reading the other thread's nodes (they may be freed as we look).
  if (rm.producer && rm.tape != &tape)
    fail("backward", ": the graph of ", root.meta_str(), " was recorded on another thread; the tape is one per "
         "thread: call backward on the thread that ran the forward");
  InBackward in_backward;
  NoGradGuard no_grad;
  profile_mark("backward.enter");  // what ran since the last op: the loss read, the seed gradient
  const auto& nodes = tape.nodes();
  const int64_t start = rm.producer ? rm.producer->id - nodes.front()->id : -1;
  // Tensors with no live producer (leaves, detached graphs) collect their gradient in `leaf_pending` and get it
  // once at the end; the others, in their `pending`, are consumed when the walk reaches their node.
  std::vector<AutogradMeta*> leaves;
  std::unordered_map<AutogradMeta*, Tensor> leaf_pending;
  struct LeafPendingScope {
    std::unordered_map<AutogradMeta*, Tensor>* prev = t_leaf_pending;
    explicit LeafPendingScope(std::unordered_map<AutogradMeta*, Tensor>* m) { t_leaf_pending = m; }
    ~LeafPendingScope() { t_leaf_pending = prev; }
  } leaf_scope(&leaf_pending);
  t_fan_in = {};
  auto add_to = [&](AutogradMeta& m, const Tensor& g) {
    if (m.producer && m.tape != &tape)
      fail("backward", ": the gradient reached a ", dtype_name(m.dtype), m.shape, " tensor recorded on another "
           "thread; the tape is one per thread: run the whole forward on the thread that calls backward");
    Tensor& pending = pending_of(m);
    if (!m.producer && !pending.defined()) leaves.push_back(&m);
    if (pending.defined()) t_fan_in.added++;
    accumulate(pending, g);
  };
  NormTracker norms;
  try {
    add_to(rm, g0);
    for (int64_t i = start; i >= 0; i--)
      if (nodes[i]->output->pending.defined()) backward_node(*nodes[i], retain_graph, add_to, norms);
    {
      InNodeBackward read_back;  // the GPU norms' one copy: part of the backward's last interval, not user ops
      norms.read_back();
    }
    // Leaves receive their total gradient once, after their hooks. (A leaf whose gradient was handed to a
    // backward and came back is listed twice: the second entry finds nothing pending.)
    for (AutogradMeta* m : leaves) {
      Tensor& pending = leaf_pending[m];
      if (!pending.defined()) continue;
      Tensor g = run_hooks(m->hooks, std::move(pending));
      pending = Tensor();
      std::lock_guard<std::mutex> lock(g_leaf_grad_mutex);  // threads backpropagating into one shared model
      if (m->grad.defined()) m->grad = add(m->grad, g);
      // .grad gets memory of its own (optimizers and clipping modify it in place): g itself when nothing else
      // refers to it (a fresh gradient, the common case), else a copy (g passed through from the upstream
      // gradient, shared with another leaf, or saved by a node)
      else m->grad = g.sole_owner() ? std::move(g) : g.clone();
    }
  } catch (...) {
    // Anomaly, a freed graph or a throwing hook: drop the partial gradients so the tensors involved start
    // clean next time, and the graph that was being consumed.
    for (int64_t i = start; i >= 0; i--) nodes[i]->output->pending = Tensor();
    in_backward.done();
    if (!retain_graph) tape.clear();
    throw;
  }
  in_backward.done();
  if (!retain_graph) tape.clear();
  profile_mark("backward.leaves");  // the gradient norms read back, the leaves' .grad, the tape cleared
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
    if (profiling()) detail::t_profiler->renamed(m->producer->id, m->producer->name);
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
