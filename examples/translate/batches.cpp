#include "batches.h"

#include <algorithm>
#include <numeric>

#include "tensor/random.h"

namespace translate {

using skipgrad::Tensor;

std::vector<Example> encode_pairs(const Vocab& vocab, const std::vector<Pair>& pairs, int64_t max_len) {
  std::vector<Example> out;
  out.reserve(pairs.size());
  for (const Pair& p : pairs) {
    Example e{vocab.encode(p.src), vocab.encode(p.tgt)};
    if ((int64_t)e.src.size() + 1 > max_len) e.src.resize(max_len - 1);  // keep room for eos
    if ((int64_t)e.tgt.size() + 1 > max_len) e.tgt.resize(max_len - 1);
    e.src.push_back(Vocab::kEos);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::vector<int64_t>> make_batches(const std::vector<Example>& ex, int64_t max_tokens, uint64_t seed,
                                               bool shuffle) {
  std::vector<int64_t> order(ex.size());
  std::iota(order.begin(), order.end(), 0);
  // Sort by length; a seeded random key breaks ties so epochs differ in batch composition.
  auto key = [&](int64_t i) { return skipgrad::random_bits(seed, (uint64_t)i); };
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    size_t la = std::max(ex[a].src.size(), ex[a].tgt.size() + 1), lb = std::max(ex[b].src.size(), ex[b].tgt.size() + 1);
    if (la != lb) return la < lb;
    return shuffle ? key(a) < key(b) : a < b;
  });
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> cur;
  int64_t cur_max = 0;
  for (int64_t i : order) {
    int64_t len = (int64_t)std::max(ex[i].src.size(), ex[i].tgt.size() + 1);
    int64_t new_max = std::max(cur_max, len);
    if (!cur.empty() && new_max * (int64_t)(cur.size() + 1) > max_tokens) {
      batches.push_back(std::move(cur));
      cur.clear();
      new_max = len;
    }
    cur.push_back(i);
    cur_max = new_max;
  }
  if (!cur.empty()) batches.push_back(std::move(cur));
  if (shuffle) {  // Fisher-Yates with the counter-based generator
    for (int64_t i = (int64_t)batches.size() - 1; i > 0; i--) {
      int64_t j = (int64_t)(skipgrad::random_bits(seed ^ 0x5151, (uint64_t)i) % (uint64_t)(i + 1));
      std::swap(batches[i], batches[j]);
    }
  }
  return batches;
}

Batch collate(const std::vector<Example>& ex, const std::vector<int64_t>& idx, skipgrad::Device device) {
  int64_t S = 1, T = 1;
  for (int64_t i : idx) {
    S = std::max<int64_t>(S, (int64_t)ex[i].src.size());
    T = std::max<int64_t>(T, (int64_t)ex[i].tgt.size() + 1);
  }
  const int64_t B = (int64_t)idx.size();
  std::vector<int64_t> src(B * S, Vocab::kPad), tin(B * T, Vocab::kPad), tout(B * T, Vocab::kPad);
  Batch b;
  for (int64_t r = 0; r < B; r++) {
    const Example& e = ex[idx[r]];
    for (size_t c = 0; c < e.src.size(); c++) src[r * S + c] = e.src[c];
    tin[r * T] = Vocab::kBos;
    for (size_t c = 0; c < e.tgt.size(); c++) {
      tin[r * T + c + 1] = e.tgt[c];
      tout[r * T + c] = e.tgt[c];
    }
    tout[r * T + e.tgt.size()] = Vocab::kEos;
    b.src_tokens += (int64_t)e.src.size();
    b.tgt_tokens += (int64_t)e.tgt.size() + 1;
  }
  b.src = Tensor::from_vector(src, {B, S}, device);
  b.tgt_in = Tensor::from_vector(tin, {B, T}, device);
  b.tgt_out = Tensor::from_vector(tout, {B, T}, device);
  b.indices = idx;
  return b;
}

}  // namespace translate
