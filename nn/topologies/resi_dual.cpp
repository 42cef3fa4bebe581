// ResiDual / PPLN (Xie et al. 2023), exactly as the official code. TOPOLOGIES.md §3.
//
//   Two streams: x_a (Post-LN) and x_d (dual: un-normalised sum of sublayer outputs).
//   Stack start (resi_dual.py L74-81, L107, L226-243, L252):   x_d⁰ = s · x_a⁰     (from the embedding, not zeros)
//   Each sublayer f in order (SA, [CA,] F), with ONE dropout sample o shared by both streams
//   (resi_dual_layers.py L26-51 encoder, L116-177 decoder):
//       o   = D( f(x_a) )             # f reads x_a with no norm on its input; CA reads (x_a, enc)
//       x_d = x_d + s · o             # "dual_add"
//       x_a = LN_f( x_a + o )         # "residual_add" (the code writes o + x_a: the same sum)
//   Stack output (resi_dual.py L131, L283):  α · x_a + LN_final(x_d),  LN_final ε = 1e-7, α = 1.
//   The decoder's cross-attention reads this combined encoder output.
// s is cfg.resi_dual_scale (enc/dec_res_input_norm_scale, default 1.0; 0.05 for fp16 on OPUS-100). LN_final is of
// cfg's norm kind (LayerNorm in the paper); its ε stays 1e-7 as in the code.
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/topology.h"

namespace skipgrad::nn {
namespace {

constexpr double kAlpha = 1.0;           // enc_alpha / dec_alpha (ResiDualConfig L294-300)
constexpr double kFinalNormEps = 1e-7;   // resi_dual.py L24, L157

class ResiDualLayer : public Layer {
 public:
  ResiDualLayer(const TransformerConfig& cfg, Side side, int64_t index) : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  Stream apply(const Stream& in, const LayerInputs& ctx) override {
    if (!in.dual.defined())
      fail(current_scope(), ": ResiDual needs the dual stream x_d (begin the stack with the resi_dual topology)");
    Tensor x_a = in.x, x_d = in.dual;
    auto sublayer = [&](const char* name, const Tensor& o, Norm& norm) {
      x_d = dual_add(name, x_d, o);
      x_a = norm.forward(residual_add(name, x_a, o));
    };
    sublayer("self_attn", D("self_attn", SA(x_a, ctx)), *self_attn_norm);
    if (has_cross_attention()) sublayer("cross_attn", D("cross_attn", CA(x_a, ctx)), *cross_attn_norm);
    sublayer("ffn", D("ffn", F(x_a)), *ffn_norm);
    return {x_a, x_d};
  }

 private:
  // x_d + s·o, named "<sublayer>.dual_add" (s·o: "<sublayer>.dual_scale")
  Tensor dual_add(const char* sublayer, const Tensor& x_d, const Tensor& o) {
    Scope s(sublayer);
    const double scale = cfg.resi_dual_scale;
    Tensor y = add(x_d, scale == 1.0 ? o : mul(o, scale).named("dual_scale"));
    y.named("dual_add");
    return y;
  }

  std::shared_ptr<Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

class ResiDual : public Topology {
 public:
  std::string name() const override { return "resi_dual"; }

  std::vector<NamedModule> make_stack_modules(const TransformerConfig& cfg, Side side) override {
    scale_ = cfg.resi_dual_scale;
    final_norm_[index(side)] = make_norm(cfg.norm, cfg.d_model, kFinalNormEps, cfg.dyt_alpha);
    return {{"final_norm", final_norm_[index(side)]}};
  }

  // x_d⁰ = s · x_a⁰ ("enc.dual_scale")
  Stream begin_stack(const Tensor& x, Side) override {
    Tensor dual = scale_ == 1.0 ? x : mul(x, scale_).named("dual_scale");
    return {x, dual};
  }

  // α · x_a + LN_final(x_d)
  Tensor end_stack(const Stream& s, Side side) override {
    Tensor y = add(kAlpha == 1.0 ? s.x : mul(s.x, kAlpha), final_norm_[index(side)]->forward(s.dual));
    y.named("combine");
    return y;
  }

 protected:
  std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) override {
    return std::make_shared<ResiDualLayer>(cfg, side, index);
  }

 private:
  static int index(Side side) { return side == Side::Encoder ? 0 : 1; }
  double scale_ = 1.0;
  std::shared_ptr<Norm> final_norm_[2];
};

}  // namespace

std::unique_ptr<Topology> make_topology_resi_dual() { return std::make_unique<ResiDual>(); }

}  // namespace skipgrad::nn
