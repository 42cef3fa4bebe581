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

#include "nn/topologies/pre_ln.h"

namespace skipgrad::nn {
namespace {

// torchscale's γ for one stack
double subln_gamma(const TransformerConfig& cfg, Side side) {
  const double N = (double)cfg.enc_layers, M = (double)cfg.dec_layers;
  if (cfg.decoder_only()) return std::sqrt(std::log(2 * M));
  return side == Side::Encoder ? std::sqrt(std::log(3 * M) * std::log(2 * N) / 3) : std::sqrt(std::log(3 * M));
}

// Pre-LN's layer and equations (pre_ln.h); the inner norms act inside SA and F, the γ on their weights.
class SubLNLayer : public PreLNLayer {
 public:
  SubLNLayer(const TransformerConfig& cfg, Side side, int64_t index) : PreLNLayer(cfg, side, index) {
    self_attn->inner_norm =
        self_attn->register_module("inner_norm", make_norm(cfg, cfg.d_model));
    ffn->inner_norm = ffn->register_module("inner_norm", make_norm(cfg, ffn->fc2->in_features));
    const double gamma = subln_gamma(cfg, side);  // W ← γ·W, b ← γ·b: v_proj, out_proj (self-attention), fc1, fc2
    for (const auto& lin : {self_attn->v_proj, self_attn->out_proj, ffn->fc1, ffn->fc2}) lin->rescale(gamma, true);
  }
};

}  // namespace

std::unique_ptr<Topology> make_topology_sub_ln() {
  return std::make_unique<LayerTopology<SubLNLayer, FinalNormTopology>>("sub_ln");
}

}  // namespace skipgrad::nn
