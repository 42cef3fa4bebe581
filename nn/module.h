// Module: the base of every layer. Holds named parameters, buffers and child modules, like torch::nn::Module.
//
// Names are hierarchical ("enc.3.self_attn.q_proj.weight"). A module's forward opens `Scope s(name())` so the
// nodes it records read like the model ("enc.3.ffn.fc1.linear").
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace skipgrad::nn {

class Module {
 public:
  explicit Module(std::string name = "") : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& name() const { return name_; }
  // What the module computes, beyond its tensors' names and shapes, as a checkpoint records it
  // ("Transformer(pre_ln, 4 heads, layer_norm eps 1e-05, relu, ...)"): load_checkpoint refuses a file of another
  // kind, which could otherwise load (pre_ln and resi_dual have the same parameters). "" (the default): not
  // recorded, not checked.
  virtual std::string kind() const { return ""; }
  // Whether a file's recorded kind is this module's (kind() itself, or an older spelling of it).
  virtual bool reads_kind(const std::string& stored) const { return stored == kind(); }

  // Registers a leaf tensor as a parameter (requires_grad is turned on) and returns it.
  Tensor& register_parameter(const std::string& name, Tensor t);
  // Weight tying (torch's `self.head.weight = self.tok.weight`): parameter `name` of this module becomes `shared`,
  // another module's parameter of the same shape, dtype and device. Set the module's member from the result too:
  //   head->weight = head->tie_parameter("weight", tok->weight);
  // named_parameters() and parameters() list a tensor once, under its first name (as torch), so optimizers,
  // clipping and checkpoints see one parameter, whose gradient sums both uses.
  Tensor& tie_parameter(const std::string& name, const Tensor& shared);
  // Registers a tensor that is saved with the model but not trained (e.g. a positions table).
  Tensor& register_buffer(const std::string& name, Tensor t);
  // A floating buffer that follows from the module's settings alone (a positions table, ALiBi's slopes): the
  // loaders refuse a file whose value differs from the one the module made (check_loaded_buffer's default, compared
  // in float32, the precision such tables are made in), so an edited file cannot change what the model computes.
  Tensor& register_constant_buffer(const std::string& name, Tensor t);
  // Refuses `value`, a file's tensor for this module's buffer `name` (its own name: "buckets"), before
  // load_checkpoint or load_state_dict copies anything: a module whose buffer follows from its settings, and
  // would index out of range or compute something else with another value, throws an Error that begins with
  // `context` (the op, the file, the buffer's full name). The loaders have checked `value`'s shape and dtype (an
  // integer buffer's exactly) before they call it. The default refuses a constant buffer's value other than the
  // module's own (register_constant_buffer) and accepts any value of the others.
  virtual void check_loaded_buffer(const std::string& name, const Tensor& value, const std::string& context) const;
  // Registers a child; its name becomes `name` (the full path is built by named_parameters()). A module registered
  // a second time (in another parent, or twice in a ModuleList: parameters shared across layers) keeps its first
  // name, under which named_modules() and named_parameters() list it, so its forward's nodes read that name too.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check(m != nullptr, "register_module", ": child '", name, "' of '", name_, "' is null");
    check_new_name("register_module", name);
    if (!m->registered_) m->name_ = name;
    m->registered_ = true;
    children_.emplace_back(name, m);
    return m;
  }

  // All parameters, depth first, with full dotted names ("enc.0.ffn.fc1.weight"); a tensor registered in two places
  // (tied, or a module registered twice) once, under its first name, unless !remove_duplicate (as torch: the
  // optimizer gets each tensor once; state_dict and checkpoints keep every name, so a tied model's file loads).
  std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "",
                                                               bool remove_duplicate = true) const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(const std::string& prefix = "") const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // Every module of the tree, depth first, this one first as `prefix` ("" for the root, as torch), then
  // "enc", "enc.0", "enc.0.self_attn", ...; a module registered in two places once, under its first name.
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  // fn on every module of the tree once, children before their parent, this one last (torch's Module.apply):
  //   model.apply([](nn::Module& m) { if (auto* lin = dynamic_cast<nn::Linear*>(&m)) init::zeros_(lin->bias); });
  void apply(const std::function<void(Module&)>& fn);
  // Finds a parameter by its full name; throws an Error listing close names when absent.
  Tensor parameter(const std::string& full_name) const;
  int64_t num_parameters() const;

  // Gives each parameter leaf its full name, so graph dumps and errors show "enc.0.ffn.fc1.weight".
  void name_parameters(const std::string& prefix = "");

  // Training mode on (dropout active) or off, for this module and every child. Virtual, as torch's: a module that
  // keeps state for a mode (a cached mask) overrides it and calls Module::train(on).
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  // Moves every parameter and buffer to `device` in place: handles held by modules see the move.
  void to(Device device);
  // Where the module lives: the device of its first parameter (or buffer); the CPU when it has neither.
  Device device() const;
  // Casts every floating parameter and buffer (float64 for gradient checks of whole models); dtype must be
  // floating (an integer one is an error, nothing cast). Virtual: a module whose buffers must keep more precision
  // (RotaryEmbedding's angle tables under bf16) casts its own.
  virtual void to(DType dtype);

 protected:
  std::string name_;
  bool training_ = true;
  bool registered_ = false;  // a child of some module: its name is its first parent's for it

 private:
  // A name for a new parameter, buffer or child: not empty, without '.', and not taken by any of the three (as
  // torch's "attribute already exists"): two entries of one name would meet only in state_dict or a checkpoint.
  void check_new_name(const char* op, const std::string& name) const;
  // Every module of the tree once (the first time it is reached), depth first: pre(path, m) before its children,
  // post(m) after them (either may be null). For named_modules and apply.
  void walk_once(const std::string& prefix, const std::function<void(const std::string&, Module&)>& pre,
                 const std::function<void(Module&)>& post);
  // named_parameters (named) or parameters (plain): depth first, each tensor not in `seen` yet (seen null: all)
  void collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>* named,
                          std::vector<Tensor>* plain, std::unordered_set<const TensorImpl*>* seen) const;
  // deques: references returned by register_* stay valid as more are added
  std::deque<std::pair<std::string, Tensor>> params_;
  std::deque<std::pair<std::string, Tensor>> buffers_;
  std::unordered_set<std::string> constant_buffers_;  // the names of buffers_ registered as constants
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// After a backward of a loss of the whole model: the names of the parameters that got no gradient (an undefined
// .grad), i.e. that the forward did not read (torch DDP's "unused parameters"): a module built but never called, as
// a topology's norm for a sublayer that its layer does not have. Training programs print them after their first step.
// A parameter frozen with requires_grad off is not listed. Empty when every parameter has one.
std::vector<std::string> parameters_without_grad(const Module& model);
// "3 parameters got no gradient ...: a, b, c" (at most `shown` names, then "..."), for a run's log; "" for none.
std::string without_grad_warning(const std::vector<std::string>& names, size_t shown = 8);

// A numbered list of child modules, as torch.nn.ModuleList: element i is registered as child "i", so a stack of
// blocks names its parameters "blk.0.attn.q_proj.weight", ... and a forward run under `Scope s(blocks.name())` and
// each block's own scope records "blk.3.mlp.residual_add". T is the element type (a Module subclass).
//
//   auto blocks = register_module("blk", std::make_shared<nn::ModuleList<Block>>());
//   for (int i = 0; i < n; i++) blocks->push_back(std::make_shared<Block>(cfg));
//   for (auto& b : *blocks) x = b->forward(x);
template <class T>
class ModuleList : public Module {
 public:
  std::shared_ptr<T> push_back(std::shared_ptr<T> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
    return items_.back();
  }
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  const std::shared_ptr<T>& operator[](size_t i) const {
    check(i < items_.size(), "ModuleList", ": index ", i, " out of range for '", name(), "' of ", items_.size());
    return items_[i];
  }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<T>> items_;
};

// Steps applied in order, as torch.nn.Sequential: child modules with a `Tensor forward(const Tensor&)` and plain
// functions (an activation). Step i is child "i" (a module's parameters are "mlp.0.weight") and its nodes are
// recorded in scope "<name>.i": "mlp.0.linear", "mlp.1.relu". An empty Sequential returns its input.
//
//   auto mlp = register_module("mlp", std::make_shared<nn::Sequential>());
//   mlp->push_back(std::make_shared<nn::Linear>(8, 32));
//   mlp->push_back([](const Tensor& x) { return relu(x); });
//   mlp->push_back(std::make_shared<nn::Linear>(32, 4));
//   Tensor y = mlp->forward(x);
class Sequential : public Module {
 public:
  using Step = std::function<Tensor(const Tensor&)>;
  template <class M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    static_assert(requires(M& mod, const Tensor& x) { { mod.forward(x) } -> std::convertible_to<Tensor>; },
                  "Sequential::push_back: a module step needs Tensor forward(const Tensor&); wrap a module whose "
                  "forward takes more in a function step: [m](const Tensor& x) { return m->forward(x, ...); }");
    auto child = register_module(std::to_string(steps_.size()), std::move(m));
    steps_.push_back([child](const Tensor& x) { return child->forward(x); });
    return child;
  }
  void push_back(Step f);
  Tensor forward(const Tensor& x);
  size_t size() const { return steps_.size(); }

 private:
  std::vector<Step> steps_;
};

}  // namespace skipgrad::nn
