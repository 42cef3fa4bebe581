// Checks shared by the position-encoding tests (test_positions.cpp, test_alibi.cpp) on the tests' tiny
// encoder-decoder (vocab 13; tiny_transformer in test_util.h).
#pragma once
#include <utility>
#include <vector>

#include "analysis/graph.h"
#include "nn/generate.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "test_util.h"

namespace sgtest {

// decode_step over two target rows of 4 tokens equals decode's last position at every step (float64 model, eval);
// from step `swap_at` on (-1: never) the rows are swapped, as a beam search reorders its hypotheses
// (DecoderState::reorder; the memory rows follow).
inline void check_decode_step_equals_decode(skipgrad::nn::Transformer& model, const Tensor& src, int64_t swap_at) {
  model.eval();
  NoGradGuard no_grad;
  Tensor enc = model.encode(src), mask = model.padding_mask(src);
  std::vector<std::vector<int64_t>> rows = {{2, 9, 10, 11}, {2, 3, 4, 5}};
  skipgrad::nn::DecoderState st = model.start_decoding(enc, mask);
  const Tensor swap = Tensor::from_vector<int64_t>({1, 0}, {2});
  for (int64_t t = 0; t < 4; t++) {
    if (t == swap_at) {
      st.reorder({1, 0});
      std::swap(rows[0], rows[1]);
      enc = index_select(enc, 0, swap);
      mask = index_select(mask, 0, swap);
    }
    Tensor step = model.decode_step(st, Tensor::from_vector<int64_t>({rows[0][t], rows[1][t]}, {2}));
    std::vector<int64_t> prefix;
    for (const auto& r : rows) prefix.insert(prefix.end(), r.begin(), r.begin() + t + 1);
    Tensor full = model.decode(enc, mask, Tensor::from_vector(prefix, {2, t + 1})).slice(1, t, t + 1).reshape({2, 13});
    INFO("step " << t);
    CHECK(max_abs_diff(step, full) < 1e-12);
  }
}

// A decoder-only LM of vocabulary 13 (float64, eval) with no positions table runs a 12-token sequence, past a
// max_positions of 8: decode_step equals the forward at every position, generate makes 10 tokens, and the emulated
// or real GPU gives the forward's logits (no embedding lookup there flags a position past a table). Returns the
// input and the CPU forward's logits.
inline std::pair<Tensor, Tensor> check_runs_past_max_positions(skipgrad::nn::Transformer& lm) {
  NoGradGuard no_grad;
  std::vector<int64_t> v(12);
  for (int64_t t = 0; t < 12; t++) v[t] = 2 + t % 10;
  const Tensor in = Tensor::from_vector<int64_t>(v, {1, 12});
  const Tensor all = lm.forward(in);
  skipgrad::nn::DecoderState st = lm.start_decoding(1);
  for (int64_t t = 0; t < 12; t++) {
    const Tensor step = lm.decode_step(st, Tensor::from_vector<int64_t>({v[t]}, {1}));
    INFO("step " << t);
    CHECK(max_abs_diff(step, all.slice(1, t, t + 1).reshape({1, 13})) < 1e-12);
  }
  skipgrad::nn::GenerateOptions g;
  g.max_new_tokens = 10;
  CHECK(skipgrad::nn::generate(lm, {{2, 3, 4}}, g)[0].size() == 10);
  if (cuda_available()) {
    lm.to(Device::cuda());
    CHECK(max_abs_diff(lm.forward(in.to(Device::cuda())).to(Device::cpu()), all) < 1e-12);
    lm.to(Device::cpu());
  }
  return {in, all};
}

// The graph of one training forward and loss of `model` on `src` and a fixed target batch (no value norms); the
// thread's tape is cleared before and after.
inline Graph training_graph(skipgrad::nn::Transformer& model, const Tensor& src) {
  current_tape().clear();
  model.train();
  const Tensor tgt_in = Tensor::from_vector<int64_t>({2, 9, 10, 11, 2, 3, 4, 5}, {2, 4});
  const Tensor tgt_out = Tensor::from_vector<int64_t>({9, 10, 11, 2, 3, 4, 5, 2}, {2, 4});
  Tensor loss = skipgrad::nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, 1, 0.1).loss;
  GraphOptions go;
  go.value_norms = false;
  Graph g = Graph::from_tape(current_tape(), go);
  current_tape().clear();
  return g;
}

}  // namespace sgtest
