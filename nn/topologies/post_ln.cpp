// Post-LN: the original Transformer (fairseq `normalize_before = False`). TOPOLOGIES.md §1.
//
//   encoder:  h  = LN_sa( x  + D(SA(x)) )             decoder:  h1 = LN_sa( x  + D(SA_causal(x)) )
//             y  = LN_ff( h  + D(F(h)) )                        h2 = LN_ca( h1 + D(CA(h1, enc)) )
//                                                               y  = LN_ff( h2 + D(F(h2)) )
//   No final norm on either stack (fairseq builds `layer_norm` only when normalize_before).
// Source: fairseq/modules/transformer_layer.py, TransformerEncoderLayerBase.forward and the decoder analogue.
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class PostLNLayer : public Layer {
 public:
  PostLNLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = self_attn_norm->forward(residual_add("self_attn", x, D("self_attn", SA(x, ctx))));
    if (has_cross_attention()) x = cross_attn_norm->forward(residual_add("cross_attn", x, D("cross_attn", CA(x, ctx))));
    x = ffn_norm->forward(residual_add("ffn", x, D("ffn", F(x))));
    return {x, Tensor()};
  }

 private:
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace

std::unique_ptr<Topology> make_topology_post_ln() {
  return std::make_unique<LayerTopology<PostLNLayer>>("post_ln");
}

}  // namespace skipgrad::nn
