// B2T connection (Takase et al. 2023, "B2T Connection: Serving Stability and Performance in Deep Transformers",
// arXiv 2206.00330; their code github.com/takase/b2t_connection, fairseq's transformer_layer.py with
// `residual_bottom_to_top`): Post-LN plus one skip per layer, from its bottom to its top, that bypasses every norm of
// the layer but the last. Post-LN's norms make its gradients vanish in deep stacks (the paper's finding); the skip
// gives every layer's input a path to the next layer through one norm only.
//
//   encoder:  h  = LN_sa( x + D(SA(x)) )              decoder:  h1 = LN_sa( x  + D(SA_causal(x)) )
//             y  = LN_ff( h + D(F(h)) + x )                     h2 = LN_ca( h1 + D(CA(h1, enc)) )
//                                                               y  = LN_ff( h2 + D(F(h2)) + x )
//   x is the layer's input; (h + D(F(h))) is summed first, then x, as the code does. No final norm (Post-LN's).
//   init (the code's rescaling_init): every weight of the layer but its norms' (the q/k/v/out projections, fc1,
//   fc2; not their biases) times L^(-1/2), L the layers of its stack, on top of the Fairseq init (cfg.b2t_rescale
//   false: Post-LN's init). cfg.init = SmallInit, GPT2 or DeepNorm re-initialises on top of that, as for every
//   topology. (In 436 steps at lr 2e-3 on the number corpus the rescaled 6+6 model had not begun to learn, the
//   unscaled one matched Pre-LN: docs/sweep/README.md.)
// Node names: the skip's add is "<layer>.b2t_add" ("enc.3.b2t_add"); the residual adds are Post-LN's.
#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class B2TLayer : public Layer {
 public:
  B2TLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
    if (!cfg.b2t_rescale) return;
    const double s = std::pow((double)(side == Side::Encoder ? cfg.enc_layers : cfg.dec_layers), -0.5);
    for (auto& attn : {self_attn, cross_attn})  // the linear maps of the attentions and the FFN; not their biases
      if (attn)
        for (auto& lin : {attn->q_proj, attn->k_proj, attn->v_proj, attn->out_proj}) lin->rescale(s, false);
    ffn->fc1->rescale(s, false);
    ffn->fc2->rescale(s, false);
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    const Tensor& bottom = in.x;
    Tensor x = self_attn_norm->forward(residual_add("self_attn", bottom, D("self_attn", SA(bottom, ctx))));
    if (has_cross_attention()) x = cross_attn_norm->forward(residual_add("cross_attn", x, D("cross_attn", CA(x, ctx))));
    Tensor top = residual_add("ffn", x, D("ffn", F(x)));
    top = add(top, bottom).named("b2t_add");
    return {ffn_norm->forward(top), Tensor()};
  }

 private:
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace

std::unique_ptr<Topology> make_topology_b2t() { return std::make_unique<LayerTopology<B2TLayer>>("b2t"); }

}  // namespace skipgrad::nn
