// Uses skipgrad from outside its tree (tests/consumer/CMakeLists.txt): trains a 1+1-layer Post-LN Transformer to
// copy a sequence for 30 Adam steps, then snapshots the last step's graph and runs the gradient-path analysis.
// Exits 0 only when the loss fell and the graph reads as expected.
#include <cstdio>

#include "skipgrad.h"

using namespace skipgrad;

int main() try {
  manual_seed(0);
  nn::TransformerConfig cfg;
  cfg.vocab = 12; cfg.d_model = 16; cfg.heads = 2; cfg.d_ff = 32;
  cfg.enc_layers = cfg.dec_layers = 1;
  cfg.dropout = 0;
  cfg.topology = nn::Topology::PostLN;
  nn::Transformer model(cfg);
  nn::Adam opt(model.named_parameters(), {.lr = 1e-2});

  // copy task: target = source, decoder fed the source shifted right behind BOS (id 0; 1 is padding)
  Tensor src = Tensor::from_vector(std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11}, {2, 4});
  Tensor tgt_in = Tensor::from_vector(std::vector<int64_t>{0, 4, 5, 6, 0, 8, 9, 10}, {2, 4});
  double first = 0, last = 0;
  for (int step = 0; step < 30; step++) {
    Tensor logits = model.forward(src, tgt_in);
    nn::LabelSmoothedLoss loss = nn::label_smoothed_nll(logits, src, cfg.pad_id, 0.1);
    (step == 0 ? first : last) = loss.loss.item();
    // keep the last step's graph for the analysis below
    if (step == 29) {
      loss.loss.backward({}, /*retain_graph=*/true);
    } else {
      loss.loss.backward();
    }
    opt.step();
    opt.zero_grad();
  }
  Graph g = Graph::from_tape(current_tape());
  PathStats paths = analyze_paths(g);
  const bool has_residual = !g.find_all("enc.0.ffn.residual_add").empty();
  std::printf("loss %.4f -> %.4f, graph: %zu nodes, %zu parameters, %zu layer rows in the path analysis\n", first,
              last, g.nodes.size(), g.params.size(), paths.layers.size());
  return last < first && has_residual && !paths.layers.empty() ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "consumer: %s\n", e.what());
  return 1;
}
