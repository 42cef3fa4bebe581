// Scoring a trained checkpoint on a test set, the same way every time: the model in eval mode (no dropout),
// sentences in file order cut into unshuffled token-budget batches, fixed decoding options, corpus BLEU as
// sacreBLEU's defaults. Two calls on the same checkpoint and file print the same numbers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "analysis/measure.h"
#include "bleu.h"
#include "trainer.h"

namespace translate {

// A model rebuilt from a checkpoint written by `train` (its "config" and "vocab" metadata), in eval mode.
struct TrainedModel {
  skipgrad::nn::TransformerConfig cfg;
  std::unique_ptr<skipgrad::nn::Transformer> model;
  Vocab vocab;
  int64_t step = -1;  // the training step it was saved at (-1: not recorded)
};
TrainedModel load_trained_model(const std::string& checkpoint, const std::string& device = "cpu");

struct EvalOptions {
  std::string checkpoint;
  std::string tsv;             // a source<TAB>target file; empty: the test split of data.corpus
  TrainOptions data;           // corpus, data_dir, max_len, max_tokens and label_smoothing (for the loss)
  int beam = 5;                // 1: greedy; the length penalty is DecodeOptions' (fairseq's 1.0)
  int64_t test_sentences = 0;  // the first N sentences of the file (0: all)
  std::string hypotheses_path; // when set, one hypothesis per line is written there
  int64_t measure = 0;         // measure_batches on the first N test batches (0: not measured)
  // Layer removal (Transformer::remove_layers): these layers ("enc.3", "dec.0") are skipped in everything eval
  // reports; with layer_removal, each other layer is also removed in turn and scored on its own (removals).
  std::vector<std::string> remove_layers;
  bool layer_removal = false;
};

// The test set scored without one more layer (EvalOptions::layer_removal).
struct LayerRemovalScore {
  std::string layer;
  double loss = 0, nll = 0;
  BleuScore bleu;
};

struct EvalResult {
  skipgrad::nn::TransformerConfig cfg;  // the checkpoint's model
  int64_t step = -1;                    // and the step it was saved at
  std::string test_file;
  int64_t sentences = 0;
  double loss = 0;             // mean label-smoothed loss per target token (data.label_smoothing), teacher-forced
  double nll = 0;              // mean -log p(target) per target token (natural log); perplexity = exp(nll)
  BleuScore bleu;
  std::vector<std::string> hypotheses;
  skipgrad::LayerMeasures measures;  // per layer, when EvalOptions::measure > 0 (analysis/measure.h)
  std::vector<LayerRemovalScore> removals;  // per layer not in remove_layers, when EvalOptions::layer_removal
};
// One Markdown row per removed layer: its loss, nll and BLEU, and their changes from the model's (r.loss, ...).
std::string layer_removal_markdown(const EvalResult& r);
EvalResult evaluate_checkpoint(const EvalOptions& opts);

// sacreBLEU's signature for its defaults with one reference, e.g.
// "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 98.24 99.1/98.3/97.9/97.5 (BP = 1.000 ...)".
// The version names the sacreBLEU release tests/test_translate.cpp checks our implementation against.
std::string bleu_signature_line(const BleuScore& b);

}  // namespace translate
