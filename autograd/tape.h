// The tape: recording ops, walking them backwards, grad mode, scopes and anomaly mode. tape.cpp records (and
// holds the modes and scopes), backward.cpp walks.
//
// Nodes are appended in execution order, which is already a topological order, so backward(loss) is a single
// reverse loop: take the node's output gradient, call its backward, add the results into its inputs'
// gradients (fan-in of the residual stream is this "+="). No recursion. After a backward without retain_graph,
// the tape is cleared; tensors made before keep their values but no longer link to nodes.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/node.h"

namespace skipgrad {

class Tape {
 public:
  Tape() = default;
  ~Tape() { release(); }  // a thread's tape ends with the thread (even inside a backward, on exit()): its tensors
                          // no longer point into it
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  size_t size() const { return nodes_.size(); }
  Node* find(int64_t id) const;
  void clear();

  Node& append(std::unique_ptr<Node> n);

 private:
  void release();  // clear() without its check
  std::vector<std::unique_ptr<Node>> nodes_;
  int64_t next_id_ = 0;
};

// The calling thread's tape.
Tape& current_tape();

// ---- grad mode ----
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;
 private:
  bool prev_;
};

// ---- anomaly mode: the first NaN/Inf in a forward output or a backward gradient throws, naming op and scope ----
// (per thread, as grad mode; a new thread starts with it off)
void set_anomaly_mode(bool on);
bool anomaly_mode();
class AnomalyGuard {
 public:
  AnomalyGuard(bool on = true);
  ~AnomalyGuard();
 private:
  bool prev_;
};

// ---- gradient-norm tracking: each node remembers the L2 norm of its output gradient (for the dump) ----
// (per thread, as grad mode; a new thread starts with it on)
void set_track_grad_norms(bool on);
bool track_grad_norms();
// Sets tracking while it lives, then the setting before (training and timing turn it off: it reads every norm back).
class TrackGradNormsGuard {
 public:
  explicit TrackGradNormsGuard(bool on);
  ~TrackGradNormsGuard();
  TrackGradNormsGuard(const TrackGradNormsGuard&) = delete;
  TrackGradNormsGuard& operator=(const TrackGradNormsGuard&) = delete;
 private:
  bool prev_;
};

// ---- scopes: Scope s("enc.3.ffn") prefixes the names of the nodes recorded while it lives ----
class Scope {
 public:
  explicit Scope(const std::string& name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;
};
std::string current_scope();         // "enc.3.ffn", or "" at top level
// current_scope(), or `fallback` (the module's kind: "LayerNorm") when it is "": who an error message names
std::string current_scope_or(std::string_view fallback);
std::string scoped(std::string_view leaf);  // current_scope() + "." + leaf

// ---- recording (for op authors) ----
// True when grad mode is on and some input requires grad.
bool should_record(const std::vector<Tensor>& inputs);
// Records a node producing `out` from `inputs` when should_record(inputs); marks out as requiring grad.
// Returns the node, or nullptr when nothing was recorded. In anomaly mode checks `out`.
Node* record(const OpInfo& op, const std::vector<Tensor>& inputs, Tensor& out, std::vector<Tensor> saved,
             BackwardFn backward, OpParams params = {});
inline Node* record(const char* op, const std::vector<Tensor>& inputs, Tensor& out, std::vector<Tensor> saved,
                    BackwardFn backward, OpParams params = {}) {
  return record(op_info(op), inputs, out, std::move(saved), std::move(backward), std::move(params));
}
// Anomaly check of a forward result that is not recorded (e.g. under no-grad); no-op when anomaly mode is off.
void check_finite(const Tensor& t, const char* op);
// For a backward: the gradient input j of n has collected so far in this walk (from consumers recorded after n),
// handed over so that the backward adds its own share into it in place (a GEMM with beta = 1) and returns it as
// input j's gradient: the fan-in "+=" without an add kernel and a temporary. Undefined when there is nothing to
// take: no gradient yet, or one that may not be written (shared with another tensor, not contiguous, another
// dtype than `dtype`). The sum is the same either way: pending + share. (A leaf's .grad from an earlier backward
// is not handed over: only what this walk has collected.) When input j is an unobserved bf16 cast of a float32
// tensor (grad_dtype below) that has no gradient yet, and gradient norms are not tracked, the source's gradient so
// far is handed over: the cast's backward passes the sum back to it.
Tensor take_grad_accumulator(const Node& n, size_t j, DType dtype);
// For a backward: the dtype input j's gradient may be returned in. The input's own, except for a bfloat16 cast of a
// float32 tensor (to_dtype: autocast's bf16 copies of float32 weights and activations) whose gradient no tensor hook
// or retain_grad observes: then float32, which the cast's backward converts the gradient to anyway.
// A GEMM making the gradient writes it so (GemmArgs::c_float32): the float32 accumulation unrounded, and the cast's
// backward has nothing to convert.
DType grad_dtype(const Node& n, size_t j);

// ---- backward ----
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);
// The fan-in sums of the calling thread's last backward walk: gradients added to an earlier one by an add
// kernel, and those a backward folded into it in place (take_grad_accumulator).
struct FanInSums {
  int64_t added = 0, folded = 0;
};
FanInSums last_backward_fan_in();

}  // namespace skipgrad
