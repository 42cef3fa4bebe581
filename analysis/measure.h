// Measured gradient and representation statistics per layer of a Transformer, at a chosen point of training.
//
//   nn::Transformer model(cfg);
//   MeasureBatch b = random_batch(cfg, 8, 16, /*seed=*/1);
//   LayerMeasures m = measure_batch(model, b);          // forward + label-smoothed loss + backward
//   m.layers[3].fc2_grad_norm, m.layers[3].cos_prev, ...
//
//   MeasureOptions opt;  opt.seeds = {1, 2, 3};  opt.n_batches = 4;
//   LayerMeasures avg = measure_model(cfg, opt);        // fresh model per seed, averaged over seeds x batches
//
// Per layer ("enc.i", then "dec.i"):
//   fc2_grad_norm   ||dL/d W2|| of the FFN's second matrix ("<layer>.ffn.fc2.weight"; Xiong et al., HybridNorm)
//   layer_grad_norm sqrt(sum over every parameter "<layer>.*" of ||dL/dp||^2)           (ResiDual's Fig.)
//   cos_prev        mean over non-pad tokens of cos(x_{i-1}, x_i) between the stream before and after the layer;
//                   1 - cos is the "block influence". NaN for layer 0 of each stack (no hook sees its input).
//   rms, max_abs    sqrt(mean x^2) and max |x| of the stream after the layer, over non-pad tokens
//   dual_max_abs    ResiDual: max |x_d| of the dual stream after the layer; -1 for other topologies
// The stream is what nn::Transformer::layer_outputs records (ResiDual: x_a).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/graph.h"
#include "analysis/paths.h"
#include "nn/transformer.h"

namespace skipgrad {

struct MeasureBatch {
  Tensor src, tgt_in, tgt_out;  // int64 [B, S], [B, T], [B, T]
};

// Random token batch for a config: tokens in [3, vocab), sentence lengths uniform in [len/2, len], the rest
// padded with cfg.pad_id; tgt_in starts with 2 (fairseq's eos-as-bos), tgt_out is the target shifted by one.
MeasureBatch random_batch(const nn::TransformerConfig& cfg, int64_t batch, int64_t len, uint64_t seed);

struct LayerMeasure {
  std::string layer;  // "enc.3"
  double fc2_grad_norm = 0, layer_grad_norm = 0;
  double cos_prev = 0;
  double rms = 0, max_abs = 0;
  double dual_max_abs = -1;
};

struct LayerMeasures {
  std::vector<LayerMeasure> layers;  // encoder layers, then decoder layers
  double loss = 0;                   // mean label-smoothed loss
  int64_t samples = 0;               // batches x seeds averaged over
  // The first batch's graph, when MeasureOptions::graph is on: its snapshot and path analysis.
  Graph graph;
  PathStats paths;

  const LayerMeasure& layer(const std::string& name) const;  // throws Error when absent
};

struct MeasureOptions {
  std::vector<uint64_t> seeds = {1};  // model init seeds (measure_model only)
  int64_t n_batches = 1;              // random batches per seed
  int64_t batch = 8, len = 16;        // batch shape
  double label_smoothing = 0.1;
  bool graph = false;                 // snapshot the first batch's graph and analyse its paths
};

// One forward/backward of `model` on `b`. Clears the model's gradients and the tape before and after; the
// model's mode (train/eval) is left as it is. With `graph` on, also fills .graph and .paths.
LayerMeasures measure_batch(nn::Transformer& model, const MeasureBatch& b, double label_smoothing = 0.1,
                            bool graph = false);

// For each seed: manual_seed(seed), build the model, measure `n_batches` random batches; returns the mean of
// every statistic (max_abs and dual_max_abs too: the mean of the per-batch maxima).
LayerMeasures measure_model(const nn::TransformerConfig& cfg, const MeasureOptions& opt = {});

}  // namespace skipgrad
