// Optimizers over a model's named parameters: SGD (momentum, Nesterov), Adam and AdamW.
//
//   auto opt = nn::AdamW(model.named_parameters(), {.lr = 5e-4, .beta2 = 0.98, .weight_decay = 0.01,
//                                                   .no_decay_on_norms_and_biases = true});
//   for (...) {
//     opt.zero_grad();
//     Tensor loss = ...;  loss.backward();
//     nn::clip_grad_norm(opt.params(), 1.0);
//     opt.set_lr(schedule.lr(opt.step_count()));
//     opt.step();
//   }
//
// Gradient accumulation: backward() adds into each parameter's .grad, so several backward passes before one
// step() sum their gradients. To make k micro-batches equal one big batch, scale each micro-batch loss so that
// the sum is the big batch's loss: with a mean loss over equal-sized micro-batches, backward `loss / k`; with
// token-weighted means (label_smoothed_nll), backward `loss * ntokens_micro / ntokens_total`. Then clip and
// step once, and zero_grad() before the next accumulation starts:
//
//   opt.zero_grad();
//   for (int i = 0; i < k; i++) (loss_of(micro_batch[i]) * (1.0 / k)).backward();
//   opt.step();
//
// State: every parameter has its state tensors (momentum buffer; Adam's m and v) allocated as zeros when the
// optimizer is made, on the parameter's device and dtype, so a checkpoint always holds the same names
// (named_state()'s "m.enc.0.ffn.fc1.weight", saved as "optim.m.enc.0.ffn.fc1.weight"). Make the optimizer after
// Module::to(device/dtype); if a parameter moves later, its state follows it at the next step or when
// named_state() is read (a checkpoint saves and loads the state in its parameter's dtype and device). Parameters
// with no gradient are skipped by step() (state unchanged).
// The step count is the number of step() calls; Adam's bias correction uses it (PyTorch counts per parameter,
// which differs only for parameters that had no gradient at some steps).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/name_patterns.h"
#include "tensor/tensor.h"

namespace skipgrad::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Parameters with a learning rate and weight decay of their own (torch's param_groups). The rate is a multiple of the
// optimizer's, so set_lr (a schedule) moves every group together: layer-wise learning-rate decay, a slower
// embedding, no decay for a hand-picked set.
//
//   std::vector<nn::ParamGroup> groups(2);
//   for (auto& [name, p] : model.named_parameters())
//     groups[name.rfind("enc.", 0) == 0].params.emplace_back(name, p);   // encoder in group 1
//   groups[1].lr_scale = 0.5;
//   groups[0].weight_decay = 0.0;
//   nn::AdamW opt(groups, {.lr = 5e-4, .weight_decay = 0.01});
struct ParamGroup {
  NamedTensors params;
  double lr_scale = 1;  // this group's learning rate is lr() * lr_scale
  // unset: the optimizer's; no_decay_on_norms_and_biases spares norms and biases either way
  std::optional<double> weight_decay = std::nullopt;
};
// All parameters in one group of the optimizer's settings (what the NamedTensors constructors do).
inline std::vector<ParamGroup> one_group(NamedTensors params) { return {{.params = std::move(params)}}; }

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Updates every parameter that has a gradient, then counts the step.
  void step();
  // Drops every parameter's gradient (PyTorch's set_to_none).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr);
  int64_t step_count() const { return steps_; }
  void set_step_count(int64_t steps);

  virtual const char* kind() const = 0;  // "sgd", "adam", "adamw": checkpoints check it on load
  const NamedTensors& named_params() const { return params_; }
  std::vector<Tensor> params() const;
  // Parameter i's weight decay: its group's (or the optimizer's), 0 for norms and biases when so configured.
  double weight_decay(size_t i) const;
  // Parameter i's learning rate is lr() * lr_scale(i) (its group's scale; 1 without groups).
  double lr_scale(size_t i) const;
  // Change one parameter's settings (torch: param_groups[k]["lr"] = ...); checkpoints restore them this way.
  void set_weight_decay(size_t i, double weight_decay);
  void set_lr_scale(size_t i, double lr_scale);
  // The optimizer's own settings besides the learning rate and the per-parameter ones, by name (torch's
  // param_groups' betas, eps, momentum): Adam's "beta1", "beta2", "eps"; SGD's "momentum", "nesterov" (1 or 0).
  // Checkpoints save them and load_checkpoint restores them, as torch's load_state_dict restores param_groups: the
  // file's values win over the constructor's. An optimizer without any (the default) saves none.
  virtual std::vector<std::pair<std::string, double>> settings() const { return {}; }
  // Sets one of settings() by name, checked as the constructor checks it; an unknown name is an error listing the
  // known ones. Nothing changes when it throws. An optimizer that overrides settings() overrides this too: a
  // checkpoint's settings are restored through it.
  virtual void set_setting(const std::string& name, double value);

  // Named state tensors, "<slot>.<parameter name>" ("m.enc.0.weight", "v.enc.0.weight", "momentum.w"), each in
  // its parameter's current dtype and device; the tensors are the live state, so a checkpoint loader copies into
  // them in place.
  NamedTensors named_state() const;

 protected:
  // slots: the state tensors each parameter gets ("m", "v"), all zeros of the parameter's shape; weight_decay: the
  // options' (a group may override it). `kind` names the optimizer in errors (kind() is not callable yet).
  Optimizer(const char* kind, std::vector<ParamGroup> groups, double lr, std::vector<std::string> slots,
            double weight_decay, bool no_decay_on_norms_and_biases);
  // Updates parameter i (its gradient is defined) with its state tensors state_[i][slot]; steps_ is the count
  // of earlier steps, so the current step is steps_ + 1.
  virtual void update(size_t i, Tensor& param, const Tensor& grad, std::vector<Tensor>& state) = 0;
  // A parameter to update in this step: its index and its gradient (checked to match it, state on its device).
  struct Pending {
    size_t i;
    Tensor grad;
  };
  // Updates the parameters of this step; step() calls it once, after checking every gradient. The default calls
  // update() for each in order; an optimizer may override it to update them all at once (Adam).
  virtual void update_all(const std::vector<Pending>& todo);
  // Brings parameter i's state to the parameter's dtype and device if it was cast or moved (values unchanged).
  void follow_parameter(size_t i) const;
  // Adam's update of these parameters (state slots 0 and 1: m and v) in one fused backend call per device and
  // learning rate (Backend::adam_update), with learning rate lr() lr_scale(i) lr_factor and weight decay
  // weight_decay(i) decay_factor: Adam's and AdamW's step (factors 1), and RAdam's rectified one.
  void fused_adam_update(const std::vector<Pending>& todo, double beta1, double beta2, double eps, bool decoupled,
                         double lr_factor, double decay_factor);

  NamedTensors params_;
  std::vector<std::string> slots_;
  mutable std::vector<std::vector<Tensor>> state_;  // [param][slot]; mutable: follow_parameter() moves it
  std::vector<double> weight_decay_, lr_scale_;  // [param]
  double lr_;
  int64_t steps_ = 0;
};

// ---- SGD, as torch.optim.SGD without dampening ----
//   g = grad + wd p;  buf = momentum buf + g;  g = nesterov ? g + momentum buf : buf  (when momentum > 0);
//   p -= lr g
struct SGDOptions {
  double lr = 0.01;
  double momentum = 0;
  bool nesterov = false;
  double weight_decay = 0;
  bool no_decay_on_norms_and_biases = false;  // skip decay where is_norm_or_bias()
};
class SGD : public Optimizer {
 public:
  SGD(NamedTensors params, const SGDOptions& options = {});
  SGD(std::vector<ParamGroup> groups, const SGDOptions& options = {});
  const char* kind() const override { return "sgd"; }
  const SGDOptions& options() const { return opt_; }
  std::vector<std::pair<std::string, double>> settings() const override;
  void set_setting(const std::string& name, double value) override;

 protected:
  void update(size_t i, Tensor& param, const Tensor& grad, std::vector<Tensor>& state) override;  // update_all of i
  // Every new value first, then the writes: a step that fails partway (out of memory) leaves every parameter and
  // momentum buffer as it was, at the cost of holding a step's new values at once.
  void update_all(const std::vector<Pending>& todo) override;

 private:
  // Parameter i's new value and its momentum buffer's (undefined without momentum); nothing is written.
  std::pair<Tensor, Tensor> next_values(size_t i, const Tensor& param, const Tensor& grad,
                                        const std::vector<Tensor>& state) const;
  SGDOptions opt_;
};

// ---- Adam and AdamW, as torch.optim.Adam / AdamW (one fused backend call for all parameters of a step) ----
// t = step count, g = grad (+ wd p for Adam; AdamW instead decays p *= 1 - lr wd first):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // PyTorch's AdamW default is 1e-2: pass it explicitly
  bool no_decay_on_norms_and_biases = false;  // skip decay where is_norm_or_bias()
};
class Adam : public Optimizer {
 public:
  Adam(NamedTensors params, const AdamOptions& options = {});
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options = {});
  const char* kind() const override { return decoupled_ ? "adamw" : "adam"; }
  const AdamOptions& options() const { return opt_; }
  std::vector<std::pair<std::string, double>> settings() const override;
  void set_setting(const std::string& name, double value) override;

 protected:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options, bool decoupled);
  void update(size_t i, Tensor& param, const Tensor& grad, std::vector<Tensor>& state) override;
  void update_all(const std::vector<Pending>& todo) override;

 private:
  AdamOptions opt_;
  bool decoupled_;
};
class AdamW : public Adam {
 public:
  AdamW(NamedTensors params, const AdamOptions& options = {}) : Adam(one_group(std::move(params)), options, true) {}
  AdamW(std::vector<ParamGroup> groups, const AdamOptions& options = {}) : Adam(std::move(groups), options, true) {}
};

// ---- RAdam, as torch.optim.RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") ----
// Adam whose adaptive step is switched on only once the variance of v's estimate is tractable, and then scaled by
// the rectification r_t; before, the step is SGD with momentum. It needs no warm-up, which is why Admin's recipes use
// it. t = step count, g = grad (+ wd p; with decoupled_weight_decay p *= 1 - lr wd first, as torch 2's option and
// the RAdam authors' code):
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  m̂ = m / (1 - b1^t)
//   ρ∞ = 2 / (1 - b2) - 1;  ρ_t = ρ∞ - 2 t b2^t / (1 - b2^t)
//   ρ_t > 5:  r_t = sqrt((ρ_t - 4)(ρ_t - 2) ρ∞ / ((ρ∞ - 4)(ρ∞ - 2) ρ_t));
//             p -= lr r_t m̂ sqrt(1 - b2^t) / (sqrt(v) + eps)
//   else:     p -= lr m̂
// (eps is added to sqrt(v), not to the bias-corrected sqrt(v̂) as in Adam: torch's and the authors' form.) The
// SGD steps are a few elementwise ops per parameter; the rectified steps are Adam's fused update (Backend::adam_update)
// with lr r_t and eps / sqrt(1 - b2^t), which is the same update (and weight decay / r_t when decoupled).
struct RAdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool no_decay_on_norms_and_biases = false;  // skip decay where is_norm_or_bias()
  bool decoupled_weight_decay = false;        // p *= 1 - lr wd (AdamW's), else wd p added to the gradient
};
class RAdam : public Optimizer {
 public:
  RAdam(NamedTensors params, const RAdamOptions& options = {});
  RAdam(std::vector<ParamGroup> groups, const RAdamOptions& options = {});
  const char* kind() const override { return "radam"; }
  const RAdamOptions& options() const { return opt_; }
  // beta1, beta2, eps and decoupled_weight_decay (1 or 0)
  std::vector<std::pair<std::string, double>> settings() const override;
  void set_setting(const std::string& name, double value) override;
  // ρ_t of step t; the step is adaptive when ρ_t > 5: with b2 = 0.9, 0.98 or 0.999 from step 6 on
  static double rho(double beta2, int64_t step);

 protected:
  void update(size_t i, Tensor& param, const Tensor& grad, std::vector<Tensor>& state) override;
  void update_all(const std::vector<Pending>& todo) override;

 private:
  struct Next {
    Tensor param, m, v;
  };
  Next next_values(size_t i, const Tensor& param, const Tensor& grad, const std::vector<Tensor>& state) const;
  RAdamOptions opt_;
};

// The examples' --optimizer: "adamw" (AdamW) or "radam" (RAdam with decoupled weight decay, as AdamW's and the RAdam
// authors' code), from one set of settings; another name is an Error naming `who` and the known ones.
std::unique_ptr<Optimizer> make_adamw_or_radam(const std::string& name, std::vector<ParamGroup> groups,
                                               const AdamOptions& options, const std::string& who);

// The examples' --lr-scale-at "PATTERN=SCALE,...": the parameters whose names match a pattern (name_patterns.h, a
// later pattern winning) learn at SCALE times the optimizer's rate, the others at 1x; one group per scale, in the
// order the scales first appear among params. A pattern that matches no parameter, or a scale that is negative or
// not finite, is an Error naming `who` (with a few of the parameters' names). "*.alpha=10": DyT's α 10x faster.
std::vector<ParamGroup> lr_scale_groups(const NamedTensors& params, const PatternValues& lr_scale_at,
                                        const std::string& who);
// lr_scale_groups' patterns from the command line's "PATTERN=SCALE[,PATTERN=SCALE...]" ("*.alpha=10"; "" is none):
// an Error names the entry that is not of that form (name_patterns.h).
PatternValues parse_lr_scale_at(const std::string& text);
// How a run's first line shows them: " (--lr-scale-at *.alpha=10)", or "" for none.
std::string lr_scale_at_note(const PatternValues& lr_scale_at);
// The parameters whose learning rate is not lr() x 1, by scale: "lr x10: 12 parameters (enc.0.ffn_norm.alpha, ...)";
// "" when there are none.
std::string lr_scales_summary(const Optimizer& opt);

// Whether a parameter is exempt from weight decay under no_decay_on_norms_and_biases: its name is "bias" or
// ends in ".bias", or it is 1-D (norm gains, biases) or 0-D (scalar gates such as ReZero's alpha).
bool is_norm_or_bias(const std::string& name, const Tensor& param);

}  // namespace skipgrad::nn
