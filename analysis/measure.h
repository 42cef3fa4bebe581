// Measured gradient and representation statistics per layer of a Transformer, at initialization and after chosen
// numbers of training steps, averaged over batches and seeds.
//
//   nn::Transformer model(cfg);
//   MeasureBatch b = random_batch(cfg, 8, 16, /*seed=*/1);
//   LayerMeasures m = measure_batch(model, b);          // forward + label-smoothed loss + backward
//   m.layers[3].fc2_grad_norm, m.layers[3].cos_prev, ...
//
//   MeasureOptions opt;  opt.seeds = {1, 2, 3};  opt.n_batches = 4;
//   LayerMeasures avg = measure_model(cfg, opt);        // fresh model per seed, averaged over seeds x batches
//
//   opt.task = "reverse";  opt.steps = {0, 100};        // Adam on the reverse task, measured at step 0 and 100
//   std::vector<LayerMeasures> by_step = measure_steps(cfg, opt);
//   (An Admin model's ω are profiled on the first training batch before step 0, as a training run does.)
//
// Per layer ("enc.i", then "dec.i"):
//   fc2_grad_norm   ||dL/d W2|| of the FFN's second matrix ("<layer>.ffn.fc2.weight"; Xiong et al., HybridNorm)
//   layer_grad_norm sqrt(sum over every parameter "<layer>.*" of ||dL/dp||^2)           (ResiDual's Fig.)
//   cos_prev        mean over non-pad tokens of cos(x_{i-1}, x_i) between the stream before and after the layer;
//                   1 - cos is the "block influence". For layer 0, x_{-1} is the stream entering the stack (the
//                   embedding output after the topology's begin_stack: Peri-LN's embedding norm, ResiDual's x_a⁰).
//   token_cos       mean over sentences of the mean cos(x_t, x_u) between two different non-pad tokens t != u of
//                   the stream after the layer: 1 when every token points one way, the rank collapse of Dong et al.
//                   (2021) and Noci et al. (2022) (mean_token_cosine); NaN when no sentence has two tokens
//   rms, max_abs    sqrt(mean x^2) and max |x| of the stream after the layer, over non-pad tokens
//   dual_max_abs    ResiDual: max |x_d| of the dual stream after the layer; -1 for other topologies
//   self_logit_max  the largest attention logit |q·k|/√d_h that a non-pad query of the layer's self-attention gives
//                   a key it sees (TOPOLOGIES.md §7.7; q, k after any QK-norm), and per head; cross_logit_max the
//                   same for the decoder's cross-attention, -1 in the encoder (MultiHeadAttention::logit_rows);
//                   -1 also for a removed layer (Transformer::remove_layers), whose other statistics are those of
//                   the identity
//   self_attn_entropy, cross_attn_entropy
//                   the mean over heads and non-pad queries of the entropy of the attention softmax, in nats (0:
//                   one-hot, the entropy collapse of Zhai et al. 2023; log(keys) when uniform); NaN where it did
//                   not run
//   self_attn_update, cross_attn_update, ffn_update
//                   the relative update of each sublayer (TOPOLOGIES.md §7.4): mean over non-pad tokens of
//                   ‖o_t‖ / ‖x_t‖, o the sublayer's output as added to the stream x (after dropout and any scaling:
//                   ReZero's α·o, DeepNorm's stream α·x; ResiDual: x_a) (Layer::residual_updates); NaN for an
//                   add that did not run (cross-attention in the encoder, a removed layer)
//   removal_delta   the loss without the layer (Transformer::remove_layers) minus the whole model's, in eval mode
//                   (TOPOLOGIES.md §7.5, Mix-LN's layer removal); measured only with MeasureOptions::removal, else NaN
// The stream is what nn::Transformer::layer_outputs records (ResiDual: x_a).
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "analysis/dyt_measure.h"
#include "analysis/graph.h"
#include "analysis/paths.h"
#include "nn/transformer.h"

namespace skipgrad {

struct MeasureBatch {
  Tensor src, tgt_in, tgt_out;  // int64 [B, S], [B, T], [B, T]; src undefined for a decoder-only model
  MeasureBatch to(Device d) const;  // the defined tensors on d
};

// A batch of a synthetic task: source tokens in [3, vocab), sentence lengths uniform in [len/2, len], the rest
// padded with cfg.pad_id; tgt_in starts with 2 (fairseq's eos-as-bos), tgt_out is the target y shifted by one.
//   "random"   y: random tokens of an independent random length (nothing to learn but the unigram distribution)
//   "copy"     y = the source
//   "reverse"  y = the source reversed
// A decoder-only model (cfg.enc_layers 0) reads one sequence s = x, 2, y instead (x of lengths uniform in
// [h/2, h], h = (len-1)/2, y as above): src is undefined, tgt_in = [2, s_0, ..., s_{n-2}], tgt_out = s with x and
// the separator set to the pad id, so the loss, as the encoder-decoder's, is that of y after the separator
// (len >= 3).
// Throws Error for another task name.
MeasureBatch task_batch(const nn::TransformerConfig& cfg, const std::string& task, int64_t batch, int64_t len,
                        uint64_t seed);
// task_batch(cfg, "random", ...)
MeasureBatch random_batch(const nn::TransformerConfig& cfg, int64_t batch, int64_t len, uint64_t seed);

struct LayerMeasure {
  std::string layer;  // "enc.3"
  double fc2_grad_norm = 0, layer_grad_norm = 0;
  double cos_prev = 0, token_cos = 0;
  double rms = 0, max_abs = 0;
  double dual_max_abs = -1;
  double self_logit_max = -1, cross_logit_max = -1;
  std::vector<double> self_logit_max_heads, cross_logit_max_heads;  // [heads]; cross: empty in the encoder
  double self_attn_entropy = std::numeric_limits<double>::quiet_NaN(), cross_attn_entropy = self_attn_entropy;
  double self_attn_update = std::numeric_limits<double>::quiet_NaN(), cross_attn_update = self_attn_update,
         ffn_update = self_attn_update;
  double removal_delta = std::numeric_limits<double>::quiet_NaN();
};

struct LayerMeasures {
  std::vector<LayerMeasure> layers;  // encoder layers, then decoder layers
  double loss = 0;                   // mean label-smoothed loss
  int64_t samples = 0;               // batches x seeds averaged over
  int64_t step = 0;                  // training steps taken before the measurement (measure_steps)
  std::vector<DytMeasure> dyts;      // each DyT's α, input RMS, saturated share (dyt_measure.h); empty without DyT
  // The first batch's graph, when MeasureOptions::graph is on: its snapshot and path analysis.
  Graph graph;
  PathStats paths;

  const LayerMeasure& layer(const std::string& name) const;  // throws Error when absent
  const LayerMeasure* find(const std::string& name) const;   // null when absent (a decoder-only model's "enc.0")
};

struct MeasureOptions {
  std::vector<uint64_t> seeds = {1};  // model init seeds; results are averaged over them
  int64_t n_batches = 1;              // measured batches per seed (the same batches at every step)
  int64_t batch = 8, len = 16;        // batch shape, for measuring and training
  double label_smoothing = 0.1;
  bool graph = false;                 // snapshot the first batch's graph and analyse its paths (at every step)
  std::string task = "random";        // task_batch's task, for the measured and the training batches
  bool removal = false;               // also measure each layer's removal_delta (one more forward per layer)
  // measure_steps: measure after each of these numbers of training steps (ascending, 0 = at initialization).
  std::vector<int64_t> steps = {0};
  // Training between the measurements: Adam (β 0.9, 0.98, no weight decay) on fresh task batches (seeds disjoint
  // from the measured ones), fairseq's inverse-sqrt schedule with a linear warm-up from 0 over `warmup` steps to
  // `lr`, gradients clipped to global norm `clip` (0: no clipping).
  double lr = 1e-3;
  int64_t warmup = 20;
  double clip = 0;
  nn::PatternValues lr_scale_at;      // parameters by name pattern at lr x scale (nn::lr_scale_groups)
  Device device = Device::cpu();      // where the model is trained and measured (batches are made on the CPU)
};

// Of x [B, T, d] and pad [B * T] (nonzero: padding): for each sentence b with n >= 2 non-pad tokens of nonzero norm,
// the mean cosine over its n (n - 1) ordered pairs of different tokens, by the sum of their unit vectors u_t:
//   sum_{t != u} cos(x_t, x_u) = |sum_t u_t|^2 - n
// then the mean over those sentences (NaN when there is none). 1: the tokens collapsed to one direction.
double mean_token_cosine(const Tensor& x, const std::vector<int64_t>& pad);

// One forward/backward of `model` on `b`. Clears the model's gradients and the tape before and after; the
// model's mode (train/eval) is left as it is, and hooks the caller set (layer_outputs, ...) are put back after
// its own have recorded the forward. With `graph` on, also fills .graph and .paths.
LayerMeasures measure_batch(nn::Transformer& model, const MeasureBatch& b, double label_smoothing = 0.1,
                            bool graph = false);

// Layer removal (TOPOLOGIES.md §7.5; Mix-LN's layer_remove.py): for each layer (enc.0, ..., then dec.0, ...), the
// label-smoothed loss of `b` with that layer removed too (Transformer::remove_layers) minus the loss of the model as
// it is. Forward only, in eval mode (no dropout), no tape; the model's mode and removed layers are put back after.
std::vector<double> layer_removal_deltas(nn::Transformer& model, const MeasureBatch& b, double label_smoothing = 0.1);

// measure_batch of each batch (in eval or train mode, as the model is), every statistic the mean over them: the
// statistics of a trained model on real data (`skipgrad-translate eval --measure N`).
LayerMeasures measure_batches(nn::Transformer& model, const std::vector<MeasureBatch>& batches,
                              double label_smoothing = 0.1);
// One Markdown row per layer: ‖∇W2‖, ‖∇layer‖, cos(x_{i-1}, x_i), cos(tokens), RMS(x), max|x|, the sublayers'
// relative updates, the largest self- and cross-attention logits and their entropies, and Δloss without the layer
// when measured.
std::string layer_measures_markdown(const LayerMeasures& m);

// For each seed: manual_seed(seed), build the model; for each entry s of opt.steps, train it up to s steps and
// measure `n_batches` task batches. Returns one LayerMeasures per entry of opt.steps, each the mean over seeds x
// batches of every statistic (max_abs and dual_max_abs too: the mean of the per-batch maxima). A step whose loss
// is not finite is trained on all the same (the measurements then show NaN: the run diverged).
std::vector<LayerMeasures> measure_steps(const nn::TransformerConfig& cfg, const MeasureOptions& opt = {});
// The first entry of measure_steps (with the default steps {0}: at initialization).
LayerMeasures measure_model(const nn::TransformerConfig& cfg, const MeasureOptions& opt = {});

}  // namespace skipgrad
