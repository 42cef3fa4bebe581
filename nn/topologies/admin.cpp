// Admin (Liu et al. 2020, EMNLP). TOPOLOGIES.md §5.7.
//
//   every sublayer f (SA, [CA,] F):   x ← LN( x ⊙ ω + D(f(x)) )         ω ∈ R^d learnable per sublayer;  no final norm
//   ω's initialisation is a profiling pass (admin_profile_init, admin.h): ω_i ← r_i, r_{i+1} = sqrt(Var(x ⊙ ω_i) +
//   Var(f_i(x))), r_1 = 1 per stack. ω = 1 everywhere (before profiling) is exactly Post-LN.
// Source: Transformer-Clinic fairseq/modules/transformer_layer.py (`adaptive-profiling` / `adaptive`), as summarised in
// the spec. The ratio restarting at 1 for the decoder and the profiling in eval mode are our reading of it.
#include "nn/topologies/admin.h"

#include <cmath>
#include <cstdio>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {
namespace {

// The running ratio of one stack while admin_profile_init runs.
struct AdminProfile {
  double ratio = 1.0;
};

// Var over all elements, in float64 on the host (a one-off read during the init)
double variance(const Tensor& t) {
  Tensor c = sub(t, mean(t));
  return mean(mul(c, c)).to(DType::F64).item();
}

class AdminLayer : public Layer {
 public:
  AdminLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    self_attn_omega = register_parameter("self_attn_omega", Tensor::ones({cfg.d_model}));
    if (has_cross_attention()) {
      cross_attn_norm = add_norm("cross_attn_norm");
      cross_attn_omega = register_parameter("cross_attn_omega", Tensor::ones({cfg.d_model}));
    }
    ffn_norm = add_norm("ffn_norm");
    ffn_omega = register_parameter("ffn_omega", Tensor::ones({cfg.d_model}));
  }

  AdminProfile* profile = nullptr;  // set only during admin_profile_init

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = sublayer("self_attn", x, D("self_attn", SA(x, ctx)), self_attn_omega, *self_attn_norm);
    if (has_cross_attention())
      x = sublayer("cross_attn", x, D("cross_attn", CA(x, ctx)), cross_attn_omega, *cross_attn_norm);
    x = sublayer("ffn", x, D("ffn", F(x)), ffn_omega, *ffn_norm);
    return {x, Tensor()};
  }

 private:
  // LN(x ⊙ ω + g), the branch g computed by the caller first (one node order on every compiler)
  Tensor sublayer(const char* name, const Tensor& x, const Tensor& g, Tensor& omega, Norm& norm) {
    if (profile) omega.copy_(Tensor::scalar(profile->ratio, omega.dtype(), omega.device()));
    // in the layer's scope, not the sublayer's (as DeepNorm's α·x): the analysis takes the sublayer's node as the
    // branch, this is the stream
    Tensor skip = mul(x, omega);
    skip.named(std::string(name) + "_admin_scale");
    if (profile) profile->ratio = std::sqrt(variance(skip) + variance(g));
    return norm.forward(residual_add(name, skip, g));
  }

  Tensor self_attn_omega, cross_attn_omega, ffn_omega;
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace

std::pair<double, double> admin_profile_init(Transformer& model, const Tensor& src_ids, const Tensor& tgt_in_ids) {
  const char* op = "admin_profile_init";
  check(model.config().topology == "admin", op, ": the model's topology is '", model.config().topology,
        "', not 'admin'");
  AdminProfile profiles[2];
  std::vector<AdminLayer*> layers;
  for (int side = 0; side < 2; side++)
    for (const auto& l : (side == 0 ? model.encoder : model.decoder)->layers) {
      auto* a = dynamic_cast<AdminLayer*>(l.get());
      check(a != nullptr, op, ": layer ", l->index, " is not an Admin layer");
      a->profile = &profiles[side];
      layers.push_back(a);
    }
  struct Restore {  // whatever happens: no layer keeps a pointer to this frame, the training mode comes back
    std::vector<AdminLayer*>& layers;
    Transformer& model;
    bool training;
    ~Restore() {
      for (AdminLayer* a : layers) a->profile = nullptr;
      model.train(training);
    }
  } restore{layers, model, model.is_training()};
  model.eval();
  NoGradGuard no_grad;
  model.forward(src_ids, tgt_in_ids);
  return {profiles[0].ratio, profiles[1].ratio};
}

namespace {
class AdminTopology : public LayerTopology<AdminLayer> {
 public:
  AdminTopology() : LayerTopology<AdminLayer>("admin") {}
  std::string init_from_batch(Transformer& model, const Tensor& src_ids, const Tensor& tgt_in_ids) override {
    const auto [enc_ratio, dec_ratio] = admin_profile_init(model, src_ids, tgt_in_ids);
    char line[120];
    if (model.config().decoder_only())
      std::snprintf(line, sizeof line, "admin: omega profiled on the first batch; last ratio %.3f", dec_ratio);
    else
      std::snprintf(line, sizeof line, "admin: omega profiled on the first batch; last ratios %.3f (encoder), %.3f "
                    "(decoder)", enc_ratio, dec_ratio);
    return line;
  }
};
}  // namespace

std::unique_ptr<Topology> make_topology_admin() { return std::make_unique<AdminTopology>(); }

}  // namespace skipgrad::nn
