// T-Fixup (Huang, Perez, Ba and Volkovs 2020, "Improving Transformer Optimization Through Better Initialization",
// ICML; their code layer6ai-labs/T-Fixup, a fairseq fork run with --Tfixup --dont-use-layernorm): no norm at all,
// and an init that keeps the updates of the whole stack bounded, so that it trains without warm-up.
//
//   every sublayer f (SA, [CA,] F):   x ← x + D( f(x) )          no norm anywhere, no final norm
//   init, on top of the Fairseq init (their code's fixup_initialization and the encoder/decoder constructors):
//     FFN fc1, fc2:  xavier_uniform, bias 0 (their fork's Linear), then the weights × s
//     every attention (SA and, in the decoder, CA):  v_proj weight × √2·s (their xavier gain 1/√2 undone), out_proj
//                    weight × s; q_proj, k_proj as they are
//     s = 0.67·N^(-1/4) in the encoder, (9M)^(-1/4) in the decoder (N encoder, M decoder layers)
//     token embeddings N(0, d^-1/2) × (9N)^(-1/4) when shared (their encoder scales the one table, their decoder
//     then leaves it), each table by its own stack's (9L)^(-1/4) when not shared; a decoder-only model's (9M)^(-1/4)
// The paper states the encoder's embedding scale as 0.67·N^(-1/4); the code uses (9N)^(-1/4), which we follow.
// cfg.init = SmallInit, GPT2 or DeepNorm re-initialises on top, as for every topology. ReZero is the other norm-free
// topology here; T-Fixup's residual branches are plain, its stability comes from the init alone.
#include <cmath>

#include "nn/topology.h"
#include "nn/transformer.h"

namespace skipgrad::nn {
namespace {

// s of the layers of a stack
double branch_scale(const TransformerConfig& cfg, Side side) {
  return side == Side::Encoder ? 0.67 * std::pow((double)cfg.enc_layers, -0.25)
                               : std::pow(9.0 * (double)cfg.dec_layers, -0.25);
}

class TFixupLayer : public Layer {
 public:
  TFixupLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    const double s = branch_scale(cfg, side);
    for (const auto& fc : {ffn->fc1, ffn->fc2}) {
      fc->reset_xavier_uniform(1.0);
      fc->zero_bias();
      fc->rescale(s, false);
    }
    for (const auto& attn : {self_attn, cross_attn}) {
      if (!attn) continue;  // (no cross-attention in the encoder or a decoder-only model)
      attn->v_proj->rescale(std::sqrt(2.0) * s, false);
      attn->out_proj->rescale(s, false);
    }
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, D("self_attn", SA(x, ctx)));
    if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(x, ctx)));
    x = residual_add("ffn", x, D("ffn", F(x)));
    return {x, Tensor()};
  }
};

class TFixupTopology : public LayerTopology<TFixupLayer> {
 public:
  TFixupTopology() : LayerTopology("t_fixup") {}

  void init_model(Transformer& model) override {
    const TransformerConfig& cfg = model.config();
    const double enc = std::pow(9.0 * (double)cfg.enc_layers, -0.25);
    const double dec = std::pow(9.0 * (double)cfg.dec_layers, -0.25);
    if (model.src_embed == model.tgt_embed) {
      init::scale_(model.tgt_embed->weight, cfg.decoder_only() ? dec : enc);
    } else {
      init::scale_(model.src_embed->weight, enc);
      init::scale_(model.tgt_embed->weight, dec);
    }
  }
};

}  // namespace

std::unique_ptr<Topology> make_topology_t_fixup() { return std::make_unique<TFixupTopology>(); }

}  // namespace skipgrad::nn
