// The backward walk: one reverse loop over the calling thread's tape (tape.h says how it reads), with what it
// needs around it: the gradients collected per tensor (a leaf's in the walk's own map), the fan-in sums folded
// into a backward's GEMM (take_grad_accumulator), bf16 casts whose gradient stays float32 (grad_dtype), gradient
// hooks, gradient norms tracked per node, and anomaly checks.
#include <mutex>
#include <unordered_map>
#include <utility>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "autograd/tape_internal.h"
#include "backends/backend.h"

namespace skipgrad {

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
      source && !m->pending.defined() && source->dtype == dtype && !track_grad_norms() && m->producer->hooks.empty())
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
  bool outer = std::exchange(detail::t_in_node_backward, true);
  ~InNodeBackward() { detail::t_in_node_backward = outer; }
};

// Marks this thread's walk (detail::t_in_backward) while it lives; done() ends it before backward's own clear.
struct InBackward {
  InBackward() { detail::t_in_backward = true; }
  ~InBackward() { detail::t_in_backward = false; }
  void done() { detail::t_in_backward = false; }
};

// A node's backward reads the tensors it saved as they were in the forward; one written in place since (copy_, an
// optimizer step, load_state_dict) would give a wrong gradient without a word, so it is refused, as torch does.
void check_saved_unchanged(const Node& n) {
  for (size_t i = 0; i < n.saved.size(); i++) {
    const Tensor& t = n.saved[i];
    if (!t.defined() || t.version() == n.saved_versions[i]) continue;
    const AutogradMeta* m = t.autograd_meta();
    fail("backward", ": node '", n.name, "' (", n.op->name, ") saved ", t.meta_str(),
         m && !m->name.empty() ? " ('" + m->name + "')" : std::string(), " for its gradient, and it was written in "
         "place since (version ", n.saved_versions[i], " then, ", t.version(), " now: copy_, an optimizer step, "
         "load_state_dict...), so the gradient would be wrong. Run backward before changing it, or save a clone()");
  }
}

// Node n's backward results `grads`, one per input: checked against the inputs' shapes, cast to their dtypes and
// handed to add_to.
void pass_gradients(const Node& n, std::vector<Tensor> grads,
                    const std::function<void(AutogradMeta&, const Tensor&)>& add_to) {
  if (grads.size() != n.inputs.size())
    fail("backward", ": op '", n.op->name, "' returned ", grads.size(), " gradients for ", n.inputs.size(),
         " inputs");
  for (size_t j = 0; j < grads.size(); j++) {
    AutogradMeta* im = n.inputs[j].get();
    if (!im || !n.input_requires_grad[j] || !grads[j].defined()) continue;
    if (grads[j].shape() != im->shape)
      fail("backward", ": op '", n.op->name, "' (node ", n.name, ") returned a gradient of shape ", grads[j].shape(),
           " for input ", j, " of shape ", im->shape);
    // A gradient comes in its tensor's dtype (as in PyTorch's engine): a mixed float32/bf16 op's float32 gradient
    // for its bf16 input is rounded here, unless the input is a cast that takes its source's dtype (grad_dtype).
    if (grads[j].dtype() != im->dtype && grads[j].dtype() != grad_dtype(n, j)) grads[j] = grads[j].to(im->dtype);
    if (anomaly_mode())
      detail::fail_if_nonfinite(grads[j],
                                "backward of op '" + std::string(n.op->name) + "' (node " + n.name + ")",
                                "the gradient of input " + std::to_string(j));
    if (!im->producer && im->produced)
      fail("backward", ": the gradient reached '", im->name, "', whose graph was freed: ", kGraphGone);
    add_to(*im, grads[j]);
  }
}

// One node of the reverse walk: take its output gradient, call its backward, pass the results to its inputs.
void backward_node(Node& n, bool retain_graph, const std::function<void(AutogradMeta&, const Tensor&)>& add_to,
                   NormTracker& norms) {
  InNodeBackward in_node_backward;
  AutogradMeta& om = *n.output;
  Tensor g = run_hooks(om.hooks, std::move(om.pending));
  om.pending = Tensor();
  // A retained .grad is memory of its own (as torch's retain_grad): g goes on to this node's backward, which may
  // hand it to an input unchanged (a reshape), and the caller may hold it (backward(G)).
  if (om.retain_grad) om.grad = om.grad.defined() ? add(om.grad, g) : g.clone();
  for (auto& h : n.hooks) h(n, g);
  if (track_grad_norms()) norms.add(n, g);
  if (!n.backward)
    fail("backward", ": node '", n.name, "' was already run by an earlier backward (pass retain_graph=true to "
         "backward twice)");
  check_saved_unchanged(n);
  try {
    pass_gradients(n, n.backward(n, g), add_to);  // (the inputs' sums of gradients are the adds in add_to)
  } catch (const OutOfMemoryError& e) {  // name the node whose gradients needed the memory
    throw OutOfMemoryError(std::string(e.what()) + " (backward of node '" + n.name + "', op " + n.op->name + ")");
  }
  if (!retain_graph) {
    n.saved.clear();
    n.backward = nullptr;
  }
  if (Profiler* p = detail::current_profiler()) p->mark(n.name, n.op->name, ProfilePhase::Backward);
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
  check(!detail::t_in_backward, "backward", ": called from inside another backward (in a gradient hook?), which is "
        "not supported: the outer walk still reads the tape; run it after the outer backward returns");
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
    // Every leaf's hooks run before any leaf's .grad changes: a leaf hook that throws leaves every leaf's .grad as
    // it was, so a retry after the error does not add this walk's gradients twice. (A retained non-leaf .grad is
    // written during the walk.)
    std::vector<std::pair<AutogradMeta*, Tensor>> totals;
    totals.reserve(leaves.size());
    for (AutogradMeta* m : leaves) {
      Tensor& pending = leaf_pending[m];
      if (!pending.defined()) continue;
      Tensor g = run_hooks(m->hooks, std::move(pending));
      pending = Tensor();
      totals.emplace_back(m, std::move(g));
    }
    std::lock_guard<std::mutex> lock(g_leaf_grad_mutex);  // threads backpropagating into one shared model
    for (auto& total : totals) {
      AutogradMeta* m = total.first;
      Tensor g = std::move(total.second);  // the list keeps no reference: a gradient two leaves share is copied once
      if (!m->requires_grad) continue;     // frozen since the forward: no .grad (torch's AccumulateGrad)
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

}  // namespace skipgrad
