// NormFormer (Shleifer, Weston and Ott 2021, "NormFormer: Improved Transformer Pretraining with Extra
// Normalization", arXiv 2110.09456): Pre-LN with three additions in each layer, so that the gradients of the early
// layers shrink toward those of the late ones: a norm on the self-attention's output, a learned scale per head,
// and a norm after the FFN's activation.
//
//   self-attention:  x ← x + D( LN_out( W_O · concat_h(γ_h · Attn_h(LN_sa(x))) ) )   γ ∈ R^H, init 1 (HeadScale)
//   cross-attention: x ← x + D( CA(LN_ca(x), enc) )                                  (Pre-LN's, as fairseq's)
//   feed-forward:    x ← x + D( W_2 · LN_mid( act(W_1 LN_ff(x)) ) )                  (LN_mid over d_ff, after D_act)
//                    with cfg.normformer_scale_resids: x ← λ_resid ⊙ x + D(...)        λ_resid ∈ R^d, init 1 (ResScale)
//   final norm per stack (Pre-LN's); Pre-LN's (Fairseq) init.
// The paper's HeadScale multiplies each head's output before the output projection (its eq. for MultiHeadAttention
// with γ_i h_i inside the concat); fairseq's code (transformer_layer.py, `c_attn`) multiplies the out_proj's output
// split into H chunks instead, which is a different function. We follow the paper; cfg.normformer_fairseq_head_scale
// gives fairseq's instead, as its code computes it (einsum "tbhd,h->tbdh", then a reshape to d_model, which also
// transposes the channels from (H, d_h) to (d_h, H) order):
//                    y = W_O · concat_h(Attn_h(LN_sa(x)));  y' = flatten_{d,h}(γ_h · y[h, d]);  x ← x + D(LN_out(y'))
// Its residual scaling (λ_resid on the FFN's skip, fairseq's --scale-resids, an extra for its 125M and 355M models)
// is an option. The paper trains decoder-only and masked LMs; the encoder of an encoder-decoder gets the same layer
// (as its masked-LM models). docs/topologies.md has these choices and the sources.
// Parameter names: "<layer>.self_attn.head_scale" ([H], either variant), "<layer>.self_attn_out_norm.*"
// (Sandwich-LN's name for a norm on a branch), "<layer>.ffn.inner_norm.*" (Sub-LN's mid-FFN norm, over d_ff),
// "<layer>.ffn_resid_scale" ([d], with the option). Nodes: the head scale is "<layer>.self_attn.head_scale.mul"
// (fairseq's: "<layer>.self_attn_head_scale.mul", then ".transposed"), LN_out
// "<layer>.self_attn_out_norm.layer_norm", λ_resid ⊙ x "<layer>.ffn_scaled_skip".
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

class NormFormerLayer : public Layer {
 public:
  NormFormerLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    self_attn_out_norm = add_norm("self_attn_out_norm");
    if (cfg.normformer_fairseq_head_scale)  // applied here, after out_proj; the attention itself has none
      head_scale_after_proj = self_attn->register_parameter("head_scale", Tensor::ones({cfg.heads}));
    else
      self_attn->head_scale = self_attn->register_parameter("head_scale", Tensor::ones({cfg.heads}));
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
    ffn->inner_norm = ffn->register_module("inner_norm", make_norm(cfg, ffn->fc2->in_features));
    if (cfg.normformer_scale_resids)
      ffn_resid_scale = register_parameter("ffn_resid_scale", Tensor::ones({cfg.d_model}));
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    Tensor y = SA(self_attn_norm->forward(x), ctx);
    if (head_scale_after_proj.defined()) y = fairseq_head_scale(y);
    x = residual_add("self_attn", x, D("self_attn", self_attn_out_norm->forward(y)));
    if (has_cross_attention())
      x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
    const Tensor branch = D("ffn", F(ffn_norm->forward(x)));
    // λ_resid ⊙ x in the layer's scope, not the FFN's (as Admin's x ⊙ ω): the analysis takes the FFN's node as its
    // branch, this is the stream
    x = residual_add("ffn", ffn_resid_scale.defined() ? mul(x, ffn_resid_scale).named("ffn_scaled_skip") : x, branch);
    return {x, Tensor()};
  }

 private:
  // fairseq's c_attn: y [B, T, d] viewed as [B, T, H, d_h], head h's chunk × γ_h, then [B, T, d_h, H] flattened
  Tensor fairseq_head_scale(const Tensor& y) {
    Scope s("self_attn_head_scale");
    const int64_t B = y.size(0), T = y.size(1), H = head_scale_after_proj.size(0), d = y.size(2);
    const Tensor chunks = y.reshape({B, T, H, d / H}).named("head_chunks");
    const Tensor scaled = mul(chunks, head_scale_after_proj.reshape({1, 1, H, 1}));
    return scaled.permute({0, 1, 3, 2}).contiguous().reshape({B, T, d}).named("transposed");
  }

  std::shared_ptr<Norm> self_attn_norm, self_attn_out_norm, cross_attn_norm, ffn_norm;
  Tensor ffn_resid_scale;        // undefined unless cfg.normformer_scale_resids
  Tensor head_scale_after_proj;  // γ, when cfg.normformer_fairseq_head_scale (else the attention's head_scale)
};

}  // namespace

std::unique_ptr<Topology> make_topology_normformer() {
  return std::make_unique<LayerTopology<NormFormerLayer, FinalNormTopology>>("normformer");
}

}  // namespace skipgrad::nn
