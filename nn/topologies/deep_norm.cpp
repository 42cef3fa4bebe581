// DeepNorm (DeepNet, Wang et al. 2022): Post-LN with an up-weighted identity and a down-scaled init.
// TOPOLOGIES.md §5.1.
//
//   every sublayer G (SA, [CA,] F), encoder and decoder:   x ← LN( α·x + D(G(x)) )          no final norm
//   encoder-decoder constants (paper / xformers `get_deepnorm_coefficients`, Transformer-Clinic L108-118):
//       encoder: α = 0.81·(N⁴M)^{1/16},  β = 0.87·(N⁴M)^{-1/16}
//       decoder: α = (3M)^{1/4},          β = (12M)^{-1/4}
//   decoder-only (enc_layers 0): α = (2M)^{1/4}, β = (8M)^{-1/4}
//   init: xavier_normal(gain β) for fc1, fc2, v_proj, out_proj; xavier_normal(gain 1) for q_proj, k_proj.
// We take the paper/xformers constants, not torchscale's (which divides the default xavier_uniform init by
// (N⁴M)^{1/16}/1.15). The β-init is part of the topology; cfg.init = SmallInit or GPT2 overrides it.
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class DeepNormLayer : public Layer {
 public:
  DeepNormLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    const DeepNormCoefficients c = deepnorm_coefficients(cfg.enc_layers, cfg.dec_layers, side);
    alpha = c.alpha;
    deepnorm_init(*this, c.beta);
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    // x = LN(α·x + G(x)), G(x) computed first and then α·x: one order of the graph's nodes whatever order a
    // compiler evaluates call arguments in
    auto sublayer = [&](const char* name, const Tensor& g, Norm& norm) {
      x = norm.forward(residual_add(name, up(x, name), g));
    };
    sublayer("self_attn", D("self_attn", SA(x, ctx)), *self_attn_norm);
    if (has_cross_attention()) sublayer("cross_attn", D("cross_attn", CA(x, ctx)), *cross_attn_norm);
    sublayer("ffn", D("ffn", F(x)), *ffn_norm);
    return {x, Tensor()};
  }

 private:
  // α·x, named "<sublayer>_alpha_scale"
  Tensor up(const Tensor& x, const char* sublayer) {
    return mul(x, alpha).named(std::string(sublayer) + "_alpha_scale");
  }

  double alpha;
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace

std::unique_ptr<Topology> make_topology_deep_norm() {
  return std::make_unique<LayerTopology<DeepNormLayer>>("deep_norm");
}

}  // namespace skipgrad::nn
