// Token-budget batches with length bucketing, as fairseq builds them: sentences sorted by length, cut into
// batches whose padded size (max length × count) stays under the budget, batch order shuffled by a seed.
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"
#include "vocab.h"

namespace translate {

struct Example {
  std::vector<int> src;  // source ids + eos
  std::vector<int> tgt;  // target ids (no bos/eos)
};

struct Batch {
  skipgrad::Tensor src;      // int64 [B, S], padded with Vocab::kPad
  skipgrad::Tensor tgt_in;   // int64 [B, T]: bos + target
  skipgrad::Tensor tgt_out;  // int64 [B, T]: target + eos
  int64_t src_tokens = 0, tgt_tokens = 0;  // non-pad tokens
  std::vector<int64_t> indices;  // which examples, in order
};

std::vector<Example> encode_pairs(const Vocab& vocab, const std::vector<Pair>& pairs, int64_t max_len);
// Indices of the examples grouped into batches of at most max_tokens padded tokens per side.
std::vector<std::vector<int64_t>> make_batches(const std::vector<Example>& ex, int64_t max_tokens, uint64_t seed,
                                               bool shuffle);
// The padded id tensors of examples idx, made on `device` (one host-to-device copy each on a GPU).
Batch collate(const std::vector<Example>& ex, const std::vector<int64_t>& idx,
              skipgrad::Device device = skipgrad::Device::cpu());

}  // namespace translate
