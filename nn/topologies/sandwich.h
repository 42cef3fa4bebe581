// The Sandwich-LN layer, shared by sandwich_ln.cpp and peri_ln.cpp (same per-sublayer form).
#pragma once
#include "nn/topology.h"

namespace skipgrad::nn {

// x ← x + D( N_out( f( N_in(x) ) ) ) for every sublayer f.
class SandwichLayer : public Layer {
 public:
  SandwichLayer(const TransformerConfig& cfg, Side side, int64_t index);

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override;

 private:
  std::shared_ptr<Norm> self_attn_norm, self_attn_out_norm, cross_attn_norm, cross_attn_out_norm, ffn_norm,
      ffn_out_norm;
};

}  // namespace skipgrad::nn
