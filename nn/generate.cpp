#include "nn/generate.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

void check_sampling_options(const SamplingOptions& opt, const char* who) {
  if (!(opt.temperature > 0 && std::isfinite(1.0 / opt.temperature) && std::isfinite(opt.temperature)))
    fail(who, ": temperature must be > 0 (and its inverse finite), got ", number_str(opt.temperature));
  check(opt.top_k >= 0, who, ": top_k must be >= 0 (0: all tokens), got ", opt.top_k);
  if (!(opt.top_p > 0 && opt.top_p <= 1)) fail(who, ": top_p must be in (0, 1], got ", number_str(opt.top_p));
}

// The draw, in float64 whatever lp's dtype:
//   z = (lp - the row's best) / temperature over the allowed tokens (excluded: -inf; the best stays 0, so a tiny
//       temperature is greedy, never 0 * inf), cut to its top k (sorted, most likely first);
//   top p: p = exp(z - logsumexp(z)) of the sorted list, and a token whose predecessors' mass sum(p_<i) >= top_p
//       is cut (z = -inf), so the first always stays;
//   the draw is Gumbel-max: argmax(z + g), g = -log(-log U), U uniform in [0, 1), picks column i with probability
//       softmax(z)_i exactly, with no host read and no cumulative sums.
// Top p alone needs the list sorted. A partial sort of the first K columns costs far less than a sort of V on the
// CPU: K = 1024 first, and 4x more (or V) while some row's nucleus is not among them (a host read of the smallest
// mass they hold, each time). The GPU does the same, though its topk sorts whole rows anyway, so that the draw's
// columns, and so the draws, are the same on every device.
constexpr int64_t kNucleusFirst = 1024;

Tensor sample_tokens(const Tensor& lp, const Tensor& excluded, const SamplingOptions& opt) {
  check_sampling_options(opt, "sample_tokens");  // (a negative temperature would turn an excluded -inf into +inf)
  NoGradGuard no_grad;
  const int64_t V = lp.size(-1);
  Tensor z = masked_fill(lp.to(DType::F64), excluded, -INFINITY);
  const Tensor best = max(z, {1}, true);  // [R, 1]; -inf: the row has no token to draw
  z = mul(sub(z, best), 1.0 / opt.temperature);
  Tensor ids;  // [R, K]: the token in each column of z (undefined: column v is token v)
  if (opt.top_k > 0 && opt.top_k < V) {
    const TopK top = topk(z, opt.top_k, 1);
    z = top.values;
    ids = top.indices;
  }
  if (opt.top_p < 1) {
    const Tensor log_total = log(sum(exp(z), {1}, true));  // >= 0: the best column is exp(0)
    if (!ids.defined()) {
      int64_t k = std::min(V, kNucleusFirst);
      TopK top = topk(z, k, 1);
      while (k < V && min(sum(exp(sub(top.values, log_total)), {1})).item() < opt.top_p) {
        k = 8 * k >= V ? V : 4 * k;  // a flat row: its nucleus is past these columns (a partial sort of half a
                                     // row costs more than a sort of all of it)
        top = topk(z, k, 1);
      }
      z = top.values;
      ids = top.indices;
    }
    const Tensor p = exp(sub(z, log_total));
    const Tensor before = sub(cumsum(p, 1), p);  // the mass of the more likely columns
    z = masked_fill(z, ge(before, Tensor::scalar(opt.top_p, DType::F64, z.device())), -INFINITY);
  }
  const int64_t R = z.size(0), K = z.size(1);
  Tensor u;  // [R, K], column c of row r: the c-th token or the c-th most likely
  if (opt.row_counters.empty()) {
    u = Tensor::rand(z.shape(), 0, 1, DType::F64, z.device(), opt.gen);
  } else {
    check((int64_t)opt.row_counters.size() == R, "sample_tokens", ": ", opt.row_counters.size(),
          " row counters for ", R, " rows of log-probabilities ", lp.meta_str());
    u = Tensor::rand_rows(opt.row_counters, K, (opt.gen ? *opt.gen : default_generator()).seed(), z.device());
  }
  const Tensor pick = argmax(sub(z, log(neg(log(u)))), 1, true);  // [R, 1]
  // a row with no token to draw (each excluded or of log-probability -inf) gets -1, which every lookup refuses,
  // rather than a token it was not to get (a check here would read the device back)
  const Tensor none = eq(best, Tensor::scalar(-INFINITY, DType::F64, z.device()));
  return masked_fill(ids.defined() ? gather(ids, 1, pick) : pick, none, -1);
}

uint64_t sampling_counter(uint64_t key, uint64_t step) { return random_bits(key, step); }

std::vector<uint64_t> sampling_keys(const std::vector<uint64_t>& keys, int64_t n, Generator* gen) {
  if (!keys.empty()) return keys;
  std::vector<uint64_t> fresh(n);
  const uint64_t first = (gen ? *gen : default_generator()).advance((uint64_t)n);
  for (int64_t r = 0; r < n; r++) fresh[r] = first + (uint64_t)r;
  return fresh;
}

std::vector<std::vector<int64_t>> generate(Transformer& lm, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& opt) {
  const char* who = "generate";
  const TransformerConfig& cfg = lm.config();
  check(cfg.decoder_only(), who, ": needs a decoder-only model (enc_layers 0); this one has ", cfg.enc_layers,
        " encoder layers (translate with Transformer::start_decoding(encode(src), ...) and decode_step)");
  check(!lm.is_training(), who, ": the model is in training mode; call eval() first (dropout would differ per step)");
  check(!prompts.empty(), who, ": no prompts");
  check(opt.max_new_tokens >= 0, who, ": max_new_tokens must be >= 0, got ", opt.max_new_tokens);
  check(opt.eos >= -1 && opt.eos < cfg.vocab && opt.eos != cfg.pad_id, who, ": eos ", opt.eos,
        " outside the vocabulary [0, ", cfg.vocab, ") or the pad id ", cfg.pad_id,
        ", which is never emitted (or -1: none)");
  if (opt.sampling) check_sampling_options(opt.draw, who);
  const int64_t R = (int64_t)prompts.size();
  check(opt.keys.empty() || (int64_t)opt.keys.size() == R, who, ": ", opt.keys.size(), " keys for ", R, " prompts");
  int64_t longest = 0;
  for (int64_t r = 0; r < R; r++) {
    const std::vector<int64_t>& p = prompts[r];
    check(!p.empty(), who, ": prompt ", r, " is empty (start it with a token, e.g. one that begins a text)");
    for (int64_t id : p)
      check(id >= 0 && id < cfg.vocab && id != cfg.pad_id, who, ": prompt ", r, " holds id ", id,
            ", outside the vocabulary [0, ", cfg.vocab, ") or the pad id ", cfg.pad_id);
    // the positions fed: the prompt and every new token but the last, which is never fed (none: nothing is fed)
    const int64_t fed = (int64_t)p.size() + opt.max_new_tokens - 1;
    check(opt.max_new_tokens == 0 || fed <= cfg.position_limit(), who, ": prompt ", r, " of ", p.size(), " tokens and ",
          opt.max_new_tokens, " new ones feed ", fed, " positions (the last new token is not fed), more than max_positions ",
          cfg.max_positions);
    longest = std::max(longest, (int64_t)p.size());
  }
  std::vector<std::vector<int64_t>> out(R);
  if (opt.max_new_tokens == 0) return out;
  NoGradGuard no_grad;
  const Device device = lm.tgt_embed->weight.device();
  std::vector<int64_t> excluded_host(cfg.vocab, 0);
  excluded_host[cfg.pad_id] = 1;
  const Tensor excluded = Tensor::from_vector(excluded_host, {cfg.vocab}, device);
  DecoderState st = lm.start_decoding(R);
  // Prefill: every prompt in one decode_step, left-padded to the longest (a pad has no position and is no key, so
  // each row sees its own prompt only); the last position's logits give every row its first new token. Then one
  // step per new token, a finished row fed the pad id.
  std::vector<int64_t> block(R * longest, cfg.pad_id);
  for (int64_t r = 0; r < R; r++) {
    const std::vector<int64_t>& p = prompts[r];
    std::copy(p.begin(), p.end(), block.begin() + (r + 1) * longest - (int64_t)p.size());
  }
  Tensor logits = lm.decode_step(st, Tensor::from_vector(block, {R, longest}, device));  // [R, V]
  std::vector<bool> done(R, false);
  SamplingOptions draw = opt.draw;  // with each step's row counters
  const std::vector<uint64_t> keys = opt.sampling ? sampling_keys(opt.keys, R, opt.draw.gen) : std::vector<uint64_t>{};
  for (int64_t k = 0;; k++) {  // the k-th new token of every unfinished row
    // each row's token and its logit, in one read: a NaN or inf logit is an error
    const Tensor allowed = masked_fill(logits, excluded, -INFINITY);
    draw.row_counters.clear();
    for (uint64_t key : keys) draw.row_counters.push_back(sampling_counter(key, (uint64_t)k));
    const Tensor pick = opt.sampling ? sample_tokens(log_softmax(logits, -1), excluded, draw)
                                     : topk(allowed, 1).indices;  // [R, 1]
    const std::vector<double> read =
        concat({pick.to(DType::F64), gather(allowed, 1, pick).to(DType::F64)}, 1).to_vector<double>();
    std::vector<int64_t> fed(R, cfg.pad_id);
    for (int64_t r = 0; r < R; r++) {
      if (done[r]) continue;
      if (!std::isfinite(read[2 * r + 1]))
        fail(who, ": row ", r, "'s next-token logits at position ", (int64_t)prompts[r].size() - 1 + k,
             " are not finite (", read[2 * r + 1], " picked): the model's weights or inputs hold NaN/inf");
      out[r].push_back((int64_t)read[2 * r]);
      done[r] = (int64_t)out[r].size() == opt.max_new_tokens || out[r].back() == opt.eos;
      if (!done[r]) fed[r] = out[r].back();
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    logits = lm.decode_step(st, Tensor::from_vector(fed, {R}, device));
  }
  return out;
}

}  // namespace skipgrad::nn
