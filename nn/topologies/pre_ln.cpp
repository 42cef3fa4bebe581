// Pre-LN (Xiong et al. 2020; fairseq `normalize_before = True`). TOPOLOGIES.md §2.
//
//   encoder:  h  = x  + D(SA(LN_sa(x)))                decoder:  h1 = x  + D(SA_causal(LN_sa(x)))
//             y  = h  + D(F(LN_ff(h)))                           h2 = h1 + D(CA(LN_ca(h1), enc))
//                                                                y  = h2 + D(F(LN_ff(h2)))
//   Final LN on both stacks: enc = LN_enc_final(x_N), features = LN_dec_final(y_M).
// Source: fairseq/modules/transformer_layer.py (`if self.normalize_before:` branches), transformer_encoder.py /
// transformer_decoder.py (`self.layer_norm`).
#include "nn/topologies/pre_ln.h"

namespace skipgrad::nn {

PreLNLayer::PreLNLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
  self_attn_norm = add_norm("self_attn_norm");
  if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
  ffn_norm = add_norm("ffn_norm");
}

Stream PreLNLayer::apply(const Stream& in, const LayerInputs& ctx) {
  Tensor x = in.x;
  x = residual_add("self_attn", x, D("self_attn", SA(self_attn_norm->forward(x), ctx)));
  if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
  x = residual_add("ffn", x, D("ffn", F(ffn_norm->forward(x))));
  return {x, Tensor()};
}

std::unique_ptr<Topology> make_topology_pre_ln() {
  return std::make_unique<LayerTopology<PreLNLayer, FinalNormTopology>>("pre_ln");
}

}  // namespace skipgrad::nn
