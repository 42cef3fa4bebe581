// Drawing tokens from a model's next-token distribution, and generate(): a decoder-only model continuing prompts
// with the KV cache (Transformer::start_decoding / decode_step), greedy or sampled.
//
//   nn::GenerateOptions opt;  opt.max_new_tokens = 100;  opt.sampling = true;  opt.draw.temperature = 0.8;
//   std::vector<std::vector<int64_t>> out = nn::generate(lm, {{5, 6, 7}, {9}}, opt);   // new tokens per prompt
#pragma once
#include <cstdint>
#include <vector>

#include "nn/transformer.h"
#include "tensor/random.h"

namespace skipgrad::nn {

// How a token is drawn (fairseq's --sampling, Hugging Face's sampling order): softmax(log p / temperature) over the
// allowed tokens, cut to the top_k most likely (0: all), then to the fewest most likely whose renormalised
// probability reaches top_p (1: all), renormalised again.
struct SamplingOptions {
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  Generator* gen = nullptr;  // draws from it (the default generator if null): a seed repeats the draws
  // Optional, one per row of lp: row r's uniforms are random_uniform01(gen's seed, row_counters[r] + column), so its
  // draw depends on its counter (sampling_counter(key, step)) and not on the rows beside it. Empty: the next
  // counters of gen, which advances (a row's draw then depends on how many rows came before it).
  std::vector<uint64_t> row_counters;
};
// The counter of step `step` of a draw keyed `key` (a sentence's, a prompt's): random_bits(key, step), 64 random bits,
// so that two (key, step) pairs' ranges of columns meet with a probability of about columns / 2^64.
uint64_t sampling_counter(uint64_t key, uint64_t step);
// The keys of n rows' draws: `keys` when given (the caller has checked that there are n), else n fresh ones, k0,
// k0 + 1, ... with k0 = gen's next counter (the default generator if null), which advances by n.
std::vector<uint64_t> sampling_keys(const std::vector<uint64_t>& keys, int64_t n, Generator* gen);
// Throws an Error naming `who` and the option for a temperature <= 0 (or one whose inverse is not finite), a
// negative top_k or a top_p outside (0, 1].
void check_sampling_options(const SamplingOptions& opt, const char* who);

// One token per row of log-probabilities lp [R, V] (any device, any floating dtype) as `opt` says; excluded [V]
// (int64, lp's device) is 1 for the tokens never drawn. Returns int64 [R, 1] on lp's device; the same draws on
// every device. A row with no token to draw (every one excluded, or of log-probability -inf) gets -1, an id that
// every lookup (embedding, decode_step) refuses, not a token it was not to get.
Tensor sample_tokens(const Tensor& lp, const Tensor& excluded, const SamplingOptions& opt);

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  bool sampling = false;  // false: the most likely token (the first of equal ones)
  SamplingOptions draw;   // with sampling
  int64_t eos = -1;       // a row stops after emitting this id (-1: none)
  // With sampling, one per prompt: prompt r's draws are keyed keys[r] (sampling_counter), so its continuation is the
  // same whatever other prompts share the call (give each a fixed id: its line number). Empty: keys k0, k0 + 1, ...
  // with k0 = draw.gen's next counter (it advances by the prompts' count: a second call draws afresh).
  std::vector<uint64_t> keys;
};

// Continues each prompt (ids in [0, vocab), not the pad id, at least one each) of decoder-only model `lm` (eval
// mode) by up to max_new_tokens tokens and returns each row's new tokens (its eos included when emitted). Rows
// run together: one decode_step reads every prompt at once (left-padded to the longest; a pad has no position and
// is no key), then one step per new token, a finished row fed the pad id. The pad id is never emitted. Refuses an
// encoder-decoder model, a prompt that with its new tokens but the last (never fed) passes max_positions, and bad
// options, naming them.
std::vector<std::vector<int64_t>> generate(Transformer& lm, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& opt);

}  // namespace skipgrad::nn
