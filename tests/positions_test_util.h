// Checks shared by the position-encoding tests (test_positions.cpp, test_alibi.cpp) on the tests' tiny
// encoder-decoder (vocab 13; tiny_transformer in test_util.h).
#pragma once
#include <utility>
#include <vector>

#include "analysis/graph.h"
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
