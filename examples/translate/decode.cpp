#include "decode.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace translate {

using namespace skipgrad;

namespace {
// log-probabilities of the next token for every row of `prefix` [R, t]: a float vector [R * V].
std::vector<float> next_log_probs(nn::Transformer& model, const Tensor& enc, const Tensor& src_mask,
                                  const Tensor& prefix) {
  Tensor logits = model.decode(enc, src_mask, prefix);  // [R, t, V]
  Tensor last = logits.select(1, logits.size(1) - 1);   // [R, V]
  return log_softmax(last.to(DType::F32), -1).contiguous().to_vector<float>();
}

Tensor rows_to_tensor(const std::vector<std::vector<int>>& rows) {
  const int64_t R = (int64_t)rows.size(), T = (int64_t)rows[0].size();
  std::vector<int64_t> v;
  v.reserve(R * T);
  for (auto& r : rows) v.insert(v.end(), r.begin(), r.end());
  return Tensor::from_vector(v, {R, T});
}

// Repeats row b of x (dim 0) `times` times, keeping order: [B, ...] -> [B * times, ...].
Tensor repeat_rows(const Tensor& x, int64_t b, int64_t times) {
  Tensor row = x.narrow(0, b, 1);
  Shape s = row.shape();
  s[0] = times;
  return row.expand(s).contiguous();
}

std::vector<int> strip(const std::vector<int>& ids, const DecodeOptions& opt) {
  std::vector<int> out;
  for (size_t i = 1; i < ids.size(); i++) {  // skip bos
    if (ids[i] == opt.eos) break;
    out.push_back(ids[i]);
  }
  return out;
}
}  // namespace

std::vector<std::vector<int>> translate_batch(nn::Transformer& model, const Tensor& src, const DecodeOptions& opt) {
  NoGradGuard no_grad;
  const int64_t B = src.size(0);
  const int64_t V = model.config().vocab;
  Tensor src_mask = model.padding_mask(src);
  Tensor enc = model.encode(src);
  std::vector<int64_t> src_len(B, 0);
  {
    auto m = src_mask.to_vector<int64_t>();
    for (int64_t b = 0; b < B; b++)
      for (int64_t s = 0; s < src.size(1); s++) src_len[b] += m[b * src.size(1) + s] == 0;
  }
  std::vector<std::vector<int>> results(B);

  if (opt.beam <= 1) {  // greedy, the whole batch at once
    std::vector<std::vector<int>> rows(B, std::vector<int>{opt.bos});
    std::vector<bool> done(B, false);
    int64_t max_len = 0;
    for (int64_t b = 0; b < B; b++) max_len = std::max<int64_t>(max_len, (int64_t)(opt.max_len_a * src_len[b]) + opt.max_len_b);
    for (int64_t t = 0; t < max_len; t++) {
      std::vector<float> lp = next_log_probs(model, enc, src_mask, rows_to_tensor(rows));
      bool all_done = true;
      for (int64_t b = 0; b < B; b++) {
        int next = opt.pad;
        if (!done[b]) {
          const float* row = lp.data() + b * V;
          next = (int)(std::max_element(row, row + V) - row);
          if (next == opt.eos || t + 1 >= (int64_t)(opt.max_len_a * src_len[b]) + opt.max_len_b) done[b] = true;
        }
        rows[b].push_back(next);
        all_done = all_done && done[b];
      }
      if (all_done) break;
    }
    for (int64_t b = 0; b < B; b++) results[b] = strip(rows[b], opt);
    return results;
  }

  // Beam search, one sentence at a time with its K hypotheses batched.
  const int K = opt.beam;
  for (int64_t b = 0; b < B; b++) {
    const int64_t max_len = (int64_t)(opt.max_len_a * src_len[b]) + opt.max_len_b;
    Tensor enc_b = repeat_rows(enc, b, K), mask_b = repeat_rows(src_mask, b, K);
    struct Hyp { std::vector<int> ids; double score; };
    std::vector<Hyp> beams = {{{opt.bos}, 0.0}};
    std::vector<Hyp> finished;
    for (int64_t t = 0; t < max_len && !beams.empty(); t++) {
      std::vector<std::vector<int>> rows;
      for (auto& h : beams) rows.push_back(h.ids);
      const int64_t R = (int64_t)rows.size();
      std::vector<float> lp = next_log_probs(model, enc_b.narrow(0, 0, R), mask_b.narrow(0, 0, R), rows_to_tensor(rows));
      struct Cand { double score; int64_t r; int tok; };
      std::vector<Cand> cands;
      for (int64_t r = 0; r < R; r++)
        for (int64_t v = 0; v < V; v++)
          if (v != opt.pad && v != opt.bos) cands.push_back({beams[r].score + lp[r * V + v], r, (int)v});
      std::partial_sort(cands.begin(), cands.begin() + std::min<size_t>(cands.size(), 2 * K), cands.end(),
                        [](const Cand& x, const Cand& y) { return x.score > y.score; });
      std::vector<Hyp> next;
      for (size_t c = 0; c < cands.size() && (int)next.size() < K && c < (size_t)2 * K; c++) {
        Hyp h{beams[cands[c].r].ids, cands[c].score};
        h.ids.push_back(cands[c].tok);
        if (cands[c].tok == opt.eos || t + 1 == max_len) finished.push_back(h);
        else next.push_back(h);
      }
      beams = std::move(next);
      if ((int)finished.size() >= K) break;
    }
    for (auto& h : beams) finished.push_back(h);
    auto norm_score = [&](const Hyp& h) { return h.score / std::pow((double)(h.ids.size() - 1), opt.len_penalty); };
    auto best = std::max_element(finished.begin(), finished.end(),
                                 [&](const Hyp& x, const Hyp& y) { return norm_score(x) < norm_score(y); });
    results[b] = strip(best->ids, opt);
  }
  return results;
}

}  // namespace translate
