// LayerScale (CaiT: Touvron et al. 2021, "Going deeper with Image Transformers", §2.1; timm's LayerScale): Pre-LN
// whose every branch is scaled per channel by a learned vector, initialised small, so that a deep stack starts close
// to the identity and each sublayer's weight grows as it trains.
//
//   every sublayer f (SA, [CA,] F) of a layer:   x ← x + λ_f ⊙ D( f(LN_f(x)) )        λ_f ∈ R^d, init ε
//   final norm per stack (Pre-LN's)
// ε = cfg.layer_scale_init, or by default CaiT's rule on the layers L of the stack: 0.1 for L ≤ 18, 1e-5 for
// L ≤ 24, 1e-6 beyond (layer_scale_epsilon). λ_f is "<layer>.<sublayer>_layer_scale" ([d]); its product with the
// branch, the branch's last node, is "<sublayer>.layer_scale", so a graph dump shows λ on every branch. ReZero is
// the scalar, norm-free relative (one α per layer, init 0); Admin scales the skip instead of the branch.
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class LayerScaleLayer : public Layer {
 public:
  LayerScaleLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    const double eps =
        layer_scale_epsilon(cfg.layer_scale_init, side == Side::Encoder ? cfg.enc_layers : cfg.dec_layers);
    auto lambda = [&](const std::string& name) {
      return register_parameter(name + "_layer_scale", Tensor::full({cfg.d_model}, eps));
    };
    self_attn_norm = add_norm("self_attn_norm");
    self_attn_scale = lambda("self_attn");
    if (has_cross_attention()) {
      cross_attn_norm = add_norm("cross_attn_norm");
      cross_attn_scale = lambda("cross_attn");
    }
    ffn_norm = add_norm("ffn_norm");
    ffn_scale = lambda("ffn");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, scaled("self_attn", D("self_attn", SA(self_attn_norm->forward(x), ctx)),
                                            self_attn_scale));
    if (has_cross_attention())
      x = residual_add("cross_attn", x, scaled("cross_attn", D("cross_attn", CA(cross_attn_norm->forward(x), ctx)),
                                               cross_attn_scale));
    x = residual_add("ffn", x, scaled("ffn", D("ffn", F(ffn_norm->forward(x))), ffn_scale));
    return {x, Tensor()};
  }

 private:
  // λ ⊙ branch, in the sublayer's scope
  static Tensor scaled(const char* sublayer, const Tensor& branch, const Tensor& lambda) {
    Scope s(sublayer);
    Tensor y = mul(branch, lambda);
    y.named("layer_scale");
    return y;
  }

  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
  Tensor self_attn_scale, cross_attn_scale, ffn_scale;
};

}  // namespace

double layer_scale_epsilon(double layer_scale_init, int64_t stack_layers) {
  if (layer_scale_init > 0) return layer_scale_init;
  return stack_layers <= 18 ? 0.1 : stack_layers <= 24 ? 1e-5 : 1e-6;
}

std::unique_ptr<Topology> make_topology_layer_scale() {
  return std::make_unique<LayerTopology<LayerScaleLayer, FinalNormTopology>>("layer_scale");
}

}  // namespace skipgrad::nn
