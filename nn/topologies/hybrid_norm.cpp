// HybridNorm and HybridNorm* (Zhuo et al. 2025), from the official code. TOPOLOGIES.md §4.3, §4.4, §4.8.
//
// HybridNorm block (dense_model/olmo/model.py L797-893, flags attn_norm=F, ffn_norm=T, ffn_residual=T):
//   Y      = X + D( MHA_QKV(X) )        # attention reads the raw stream; per-head Norm on q, k and v inside
//   U      = Norm_ffn(Y)
//   X_next = U + D( FFN(U) )            # the FFN residual is taken AFTER the norm
// where MHA_QKV(Q,K,V) = softmax(Norm(Q) Norm(K)ᵀ / √d_h) Norm(V), one norm weight of size d_h shared by all heads.
// HybridNorm* (README `norm_pos_special_config="_{0:{'attn_norm':True,'ffn_residual':False}}_"`): block 0 is a
// Pre-Norm block that keeps the QKV norms:
//   Y  = X0 + D( MHA_QKV( Norm_attn(X0) ) )
//   X1 = Y  + D( FFN( Norm_ffn(Y) ) )
// Final norm on the stack output (ln_f, L1517).
//
// Encoder-decoder adaptation (§4.8; OURS, not in the paper or its code, which are decoder-only):
//   encoder block = the block above without the causal mask;
//   decoder block: Y1 = X + D(SA_QKV,causal(X)); Y2 = Y1 + D(CA_QKV(Y1, enc)) (q-norm on Y1's queries, k/v-norms on
//   enc's keys/values); U = Norm(Y2); X' = U + D(FFN(U)). HybridNorm* block 0 of the decoder is Pre-Norm for all
//   three sublayers. Final norm on both stacks. The norm kind is cfg.norm everywhere (RMSNorm in the paper's code).
// A decoder-only model (enc_layers 0) has the paper's block itself: causal SA, no CA.
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

HeadNormKind head_kind(const TransformerConfig& cfg) {
  return cfg.norm == NormKind::LayerNorm ? HeadNormKind::LayerNorm : HeadNormKind::RMSNorm;
}

class HybridNormLayer : public Layer {
 public:
  HybridNormLayer(const TransformerConfig& cfg, Side side, int64_t index, bool pre_norm_block)
      : Layer(cfg, side, index, HeadNormTargets::QKV, head_kind(cfg)), pre_norm(pre_norm_block) {
    if (pre_norm) {
      self_attn_norm = add_norm("self_attn_norm");
      if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    }
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    if (pre_norm) {  // HybridNorm* block 0: Pre-Norm with QKV-norm
      x = residual_add("self_attn", x, D("self_attn", SA(self_attn_norm->forward(x), ctx)));
      if (has_cross_attention())
        x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
      x = residual_add("ffn", x, D("ffn", F(ffn_norm->forward(x))));
      return {x, Tensor()};
    }
    x = residual_add("self_attn", x, D("self_attn", SA(x, ctx)));
    if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(x, ctx)));
    Tensor u = ffn_norm->forward(x);
    x = residual_add("ffn", u, D("ffn", F(u)));
    return {x, Tensor()};
  }

 private:
  bool pre_norm;
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

class HybridNorm : public FinalNormTopology {
 public:
  explicit HybridNorm(bool star) : star_(star) {}
  std::string name() const override { return star_ ? "hybrid_norm_star" : "hybrid_norm"; }
  // its QKV norms are part of the topology: a qk_norm setting would be ignored, so it is refused
  void check_config(const TransformerConfig& cfg) const override {
    check(cfg.qk_norm == HeadNormTargets::None, name(), ": has per-head norms on q, k and v of its own (of the kind ",
          "of cfg.norm); qk_norm must be none, got ", head_norm_targets_name(cfg.qk_norm));
    check(cfg.norm != NormKind::DynamicTanh, name(), ": its per-head q, k, v norms are of cfg.norm's kind, and "
          "they are norms (layer_norm or rms_norm); norm dyt has no per-head form here");
  }

 protected:
  std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) override {
    return std::make_shared<HybridNormLayer>(cfg, side, index, star_ && index == 0);
  }

 private:
  bool star_;
};

}  // namespace

std::unique_ptr<Topology> make_topology_hybrid_norm() { return std::make_unique<HybridNorm>(false); }
std::unique_ptr<Topology> make_topology_hybrid_norm_star() { return std::make_unique<HybridNorm>(true); }

}  // namespace skipgrad::nn
