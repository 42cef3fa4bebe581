// The autograd graph as plain data: a Node per recorded op, AutogradMeta per tensor that takes part.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "autograd/op_table.h"
#include "tensor/tensor.h"

namespace skipgrad {

struct Node;
class Tape;

// What autograd knows about one tensor. Nodes hold these, not the tensors, so a forward activation is freed as
// soon as the user and every backward that saved it let go of it.
struct AutogradMeta {
  bool requires_grad = false;
  bool retain_grad = false;
  Tensor grad;            // the accumulated gradient of a leaf (or of a retain_grad tensor)
  Tensor pending;         // gradient being accumulated during one backward pass (a leaf's: in the walk's own map)
  Node* producer = nullptr;  // the node on the live tape that made this tensor; null for leaves
  const Tape* tape = nullptr;  // the tape (one per thread) that recorded it: compared, never dereferenced
  bool produced = false;     // made by an op (not a leaf), even after its tape was cleared
  std::string name;          // leaf name (a parameter's "enc.0.ffn.fc1.weight"); set by nn/
  Shape shape;
  DType dtype = DType::F32;
  Device device;
  std::weak_ptr<TensorImpl> value;  // the tensor itself while it is alive (value norms in the dump)
  std::vector<std::function<Tensor(const Tensor&)>> hooks;
};

// An op parameter kept for dumps: dim=-1, eps=1e-5, causal=true, shape=[2,3] ...
using ParamValue = std::variant<int64_t, double, bool, std::string, Shape>;
using OpParams = std::vector<std::pair<std::string, ParamValue>>;
std::string param_str(const ParamValue& v);

// Gradients with respect to each input (undefined where the input needs none), given the output's gradient.
using BackwardFn = std::function<std::vector<Tensor>(const Node& node, const Tensor& grad_out)>;

struct Node {
  int64_t id = -1;                 // position on the tape
  const OpInfo* op = nullptr;
  std::string name;                // scoped: "enc.3.ffn.fc1.matmul"
  std::vector<std::shared_ptr<AutogradMeta>> inputs;
  // inputs[j] required grad when the op ran: its gradient is computed and passed on. Read at record time, as
  // torch's graph is: a requires_grad_() between forward and backward does not add an input to this graph (a leaf
  // turned off since gets no .grad, as torch's AccumulateGrad checks it again).
  std::vector<bool> input_requires_grad;
  std::shared_ptr<AutogradMeta> output;
  std::vector<Tensor> saved;       // what backward reads; released once backward has run (unless retained)
  std::vector<uint64_t> saved_versions;  // saved[i].version() when recorded: backward refuses a tensor changed since
  OpParams params;
  BackwardFn backward;
  std::vector<std::function<void(const Node&, const Tensor& grad_out)>> hooks;  // observe grad_out
  double grad_norm = -1;           // L2 norm of grad_out after backward (when tracking is on), else -1

  size_t saved_bytes() const;
};

}  // namespace skipgrad
