// Sandwich-LN (CogView, Ding et al. 2021). TOPOLOGIES.md §5.2.
//
//   every sublayer f (SA, [CA,] F):   x ← x + D( LN_out( f( LN_in(x) ) ) )        final LN on each stack
// Sources: lucidrains/x-transformers `sandwich_norm` (pre_branch_norm + post_branch_norm applied to the branch
// output before the residual add, plus final_norm); pixeli99/MixLN modeling_llama.py `norm_type == 'sandwich'`.
// Where the residual dropout sits (after the output norm, on the branch as fairseq puts it) is our choice.
#include "nn/topologies/sandwich.h"

namespace skipgrad::nn {

SandwichLayer::SandwichLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
  self_attn_norm = add_norm("self_attn_norm");
  self_attn_out_norm = add_norm("self_attn_out_norm");
  if (has_cross_attention()) {
    cross_attn_norm = add_norm("cross_attn_norm");
    cross_attn_out_norm = add_norm("cross_attn_out_norm");
  }
  ffn_norm = add_norm("ffn_norm");
  ffn_out_norm = add_norm("ffn_out_norm");
}

Stream SandwichLayer::apply(const Stream& in, const LayerInputs& ctx) {
  Tensor x = in.x;
  x = residual_add("self_attn", x, D("self_attn", self_attn_out_norm->forward(SA(self_attn_norm->forward(x), ctx))));
  if (has_cross_attention())
    x = residual_add("cross_attn", x,
                     D("cross_attn", cross_attn_out_norm->forward(CA(cross_attn_norm->forward(x), ctx))));
  x = residual_add("ffn", x, D("ffn", ffn_out_norm->forward(F(ffn_norm->forward(x)))));
  return {x, Tensor()};
}

std::unique_ptr<Topology> make_topology_sandwich_ln() {
  return std::make_unique<LayerTopology<SandwichLayer, FinalNormTopology>>("sandwich_ln");
}

}  // namespace skipgrad::nn
