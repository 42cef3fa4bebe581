// Sub-LN (Magneto: Wang et al. 2022, "Foundation Transformers", arXiv 2210.06423; torchscale's `subln`): Pre-LN
// with one more norm inside each self-attention and feed-forward branch, before its output projection, and the
// branches' weights scaled up by γ at init.
//
//   self-attention:  x ← x + D( W_O · LN_in( Attn(LN_sa(x)) ) )       (LN_in over the merged heads, d_model)
//   cross-attention: x ← x + D( CA(LN_ca(x), enc) )                    (no inner norm, as torchscale's)
//   feed-forward:    x ← x + D( W_2 · LN_in( act(W_1 LN_ff(x)) ) )     (LN_in over d_ff, after D_act)
//   final norm per stack (Pre-LN's)
//   init (torchscale's Encoder/Decoder with subln): v_proj, out_proj, fc1 and fc2 (weight and bias) of the
//   self-attentions and FFNs times γ, on top of the Fairseq init; cross-attention as it is:
//       encoder of an encoder-decoder: γ = sqrt(log(3M)·log(2N)/3),   its decoder: γ = sqrt(log 3M)
//       decoder-only:                  γ = sqrt(log 2M)               (N encoder layers, M decoder layers)
//   cfg.init = SmallInit, GPT2 or DeepNorm re-initialises on top of that, as for every topology.
// Parameter names: "<layer>.self_attn.inner_norm.*" and "<layer>.ffn.inner_norm.*"; LN_in's nodes are
// "<layer>.self_attn.inner_norm.layer_norm" and "<layer>.ffn.inner_norm.layer_norm" (rms_norm with cfg.norm RMS).
#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

// torchscale's γ for one stack
double subln_gamma(const TransformerConfig& cfg, Side side) {
  const double N = (double)cfg.enc_layers, M = (double)cfg.dec_layers;
  if (cfg.decoder_only()) return std::sqrt(std::log(2 * M));
  return side == Side::Encoder ? std::sqrt(std::log(3 * M) * std::log(2 * N) / 3) : std::sqrt(std::log(3 * M));
}

class SubLNLayer : public Layer {
 public:
  SubLNLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
    self_attn->inner_norm =
        self_attn->register_module("inner_norm", make_norm(cfg.norm, cfg.d_model, cfg.norm_eps));
    ffn->inner_norm = ffn->register_module("inner_norm", make_norm(cfg.norm, ffn->fc2->in_features, cfg.norm_eps));
    scale_up(subln_gamma(cfg, side));
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, D("self_attn", SA(self_attn_norm->forward(x), ctx)));
    if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
    x = residual_add("ffn", x, D("ffn", F(ffn_norm->forward(x))));
    return {x, Tensor()};
  }

 private:
  // W ← γ·W, b ← γ·b for v_proj, out_proj (self-attention) and fc1, fc2
  void scale_up(double gamma) {
    NoGradGuard no_grad;
    for (const auto& lin : {self_attn->v_proj, self_attn->out_proj, ffn->fc1, ffn->fc2}) {
      lin->weight.copy_(mul(lin->weight, gamma));
      if (lin->bias.defined()) lin->bias.copy_(mul(lin->bias, gamma));
    }
  }

  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace

std::unique_ptr<Topology> make_topology_sub_ln() {
  return std::make_unique<LayerTopology<SubLNLayer, FinalNormTopology>>("sub_ln");
}

}  // namespace skipgrad::nn
