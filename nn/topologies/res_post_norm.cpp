// Res-post-norm, the "reordered norm" of OLMo 2 and Swin Transformer v2. TOPOLOGIES.md §5.4.
//
//   every sublayer f (SA, [CA,] F):   x ← x + D( N_out( f(x) ) )          no input norm;  final norm on each stack
// Source: allenai/OLMo olmo/model.py (`norm_after`: attn_norm applied to the attention output, ff_norm after ff_out,
// each before its residual add). The stream itself is never normalised inside the stack: only each branch is.
// Where the residual dropout sits (after the output norm, on the branch) is our choice, as for Sandwich-LN.
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class ResPostNormLayer : public Layer {
 public:
  ResPostNormLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_out_norm = add_norm("self_attn_out_norm");
    if (has_cross_attention()) cross_attn_out_norm = add_norm("cross_attn_out_norm");
    ffn_out_norm = add_norm("ffn_out_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, D("self_attn", self_attn_out_norm->forward(SA(x, ctx))));
    if (has_cross_attention())
      x = residual_add("cross_attn", x, D("cross_attn", cross_attn_out_norm->forward(CA(x, ctx))));
    x = residual_add("ffn", x, D("ffn", ffn_out_norm->forward(F(x))));
    return {x, Tensor()};
  }

 private:
  std::shared_ptr<Norm> self_attn_out_norm, cross_attn_out_norm, ffn_out_norm;
};

}  // namespace

std::unique_ptr<Topology> make_topology_res_post_norm() {
  return std::make_unique<LayerTopology<ResPostNormLayer, FinalNormTopology>>("res_post_norm");
}

}  // namespace skipgrad::nn
