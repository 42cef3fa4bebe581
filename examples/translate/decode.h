// Greedy and beam-search decoding with a trained Transformer.
#pragma once
#include <vector>

#include "nn/transformer.h"

namespace translate {

struct DecodeOptions {
  int beam = 1;               // 1: greedy
  double len_penalty = 1.0;   // fairseq lenpen: hypotheses ranked by score / length^len_penalty
  double max_len_a = 1.2;     // max target length = a * source length + b (fairseq max_len_a/b)
  int max_len_b = 10;
  int eos = 3, bos = 2, pad = 0;
};

// src: int64 [B, S] padded. Returns the target ids of each sentence (without bos/eos).
std::vector<std::vector<int>> translate_batch(skipgrad::nn::Transformer& model, const skipgrad::Tensor& src,
                                              const DecodeOptions& opt);

}  // namespace translate
