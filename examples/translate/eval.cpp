#include "eval.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>

#include "analysis/graph.h"
#include "autograd/tape.h"
#include "batches.h"
#include "config_json.h"
#include "decode.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "tensor/error.h"

namespace translate {

using namespace skipgrad;

// ---- the evaluations of training (declared in trainer.h) and of `eval` ----

double evaluate_loss(nn::Transformer& model, const std::vector<Example>& ex, const TrainOptions& o, double* nll) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double loss_sum = 0, nll_sum = 0, tokens = 0;
  for (auto& idx : make_batches(ex, o.max_tokens, 0, false)) {
    Batch b = collate(ex, idx, model.device());
    auto L = nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, Vocab::kPad, o.label_smoothing);
    const double n = L.ntokens.item();
    loss_sum += L.loss.item() * n;
    if (nll) nll_sum += L.nll_sum().item();
    tokens += n;
  }
  model.train(was_training);
  if (nll) *nll = tokens > 0 ? nll_sum / tokens : 0;
  return tokens > 0 ? loss_sum / tokens : 0;
}

double evaluate_bleu(nn::Transformer& model, const Vocab& vocab, const std::vector<Pair>& pairs,
                     const TrainOptions& o, int beam, std::vector<std::string>* hypotheses) {
  const bool was_training = model.is_training();
  model.eval();
  std::vector<Example> ex = encode_pairs(vocab, pairs, o.max_len);
  std::vector<std::string> hyps(pairs.size()), refs;
  DecodeOptions d;
  d.beam = beam;
  for (auto& idx : make_batches(ex, std::min<int64_t>(o.max_tokens, 2048), 0, false)) {
    Batch b = collate(ex, idx);
    auto out = translate_batch(model, b.src, d);
    for (size_t k = 0; k < idx.size(); k++) hyps[idx[k]] = vocab.decode(out[k]);
  }
  for (auto& p : pairs) refs.push_back(p.tgt);
  model.train(was_training);
  if (hypotheses) *hypotheses = hyps;
  return corpus_bleu(hyps, refs).score;
}

TrainedModel load_trained_model(const std::string& checkpoint, const std::string& device) {
  nn::SafetensorsFile f = nn::load_safetensors(checkpoint);
  check(f.metadata.count("config") && f.metadata.count("vocab"), "load_trained_model", ": '", checkpoint,
        "' is not a checkpoint written by skipgrad-translate train (no config/vocab metadata)");
  nn::TransformerConfig cfg = config_from_json(f.metadata.at("config"));
  // the vocabulary stored in the checkpoint; one written before 2026-12-05 names its model file instead
  Vocab vocab = f.metadata.count("vocab_model") ? Vocab::from_base64(f.metadata.at("vocab_model"), checkpoint)
                                                : Vocab::load(f.metadata.at("vocab"));
  TrainedModel m{cfg, std::make_unique<nn::Transformer>(cfg), std::move(vocab),
                 f.metadata.count("step") ? metadata_int(f.metadata, "step", checkpoint) : -1};
  nn::load_checkpoint(checkpoint, *m.model, nullptr, /*restore_rng=*/false);
  m.model->to(Device::parse(device));
  m.model->eval();
  return m;
}

EvalResult evaluate_checkpoint(const EvalOptions& o) {
  check(o.beam >= 1, "eval", ": --beam must be at least 1, got ", o.beam);
  check(o.test_sentences >= 0, "eval", ": --test-sentences must be 0 (all) or positive, got ", o.test_sentences);
  check(o.measure >= 0, "eval", ": --measure must be 0 (none) or a number of batches, got ", o.measure);
  if (!o.hypotheses_path.empty()) check_writable("eval --hypotheses", o.hypotheses_path);  // before the decoding
  EvalResult r;
  std::vector<Pair> pairs;
  // A built-in corpus is made when missing; of a corpus folder only test.tsv is read (it needs no train.tsv).
  const std::string tsv = !o.tsv.empty() ? o.tsv : builtin_corpus(o.data) ? std::string() : o.data.corpus + "/test.tsv";
  if (tsv.empty()) {
    Corpus c = prepare_corpus(o.data);
    r.test_file = corpus_dir(o.data) + "/test.tsv";
    pairs = std::move(c.test);
  } else {
    std::vector<std::string> problems;
    pairs = read_tsv(tsv, false, &problems);
    for (auto& p : problems) std::fprintf(stderr, "warning: %s\n", p.c_str());
    r.test_file = tsv;
  }
  if (o.test_sentences > 0 && (size_t)o.test_sentences < pairs.size()) pairs.resize(o.test_sentences);
  check(!pairs.empty(), "eval", ": no sentence pairs in '", r.test_file, "'");
  r.sentences = (int64_t)pairs.size();

  TrainedModel m = load_trained_model(o.checkpoint, o.data.device);
  m.model->remove_layers(o.remove_layers);  // a name that is no layer is refused before scoring
  r.cfg = m.cfg;
  r.step = m.step;
  // Whole sentences, as `translate` reads them: cut only where the model's positions end (with a warning), not at
  // the training's --max-len.
  TrainOptions data = o.data;
  data.max_len = m.cfg.position_limit();  // (ALiBi and none: no limit)
  int64_t cut = 0;
  for (const Example& e : encode_pairs(m.vocab, pairs, std::numeric_limits<int64_t>::max()))
    cut += (int64_t)e.src.size() > data.max_len || (int64_t)e.tgt.size() + 1 > data.max_len;  // src has its eos
  if (cut)
    std::fprintf(stderr, "warning: %lld sentence pairs have more tokens than the model's %lld positions; cut to them\n",
                 (long long)cut, (long long)data.max_len);
  std::vector<Example> ex = encode_pairs(m.vocab, pairs, data.max_len);
  r.loss = evaluate_loss(*m.model, ex, data, &r.nll);
  if (o.measure > 0) {  // the first N unshuffled batches of the test set, with the loss's label smoothing
    std::vector<MeasureBatch> batches;
    for (const auto& idx : make_batches(ex, std::min<int64_t>(data.max_tokens, 2048), 0, false)) {
      if ((int64_t)batches.size() == o.measure) break;
      const Batch b = collate(ex, idx);
      batches.push_back({b.src, b.tgt_in, b.tgt_out});
    }
    r.measures = measure_batches(*m.model, batches, data.label_smoothing);
  }
  evaluate_bleu(*m.model, m.vocab, pairs, data, o.beam, &r.hypotheses);
  std::vector<std::string> refs;
  for (auto& p : pairs) refs.push_back(p.tgt);
  r.bleu = corpus_bleu(r.hypotheses, refs);
  if (o.layer_removal) {  // each remaining layer removed in turn, scored as the model was
    for (const std::string& layer : m.model->layer_names()) {
      LayerRemovalScore s;
      s.layer = layer;
      if (std::find(o.remove_layers.begin(), o.remove_layers.end(), s.layer) != o.remove_layers.end()) continue;
      std::vector<std::string> removed = o.remove_layers;
      removed.push_back(s.layer);
      m.model->remove_layers(removed);
      s.loss = evaluate_loss(*m.model, ex, data, &s.nll);
      std::vector<std::string> hyps;
      evaluate_bleu(*m.model, m.vocab, pairs, data, o.beam, &hyps);
      s.bleu = corpus_bleu(hyps, refs);
      r.removals.push_back(s);
    }
    m.model->remove_layers(o.remove_layers);
  }

  if (!o.hypotheses_path.empty()) {
    std::string text;
    for (const std::string& h : r.hypotheses) text += h + "\n";
    write_file_atomic(o.hypotheses_path, text);
  }
  return r;
}

std::string layer_removal_markdown(const EvalResult& r) {
  std::string out = "| removed layer | test loss | Δloss | nll | BLEU | ΔBLEU |\n|---|---|---|---|---|---|\n";
  char buf[160];
  for (const LayerRemovalScore& s : r.removals) {
    std::snprintf(buf, sizeof buf, "| %s | %.4f | %+.4f | %.4f | %.2f | %+.2f |\n", s.layer.c_str(), s.loss,
                  s.loss - r.loss, s.nll, s.bleu.score, s.bleu.score - r.bleu.score);
    out += buf;
  }
  return out;
}

std::string bleu_signature_line(const BleuScore& b) {
  const std::string s = b.str();  // "BLEU = ..."
  return "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0" + s.substr(4);
}

}  // namespace translate
