#include "decode.h"

#include <algorithm>
#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/generate.h"

namespace translate {

using namespace skipgrad;

namespace {

bool candidate(int64_t v, const DecodeOptions& opt) { return v != opt.pad && v != opt.bos; }

// [V] int64 on `device`: 1 for the tokens no search emits (pad, bos).
Tensor excluded_tokens(int64_t V, const DecodeOptions& opt, Device device) {
  std::vector<int64_t> excluded(V);
  for (int64_t v = 0; v < V; v++) excluded[v] = !candidate(v, opt);
  return Tensor::from_vector(excluded, {V}, device);
}

// A stepper of a Transformer: the next-token logits [R, V] of its rows, on the model's device. step() downloads
// their log-softmax; pick() picks on the device (the best: masked_fill of pad and bos, topk 1; or a draw:
// sample_tokens) and downloads [R, 2].
class ModelStepper : public Stepper {
 public:
  explicit ModelStepper(nn::Transformer& model) : model_(model) {}
  virtual Tensor logits(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens) = 0;
  std::vector<double> step(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens) override {
    return log_softmax(logits(parents, tokens), -1).to(DType::F64).contiguous().to_vector<double>();
  }
  std::vector<Pick> pick(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens,
                         const DecodeOptions& opt, const std::vector<uint64_t>& draw_counters) override {
    const Tensor lp = log_softmax(logits(parents, tokens), -1);
    const int64_t R = lp.size(0);
    if (!excluded_.defined()) excluded_ = excluded_tokens(vocab(), opt, lp.device());  // one search, one upload
    const Tensor token = opt.sampling ? sample_tokens(lp, excluded_, opt, draw_counters)  // [R, 1]
                                      : topk(masked_fill(lp, excluded_, -INFINITY), 1).indices;
    const std::vector<double> picked =  // [R, 2]: token (exact in double), log-probability
        concat({token.to(DType::F64), gather(lp, 1, token).to(DType::F64)}, 1).to_vector<double>();
    std::vector<Pick> out(R);
    for (int64_t r = 0; r < R; r++) out[r] = {(int64_t)picked[2 * r], picked[2 * r + 1]};
    return out;
  }
  int64_t vocab() const override { return model_.config().vocab; }

 protected:
  nn::Transformer& model_;

 private:
  Tensor excluded_;  // [V], 1 for pad and bos (one search, one DecodeOptions)
};

// Incremental: the decoder state's caches follow the rows (reorder), each step feeds one token per row.
class CachedStepper : public ModelStepper {
 public:
  CachedStepper(nn::Transformer& model, const Tensor& enc, const Tensor& src_mask)
      : ModelStepper(model), state_(model.start_decoding(enc, src_mask)) {}
  Tensor logits(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens) override {
    state_.reorder(parents);
    return model_.decode_step(state_, Tensor::from_vector(tokens, {(int64_t)tokens.size()}));
  }

 private:
  nn::DecoderState state_;
};

// The reference: keeps each row's prefix and re-runs the decoder on all of it, keeping the last position.
class FullStepper : public ModelStepper {
 public:
  FullStepper(nn::Transformer& model, const Tensor& enc, const Tensor& src_mask)
      : ModelStepper(model), enc_(enc), src_mask_(src_mask.to(enc.dtype())) {}
  Tensor logits(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens) override {
    const int64_t R = (int64_t)parents.size();
    std::vector<std::vector<int64_t>> prefix(R);
    std::vector<int64_t> sentence(R), ids;
    for (int64_t r = 0; r < R; r++) {
      const bool first = prefix_.empty();
      sentence[r] = first ? parents[r] : sentence_[parents[r]];
      if (!first) prefix[r] = prefix_[parents[r]];
      prefix[r].push_back(tokens[r]);
    }
    prefix_ = std::move(prefix);
    sentence_ = std::move(sentence);
    const int64_t T = (int64_t)prefix_[0].size();
    for (auto& p : prefix_) ids.insert(ids.end(), p.begin(), p.end());
    Tensor all = model_.decode(nn::select_rows(enc_, sentence_), nn::select_rows(src_mask_, sentence_),
                               Tensor::from_vector(ids, {R, T}, enc_.device()));  // [R, T, V]
    return all.select(1, T - 1);
  }

 private:
  Tensor enc_, src_mask_;
  std::vector<std::vector<int64_t>> prefix_;
  std::vector<int64_t> sentence_;  // row -> sentence
};

// The emitted tokens without a final eos.
Hypothesis finish(std::vector<int> ids, double score, const DecodeOptions& opt) {
  if (!ids.empty() && ids.back() == opt.eos) ids.pop_back();
  return {std::move(ids), score};
}

// Greedy or sampling: one row per unfinished sentence, its token picked by Stepper::pick (a draw at step t of
// sentence b from the counter nn::sampling_counter(key b, t)).
std::vector<Hypothesis> one_best(Stepper& model, const std::vector<int64_t>& max_len, const DecodeOptions& opt) {
  const int64_t B = (int64_t)max_len.size();
  std::vector<std::vector<int>> ids(B);
  std::vector<double> score(B, 0.0);
  std::vector<int64_t> rows(B), parents(B), tokens(B, opt.bos);  // rows: the sentence of each live row
  for (int64_t b = 0; b < B; b++) rows[b] = parents[b] = b;
  // each sentence's sampling key: opt.sentence_keys (B of them: check_sampling_options), or the generator's next B
  const std::vector<uint64_t> keys =
      opt.sampling ? nn::sampling_keys(opt.sentence_keys, B, opt.gen) : std::vector<uint64_t>{};
  std::vector<uint64_t> counters;
  for (int64_t t = 0; !rows.empty(); t++) {
    counters.clear();
    if (opt.sampling)
      for (int64_t b : rows) counters.push_back(nn::sampling_counter(keys[b], (uint64_t)t));
    const std::vector<Stepper::Pick> picks = opt.device_pick ? model.pick(parents, tokens, opt, counters)
                                                             : model.Stepper::pick(parents, tokens, opt, counters);
    std::vector<int64_t> next_rows;
    parents.clear();
    tokens.clear();
    for (int64_t r = 0; r < (int64_t)rows.size(); r++) {
      const int64_t best = picks[r].token, b = rows[r];
      ids[b].push_back((int)best);
      score[b] += picks[r].logp;
      if (best == opt.eos || t + 1 >= max_len[b]) continue;  // finished: its row is dropped
      next_rows.push_back(b);
      parents.push_back(r);
      tokens.push_back(best);
    }
    rows = std::move(next_rows);
  }
  std::vector<Hypothesis> out;
  for (int64_t b = 0; b < B; b++) out.push_back(finish(ids[b], score[b], opt));
  return out;
}

std::vector<Hypothesis> beam_search(Stepper& model, const std::vector<int64_t>& max_len, const DecodeOptions& opt) {
  const int64_t B = (int64_t)max_len.size(), V = model.vocab(), K = opt.beam;
  struct Hyp {
    std::vector<int> ids;  // emitted tokens, eos included when finished by it
    double score;
  };
  auto norm = [&](const Hyp& h) {  // the ranking score: score / length^len_penalty
    return h.score / std::pow((double)std::max<size_t>(h.ids.size(), 1), opt.len_penalty);
  };
  auto by_norm = [&](const Hyp& x, const Hyp& y) { return norm(x) < norm(y); };
  // Live hypotheses of the unfinished sentences sit in the batch in sentence order, one row each.
  std::vector<std::vector<Hyp>> live(B, std::vector<Hyp>{Hyp{{}, 0.0}}), finished(B);
  std::vector<bool> done(B, false);
  std::vector<int64_t> parents(B), tokens(B, opt.bos);
  for (int64_t b = 0; b < B; b++) parents[b] = b;
  for (int64_t t = 0; !parents.empty(); t++) {
    std::vector<double> lp = model.step(parents, tokens);
    parents.clear();
    tokens.clear();
    int64_t row0 = 0;  // the first row of sentence b
    for (int64_t b = 0; b < B; b++) {
      if (done[b]) continue;
      struct Cand {
        double score;
        int64_t i, v;  // extends live[b][i] by token v
      };
      std::vector<Cand> cands;
      for (int64_t i = 0; i < (int64_t)live[b].size(); i++)
        for (int64_t v = 0; v < V; v++)
          if (candidate(v, opt)) cands.push_back({live[b][i].score + lp[(row0 + i) * V + v], i, v});
      const size_t top = std::min<size_t>(cands.size(), 2 * K);
      std::partial_sort(cands.begin(), cands.begin() + top, cands.end(), [](const Cand& x, const Cand& y) {
        return x.score != y.score ? x.score > y.score : (x.i != y.i ? x.i < y.i : x.v < y.v);
      });
      std::vector<Hyp> next;
      for (size_t c = 0; c < top && (int64_t)next.size() < K; c++) {
        Hyp h{live[b][cands[c].i].ids, cands[c].score};
        h.ids.push_back((int)cands[c].v);
        if (cands[c].v == opt.eos || t + 1 >= max_len[b]) {
          if ((int64_t)c < K) finished[b].push_back(std::move(h));  // fairseq finalizes eos only among the top K
        } else {
          next.push_back(std::move(h));
          parents.push_back(row0 + cands[c].i);
          tokens.push_back(cands[c].v);
        }
      }
      row0 += (int64_t)live[b].size();
      live[b] = std::move(next);
      // Done with `beam` finished hypotheses, unless a live one already ranks above the best of them (scored at
      // its current length, as Hugging Face's default; fairseq stops regardless, which with small beams ends
      // sentences on short early-eos hypotheses); beam 1 stays greedy.
      const bool live_leads = !finished[b].empty() && !live[b].empty() &&
                              norm(*std::max_element(live[b].begin(), live[b].end(), by_norm)) >
                                  norm(*std::max_element(finished[b].begin(), finished[b].end(), by_norm));
      if (((int64_t)finished[b].size() >= K && !live_leads) || live[b].empty()) {
        done[b] = true;
        parents.resize(parents.size() - live[b].size());  // its rows leave the batch
        tokens.resize(tokens.size() - live[b].size());
      }
    }
  }
  std::vector<Hypothesis> out;
  for (int64_t b = 0; b < B; b++) {
    const std::vector<Hyp>& pool = finished[b].empty() ? live[b] : finished[b];
    auto best = std::max_element(pool.begin(), pool.end(), by_norm);
    out.push_back(best == pool.end() ? Hypothesis{} : finish(best->ids, best->score, opt));
  }
  return out;
}

}  // namespace

std::vector<Stepper::Pick> Stepper::pick(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens,
                                         const DecodeOptions& opt, const std::vector<uint64_t>& draw_counters) {
  const std::vector<double> lp = step(parents, tokens);
  const int64_t V = vocab(), R = (int64_t)parents.size();
  std::vector<int64_t> token(R, -1);
  if (opt.sampling) {  // the same draw as on a device, from these log-probabilities
    const Tensor excluded = excluded_tokens(V, opt, Device::cpu());
    token = sample_tokens(Tensor::from_vector(lp, {R, V}), excluded, opt, draw_counters).to_vector<int64_t>();
  } else {
    for (int64_t r = 0; r < R; r++)
      for (int64_t v = 0; v < V; v++)
        if (candidate(v, opt) && (token[r] < 0 || lp[r * V + v] > lp[r * V + token[r]])) token[r] = v;
  }
  std::vector<Pick> out(R);
  for (int64_t r = 0; r < R; r++) out[r] = {token[r], lp[r * V + token[r]]};
  return out;
}

Tensor sample_tokens(const Tensor& lp, const Tensor& excluded, const DecodeOptions& opt,
                     const std::vector<uint64_t>& row_counters) {
  return nn::sample_tokens(lp, excluded,
                           {opt.temperature, opt.sampling_topk, opt.sampling_topp, opt.gen, row_counters});
}

// The sampling options for B sentences, checked before any work (decode_batch: before the encoder runs).
static void check_sampling_options(const DecodeOptions& opt, int64_t B) {
  if (!opt.sampling) return;
  check(opt.sentence_keys.empty() || (int64_t)opt.sentence_keys.size() == B, "decode", ": ",
        opt.sentence_keys.size(), " sentence keys for ", B, " sentences");
  check(opt.beam <= 1, "decode", ": sampling draws one hypothesis per sentence: beam must be 1, got ", opt.beam);
  check(opt.temperature > 0 && std::isfinite(1.0 / opt.temperature) && std::isfinite(opt.temperature), "decode",
        ": temperature must be > 0 (and its inverse finite), got ", opt.temperature);
  check(opt.sampling_topk >= 0, "decode", ": sampling_topk must be >= 0 (0: all tokens), got ", opt.sampling_topk);
  check(opt.sampling_topp > 0 && opt.sampling_topp <= 1, "decode", ": sampling_topp must be in (0, 1], got ",
        opt.sampling_topp);
}

std::vector<Hypothesis> search(Stepper& model, const std::vector<int64_t>& max_len, const DecodeOptions& opt) {
  check_sampling_options(opt, (int64_t)max_len.size());
  return opt.beam <= 1 ? one_best(model, max_len, opt) : beam_search(model, max_len, opt);
}

std::vector<Hypothesis> decode_batch(nn::Transformer& model, const Tensor& src_ids, const DecodeOptions& opt) {
  check_sampling_options(opt, src_ids.dim() > 0 ? src_ids.size(0) : 0);
  NoGradGuard no_grad;
  const Tensor src = src_ids.to(model.device());  // the search runs on the host, the model where it lives
  const int64_t B = src.size(0), S = src.size(1);
  Tensor src_mask = model.padding_mask(src);
  Tensor enc = model.encode(src);
  std::vector<int64_t> max_len(B, 0);
  const std::vector<int64_t> pad = src_mask.to_vector<int64_t>();
  for (int64_t b = 0; b < B; b++) {
    int64_t len = 0;
    for (int64_t s = 0; s < S; s++) len += pad[b * S + s] == 0;
    // fairseq's a·|src| + b, within the model's positions (the prefix, bos included, is at most max_len; ALiBi
    // and none have no limit)
    max_len[b] = std::min<int64_t>((int64_t)(opt.max_len_a * (double)len) + opt.max_len_b,
                                   model.config().position_limit());
  }
  if (opt.use_cache) {
    CachedStepper stepper(model, enc, src_mask);
    return search(stepper, max_len, opt);
  }
  FullStepper stepper(model, enc, src_mask);
  return search(stepper, max_len, opt);
}

std::vector<std::vector<int>> translate_batch(nn::Transformer& model, const Tensor& src, const DecodeOptions& opt) {
  std::vector<std::vector<int>> out;
  for (Hypothesis& h : decode_batch(model, src, opt)) out.push_back(std::move(h.ids));
  return out;
}

}  // namespace translate
