// Greedy, sampling and beam-search decoding with a trained Transformer, batched. By default incremental: the
// decoder keeps every layer's keys and values (nn::DecoderState), so each new token costs one position;
// DecodeOptions::use_cache = false re-runs the decoder on the whole prefix each step instead (the reference for
// tests and benchmarks).
//
// One search drives them all: it sees the model only through a Stepper (next-token log-probabilities of R rows, each
// row continuing a row of the step before), so cached and full decoding differ in nothing but the stepper.
#pragma once
#include <cstdint>
#include <vector>

#include "nn/transformer.h"
#include "tensor/random.h"

namespace translate {

struct DecodeOptions {
  int beam = 1;               // 1: greedy
  double len_penalty = 1.0;   // fairseq lenpen: finished hypotheses ranked by score / length^len_penalty
  double max_len_a = 1.2;     // max target length = a * source length + b (fairseq max_len_a/b)
  int max_len_b = 10;
  int eos = 3, bos = 2, pad = 0;
  bool use_cache = true;      // false: re-run the decoder on the whole prefix at every step
  // Beam 1: pick each row's token on the model's device and download two numbers per row (true), or download the
  // rows' log-probabilities and pick on the host (false: the reference). The same tokens and scores either way (a
  // draw too: both draw from the log-probabilities in float64, from the same generator).
  bool device_pick = true;
  // Sampling (fairseq's --sampling, as used to back-translate; beam 1 only): each token is drawn, not the best one.
  // Its distribution: softmax(log p / temperature) over the candidates (not pad or bos), cut to the sampling_topk
  // most likely (0: all), then to the fewest most likely whose probability, renormalised, reaches sampling_topp
  // (1: all), renormalised again (Hugging Face's order; fairseq takes one cut or the other). A hypothesis's score
  // stays the model's own Σ log p (temperature 1, no cut).
  bool sampling = false;
  double temperature = 1.0;
  int64_t sampling_topk = 0;
  double sampling_topp = 1.0;
  skipgrad::Generator* gen = nullptr;  // draws from it (the default generator if null): a seed repeats a decode
  // With sampling, one per sentence of the batch: sentence b's draws are keyed sentence_keys[b] (nn::sampling_counter
  // of the key and the step), so its translation is the same whatever batch it is decoded in, and in whatever order
  // (`translate` keys each line by its number). Empty: keys k0, k0 + 1, ... with k0 = gen's next counter (gen
  // advances by the batch's size: the next batch draws afresh). Either way a row's draw does not depend on the others.
  std::vector<uint64_t> sentence_keys;
};

// A decoded sentence: its target ids (without bos/eos) and its model score, Σ_t log p(y_t | y_<t, x) over the
// tokens it emitted, eos included.
struct Hypothesis {
  std::vector<int> ids;
  double score = 0;
};

// What the search sees of a model: next-token log-probabilities for R rows (hypotheses).
class Stepper {
 public:
  virtual ~Stepper() = default;
  // Row r continues row parents[r] of the previous call by token tokens[r]; at the first call parents[r] is the
  // sentence and tokens[r] is bos. Returns log p(· | row r's prefix), R x vocab() values, row-major.
  virtual std::vector<double> step(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens) = 0;
  virtual int64_t vocab() const = 0;
  // Beam 1's step, with step()'s arguments: each row's next token and its log-probability. The token is the best
  // candidate (not pad or bos; the first of equal ones), or with opt.sampling a draw (sample_tokens) with row r's
  // uniforms from draw_counters[r]. This default picks from step()'s log-probabilities on the host; the model's
  // steppers pick on the model's device.
  struct Pick {
    int64_t token;
    double logp;
  };
  virtual std::vector<Pick> pick(const std::vector<int64_t>& parents, const std::vector<int64_t>& tokens,
                                 const DecodeOptions& opt, const std::vector<uint64_t>& draw_counters);
};

// Draws one token per row of log-probabilities lp [R, V] (any device, any floating dtype) as DecodeOptions'
// sampling says; excluded [V] is 1 for the tokens never drawn (pad, bos). Returns int64 [R, 1]. (nn::sample_tokens,
// nn/generate.h, with DecodeOptions' temperature, sampling_topk, sampling_topp and gen, and row_counters: one per
// row, or none for the generator's next counters.)
skipgrad::Tensor sample_tokens(const skipgrad::Tensor& lp, const skipgrad::Tensor& excluded, const DecodeOptions& opt,
                               const std::vector<uint64_t>& row_counters = {});

// Greedy or sampling (opt.beam <= 1) or beam search over max_len.size() sentences; sentence b emits at most
// max_len[b] tokens (eos included). Candidates never include pad or bos. Beam search, as fairseq's: of the best
// 2·beam extensions of a sentence's live hypotheses, those ending in eos (or reaching max_len) are finished when
// they rank in the first `beam` (else dropped), the others become the next live hypotheses (at most `beam`); the
// finished one with the best score / length^len_penalty (length counting eos) wins. A sentence stops once it has
// `beam` finished hypotheses and no live one ranks above the best of them at its current length (fairseq stops on
// the count alone). Bad options (sampling with a beam, a temperature <= 0, ...) are refused, naming them.
std::vector<Hypothesis> search(Stepper& model, const std::vector<int64_t>& max_len, const DecodeOptions& opt);

// src: int64 [B, S] padded, model in eval mode. One hypothesis per sentence.
std::vector<Hypothesis> decode_batch(skipgrad::nn::Transformer& model, const skipgrad::Tensor& src,
                                     const DecodeOptions& opt);
// The target ids of each sentence (without bos/eos).
std::vector<std::vector<int>> translate_batch(skipgrad::nn::Transformer& model, const skipgrad::Tensor& src,
                                              const DecodeOptions& opt);

}  // namespace translate
