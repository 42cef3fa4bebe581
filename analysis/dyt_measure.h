// DyT's statistics, per DyT of a model (nn::DynamicTanh, `--norm dyt`): its learned α, the RMS of its input x and
// the share of its outputs that tanh saturates, |α·x| >= atanh(0.99) ≈ 2.65, where |tanh| >= 0.99 and the
// gradient through it, α·(1 − tanh²), is below 2 % of its value at 0. A DyT whose inputs grow (Pre-LN's stream, layer
// by layer) passes sign(x) on and almost no gradient back: the failure a norm cannot have, since a norm divides the
// growth out. measure_batch records them from the forward's tape (each dyt node keeps x and α), so any topology's
// DyTs appear, by name ("enc.11.ffn_norm", "dec.final_norm").
//
//   LayerMeasures m = measure_batch(model, batch);
//   for (const DytMeasure& d : m.dyts) ... d.norm, d.alpha, d.input_rms, d.saturated
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace skipgrad {

class Tape;
class Tensor;

struct DytMeasure {
  std::string norm;       // the DyT module's name: "enc.3.ffn_norm"
  double alpha = 0;       // its learned α
  double input_rms = 0;   // sqrt(mean x²) over the non-pad tokens (all rows when the rows are not [B·T] tokens)
  double saturated = 0;   // the share of x's elements with |α·x| >= atanh(0.99), over the same rows
};

// The non-pad tokens of each stack: pad[b·T + t] nonzero where token t of sentence b is padding (empty: no stack)
struct TokenPadding {
  std::vector<int64_t> src, tgt;
};

// The padding masks of a batch's src [B, S] and tgt_in [B, T] token ids (either may be undefined: no stack), on any
// device (read to the host)
TokenPadding token_padding(const Tensor& src, const Tensor& tgt, int64_t pad_id);

// Every dyt node on `tape` whose name starts with `scope` (measure_batch's), in tape order, named without that scope
// and without ".dyt". A node of "enc..." reads pad.src, others pad.tgt, when its rows are as many as that mask.
std::vector<DytMeasure> measure_dyts(const Tape& tape, const std::string& scope, const TokenPadding& pad);

// A Markdown table, one row per DyT: α, RMS(x), RMS(x)·α and the saturated share; "" when there is none
std::string dyt_measures_markdown(const std::vector<DytMeasure>& dyts);

}  // namespace skipgrad
