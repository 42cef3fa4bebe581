// Peri-LN (Kim et al. 2025, ICML, arXiv 2502.02732). TOPOLOGIES.md §5.3.
//
//   y_0 = Norm(x_embed)                                  (embedding norm, "embed_norm")
//   every sublayer f:   x ← x + D( Norm_out( f( Norm_in(x) ) ) )     (the Sandwich-LN layer)
//   final Norm on each stack; all norm weights stay learnable.
// Source: a third-party technical note summarising the paper [2ND]; the embedding norm, optional in the paper, is
// always on here (it is what distinguishes Peri-LN from Sandwich-LN in this code base).
#include "nn/topologies/sandwich.h"

namespace skipgrad::nn {
namespace {

class PeriLN : public FinalNormTopology {
 public:
  std::string name() const override { return "peri_ln"; }

  std::vector<NamedModule> make_stack_modules(const TransformerConfig& cfg, Side side) override {
    std::vector<NamedModule> mods = FinalNormTopology::make_stack_modules(cfg, side);
    embed_norm_[side == Side::Encoder ? 0 : 1] = make_norm(cfg, cfg.d_model);
    mods.emplace_back("embed_norm", embed_norm_[side == Side::Encoder ? 0 : 1]);
    return mods;
  }

  // y_0 = Norm(x_embed)
  Stream begin_stack(const Tensor& x, Side side) override {
    return {embed_norm_[side == Side::Encoder ? 0 : 1]->forward(x), Tensor()};
  }

 protected:
  std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) override {
    return std::make_shared<SandwichLayer>(cfg, side, index);
  }

 private:
  std::shared_ptr<Norm> embed_norm_[2];
};

}  // namespace

std::unique_ptr<Topology> make_topology_peri_ln() { return std::make_unique<PeriLN>(); }

}  // namespace skipgrad::nn
