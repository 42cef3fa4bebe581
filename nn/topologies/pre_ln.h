// The Pre-LN layer, shared by pre_ln.cpp and sub_ln.cpp (Sub-LN's layer is Pre-LN's, with norms inside its
// sublayers).
#pragma once
#include "nn/topology.h"

namespace skipgrad::nn {

// x ← x + D( f( LN_f(x) ) ) for every sublayer f (SA, [CA,] F).
class PreLNLayer : public Layer {
 public:
  PreLNLayer(const TransformerConfig& cfg, Side side, int64_t index);

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override;

 private:
  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

}  // namespace skipgrad::nn
