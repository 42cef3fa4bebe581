// ReZero (Bachlechner et al. 2020, "ReZero is All You Need"). TOPOLOGIES.md §5.7.
//
//   every sublayer f (SA, [CA,] F) of layer l:   x ← x + α_l · D( f(x) )        α_l a learnable scalar, init 0
//   no norm anywhere, no final norm: at initialisation every layer is the identity.
// One α per layer, shared by its sublayers, as in the ReZero authors' Transformer layer (`resweight`, one
// nn.Parameter per encoder layer used for both its attention and its feed-forward branch). The scale is the
// branch's last node, "<sublayer>.rezero_scale", so a graph dump shows α on every branch.
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class ReZeroLayer : public Layer {
 public:
  ReZeroLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    alpha = register_parameter("rezero_alpha", Tensor::zeros({1}));
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, scaled("self_attn", D("self_attn", SA(x, ctx))));
    if (has_cross_attention()) x = residual_add("cross_attn", x, scaled("cross_attn", D("cross_attn", CA(x, ctx))));
    x = residual_add("ffn", x, scaled("ffn", D("ffn", F(x))));
    return {x, Tensor()};
  }

 private:
  // α · branch, in the sublayer's scope
  Tensor scaled(const char* sublayer, const Tensor& branch) {
    Scope s(sublayer);
    Tensor y = mul(branch, alpha);
    y.named("rezero_scale");
    return y;
  }

  Tensor alpha;
};

}  // namespace

std::unique_ptr<Topology> make_topology_rezero() {
  return std::make_unique<LayerTopology<ReZeroLayer>>("rezero");
}

}  // namespace skipgrad::nn
