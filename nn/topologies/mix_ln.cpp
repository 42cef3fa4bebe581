// Mix-LN (Li et al. 2024, arXiv 2412.13795). TOPOLOGIES.md §5.5.
//
//   layers l < k (k = POST_NUM, default floor(L/4)) are Post-LN:   h = N(x + D(SA(x))) ...   y = N(h + D(F(h)))
//   the rest are Pre-LN:                                           h = x + D(SA(N(x))) ...   y = h + D(F(N(h)))
//   always a final norm on the stack.
// Source: pixeli99/MixLN peft_pretraining/modeling_llama.py L325-333 (`'post_pre'`), final `self.norm` (L929,
// L1077). Enc-dec: each stack applies the rule with its own L; the decoder's cross-attention follows its layer's
// kind. k = cfg.mixln_post_layers (-1: floor(L/4)), clamped to L.
#include <algorithm>

#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class MixLNLayer : public Layer {
 public:
  MixLNLayer(const TransformerConfig& cfg, Side side, int64_t index, bool post_ln)
      : Layer(cfg, side, index), post(post_ln) {
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    if (post) {
      x = self_attn_norm->forward(residual_add("self_attn", x, D("self_attn", SA(x, ctx))));
      if (has_cross_attention())
        x = cross_attn_norm->forward(residual_add("cross_attn", x, D("cross_attn", CA(x, ctx))));
      x = ffn_norm->forward(residual_add("ffn", x, D("ffn", F(x))));
    } else {
      x = residual_add("self_attn", x, D("self_attn", SA(self_attn_norm->forward(x), ctx)));
      if (has_cross_attention())
        x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
      x = residual_add("ffn", x, D("ffn", F(ffn_norm->forward(x))));
    }
    return {x, Tensor()};
  }

 private:
  bool post;
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

class MixLN : public FinalNormTopology {
 public:
  std::string name() const override { return "mix_ln"; }

 protected:
  std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) override {
    const int64_t L = side == Side::Encoder ? cfg.enc_layers : cfg.dec_layers;
    const int64_t k = cfg.mixln_post_layers < 0 ? L / 4 : std::min(cfg.mixln_post_layers, L);
    return std::make_shared<MixLNLayer>(cfg, side, index, index < k);
  }
};

}  // namespace

std::unique_ptr<Topology> make_topology_mix_ln() { return std::make_unique<MixLN>(); }

}  // namespace skipgrad::nn
