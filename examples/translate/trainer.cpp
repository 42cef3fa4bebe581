#include "trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "analysis/graph.h"
#include "analysis/profile.h"
#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "average.h"
#include "bleu.h"
#include "config_json.h"
#include "nn/checkpoint.h"
#include "nn/clip.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/random.h"

namespace translate {

using namespace skipgrad;
using Clock = std::chrono::steady_clock;

static bool exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}
// Creates `path` and its parents; a folder that cannot be made (a file in the way, no permission) is an error
// here rather than a failed write later.
static void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  check(!ec, "translate", ": cannot create the folder '", path, "': ", ec.message());
}
// A save killed before its rename (SIGKILL, power cut) leaves "<checkpoint>.tmp.<pid>.<n>" beside the checkpoint,
// which stays whole (nn/checkpoint.h). One run owns its folder, so at start such leftovers are removed.
static void remove_stale_temps(const std::string& dir) {
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint_", 0) == 0 && name.find(".safetensors.tmp.") != std::string::npos)
      std::filesystem::remove(e.path(), ec);
  }
}

// A resumed run continues metrics.jsonl from its checkpoint's step: lines of later steps (written after the last
// save by the run that was stopped) and a line cut short by a kill are dropped, so that no step is listed twice.
// The file is rewritten atomically (write_file_atomic).
static void cut_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    long long s = 0;
    const bool whole = !line.empty() && line.back() == '}';
    if (!whole || std::sscanf(line.c_str(), "{\"step\":%lld", &s) != 1 || s > step) continue;
    kept += line + "\n";
  }
  in.close();
  write_file_atomic(path, kept);
}

bool builtin_corpus(const TrainOptions& o) { return o.corpus == "numbers" || o.corpus == "ding"; }
std::string corpus_dir(const TrainOptions& o) { return builtin_corpus(o) ? o.data_dir + "/" + o.corpus : o.corpus; }

Corpus prepare_corpus(const TrainOptions& o) {
  const std::string dir = corpus_dir(o);
  const std::string tr = dir + "/train.tsv", va = dir + "/valid.tsv", te = dir + "/test.tsv";
  if (builtin_corpus(o) && !(exists(tr) && exists(va) && exists(te))) {
    make_dirs(dir);
    Splits s = o.corpus == "numbers" ? make_number_corpus(20000, 7) : extract_ding();
    write_tsv(tr, s.train);
    write_tsv(va, s.valid);
    write_tsv(te, s.test);
  }
  std::vector<std::string> problems;
  Corpus c{read_tsv(tr, false, &problems), read_tsv(va, false, &problems), read_tsv(te, false, &problems)};
  for (size_t i = 0; i < problems.size() && i < 10; i++) std::fprintf(stderr, "warning: %s\n", problems[i].c_str());
  if (problems.size() > 10) std::fprintf(stderr, "warning: %zu more malformed lines skipped\n", problems.size() - 10);
  check(!c.train.empty() && !c.valid.empty(), "prepare_corpus", ": no training or validation pairs in ", dir);
  return c;
}

// Forward, backward and the gradient norm, queued without waiting: [loss, norm] as float64 on the model's device.
// A NaN/Inf loss makes NaN/Inf gradients, which the caller sees in both numbers.
Tensor forward_backward_queued(nn::Transformer& model, const Batch& b, double label_smoothing, bool autocast_bf16,
                               std::vector<DytMeasure>* dyts) {
  Tensor loss = [&] {
    AutocastBF16 autocast(autocast_bf16);
    if (autocast_bf16) autocast.precast(model.parameters());  // every weight cast in one launch
    return nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, Vocab::kPad, label_smoothing).loss;
  }();
  if (dyts) *dyts = measure_dyts(current_tape(), current_scope(), token_padding(b.src, b.tgt_in, Vocab::kPad));
  loss.backward();
  NoGradGuard no_grad;
  Tensor norm = nn::total_grad_norm(model.parameters());
  loss = loss.detach().reshape({1}).to(DType::F64);
  return concat({loss, norm.defined() ? norm : Tensor::zeros({1}, DType::F64, loss.device())}, 0);
}

// The same, then the loss and the norm come back in one copy.
LossAndNorm forward_backward(nn::Transformer& model, const Batch& b, double label_smoothing, bool autocast_bf16) {
  const std::vector<double> v = forward_backward_queued(model, b, label_smoothing, autocast_bf16).to_vector<double>();
  return {v[0], v[1]};
}

namespace {
std::string fmt_time(double s) {
  if (!(s < 1e12)) return "--:--";  // an ETA of a step budget in the billions (and NaN): no number to cast
  char buf[40];
  const long long whole = (long long)s;
  std::snprintf(buf, sizeof buf, "%lld:%02lld", whole / 60, whole % 60);
  return buf;
}
// A double as text that std::stod reads back to the same value ("inf" included).
std::string exact(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}
}  // namespace

TrainResult train(const TrainOptions& o) {
  TrainResult res;
  const Device device = Device::parse(o.device);
  backend_for(device);  // an absent device fails here, before the data is prepared
  set_float32_matmul_precision(parse_matmul_precision(o.matmul_precision));
  const bool autocast_bf16 = parse_autocast(o.autocast);
  {  // the model's options, before the data and its vocabulary are made (whose size the model takes later)
    nn::TransformerConfig early = o.model;
    early.vocab = std::max<int64_t>(o.vocab_size, Vocab::kPad + 1);
    early.pad_id = Vocab::kPad;
    early.validate();
  }
  Corpus corpus = prepare_corpus(o);
  const std::string data_dir = corpus_dir(o);
  // An empty split would make an endless epoch loop (train) or a mean over nothing (valid, test).
  check(o.best_metric == "loss" || o.best_metric == "bleu", "train", ": --best-metric is '", o.best_metric,
        "', expected loss or bleu");
  check(o.test_checkpoint == "last" || (o.test_checkpoint == "best" && o.eval_every > 0), "train",
        ": --test-checkpoint is '", o.test_checkpoint, "' with --eval-every ", o.eval_every,
        ", expected last, or best with evaluations (--eval-every > 0) to choose it");
  // checked here, before the folder is touched, and not at the first loss: a fresh run first clears its folder
  check(o.label_smoothing >= 0 && o.label_smoothing < 1, "train", ": --label-smoothing must be in [0, 1), got ",
        o.label_smoothing);
  check(!corpus.train.empty() && !corpus.valid.empty() && !corpus.test.empty(), "train", ": corpus '", data_dir,
        "' has an empty split: ", corpus.train.size(), " train, ", corpus.valid.size(), " valid, ", corpus.test.size(),
        " test pairs (each needs at least one)");
  const std::string last_ckpt = o.out_dir + "/checkpoint_last.safetensors";
  const std::string best_ckpt = o.out_dir + "/checkpoint_best.safetensors";
  const std::string metrics_path = o.out_dir + "/metrics.jsonl";
  const bool resuming = o.resume && exists(last_ckpt);
  // A resumed run keeps its data and vocabulary: the vocabulary its checkpoint stores (the cache beside the corpus
  // may have been made again since), and training text that is what the run began with (the checkpoint's
  // fingerprint of it; before 2026-12-06, the cache's), or it is refused with the cache left untouched.
  const std::string vocab_path = data_dir + "/spm" + std::to_string(o.vocab_size) + ".model";
  const std::string source = Vocab::fingerprint(corpus.train, o.vocab_size);
  std::string stored_vocab;  // (checkpoints before 2026-12-05 name the cache's file only)
  std::optional<nn::SafetensorsFile> last_file;  // a resumed run's checkpoint, read once
  if (resuming) {
    last_file = nn::load_safetensors(last_ckpt);
    const nn::Metadata& m = last_file->metadata;
    if (auto it = m.find("vocab_model"); it != m.end()) stored_vocab = it->second;
    auto began = m.find("vocab_source");
    const bool same = began != m.end() ? began->second == source
                                       : !Vocab::cached_for_other_text(vocab_path, corpus.train, o.vocab_size);
    check(same, "train", ": --resume: the training text or --vocab-size is not what the run in '", o.out_dir,
          "' began with (", began != m.end() ? "checkpoint: " + began->second : "the cached vocabulary's record",
          ", now: ", source, "); resume with the same data and options, or start a fresh run in another --out folder");
  }
  Vocab vocab = [&] {
    if (stored_vocab.empty()) return Vocab::load_or_train(vocab_path, corpus.train, o.vocab_size);
    try {
      return Vocab::from_base64(stored_vocab, last_ckpt);  // (its errors name the checkpoint, not the cache)
    } catch (const Error& e) {
      fail("train", ": --resume: ", e.what());
    }
  }();
  std::vector<Example> train_ex = encode_pairs(vocab, corpus.train, o.max_len);
  std::vector<Example> valid_ex = encode_pairs(vocab, corpus.valid, o.max_len);
  const size_t eval_sentences = o.eval_sentences > 0 ? std::min<size_t>(corpus.valid.size(), o.eval_sentences)
                                                     : corpus.valid.size();  // 0: all, as --test-sentences
  std::vector<Pair> valid_bleu_pairs(corpus.valid.begin(), corpus.valid.begin() + eval_sentences);

  nn::TransformerConfig cfg = o.model;
  cfg.vocab = vocab.size();
  cfg.pad_id = Vocab::kPad;
  cfg.max_positions = std::max<int64_t>(cfg.max_positions, o.max_len * 2 + 16);
  manual_seed(o.seed);
  nn::Transformer model(cfg);  // initialised on the CPU, so every device starts from the same weights
  model.to(device);            // before the optimizer, whose state is made where the parameters are
  res.parameters = model.num_parameters();
  const std::unique_ptr<nn::Optimizer> optimizer = nn::make_adamw_or_radam(
      o.optimizer, nn::lr_scale_groups(model.named_parameters(), o.lr_scale_at, "--lr-scale-at"),
      {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.adam_eps, .weight_decay = o.weight_decay}, "train");
  nn::Optimizer& opt = *optimizer;
  nn::InverseSqrtLR schedule(o.lr, o.warmup, o.warmup_init_lr);

  make_dirs(o.out_dir);
  remove_stale_temps(o.out_dir);
  // A folder that takes no new file, or a metrics.jsonl that cannot be written, fails now: not at the first save,
  // and before a fresh run clears the folder.
  check_writable("train", last_ckpt);
  check_writable("train", metrics_path);
  int64_t step = 0, epoch = 0, batch_in_epoch = 0, evals_since_best = 0;
  // The best evaluation so far by each measure; checkpoint_best follows the one --best-metric names.
  double best_bleu = -1, best_loss = std::numeric_limits<double>::infinity();
  const std::string vocab_model = vocab.to_base64();
  uint64_t seed = o.seed;         // the batch order's: a resumed run keeps its checkpoint's
  int64_t last_saved_step = -1;   // this run's latest checkpoint_last, for the divergence message
  bool have_best = resuming && exists(best_ckpt);
  if (o.resume && !resuming)
    std::printf("--resume: no checkpoint at %s; starting from step 0\n", last_ckpt.c_str());
  if (resuming) {
    std::vector<double> lr_scales;  // --lr-scale-at's, which the checkpoint's replace
    for (size_t i = 0; i < opt.named_params().size(); i++) lr_scales.push_back(opt.lr_scale(i));
    nn::Metadata m;
    try {
      m = nn::load_checkpoint(*last_file, last_ckpt, model, &opt);
    } catch (const Error& e) {  // another model's file fails on some tensor or count: name what differs
      std::string diff;
      try {
        const nn::Metadata& stored = last_file->metadata;
        if (auto it = stored.find("config"); it != stored.end())
          diff = config_differences(config_from_json(it->second), cfg);
      } catch (const Error&) {  // a file that cannot say: the load's own error stands
      }
      if (!diff.empty())
        fail("train", ": --resume: '", last_ckpt, "' holds another model (the checkpoint's vs this run's: ", diff,
             "); resume with the options it was trained with, or start a fresh run in another --out folder (",
             e.what(), ")");
      throw;
    }
    last_file.reset();  // (its tensors are the model's and the optimizer's now)
    step = metadata_int(m, "step", last_ckpt);
    epoch = metadata_int(m, "epoch", last_ckpt);
    batch_in_epoch = metadata_int(m, "batch_in_epoch", last_ckpt);
    best_bleu = metadata_number(m, "best_bleu", last_ckpt);
    if (m.count("best_valid_loss")) best_loss = metadata_number(m, "best_valid_loss", last_ckpt);  // since 2026-12-05
    res.best_valid_loss = best_loss;
    last_saved_step = step;
    std::printf("resumed from %s at step %lld\n", last_ckpt.c_str(), (long long)step);
    // As torch and fairseq restore their param groups, Adam's settings are the checkpoint's, and so is the seed of
    // the batch order (since 2026-12-06): said when the command line gives others, which would otherwise be lost.
    // (checkpoints before the "seed" entry hold it as the generator's seed, which manual_seed(--seed) set)
    for (const char* key : {"seed", "skipgrad.rng.seed"})
      if (m.count(key)) {
        seed = metadata_u64(m, key, last_ckpt);
        break;
      }
    if (o.seed_given && seed != o.seed)
      std::printf("--resume: --seed %llu is not used: the run continues with its checkpoint's %llu\n",
                  (unsigned long long)o.seed, (unsigned long long)seed);
    if (o.weight_decay != opt.weight_decay(0))
      std::printf("--resume: --weight-decay %g is not used: the run continues with its checkpoint's %g\n",
                  o.weight_decay, opt.weight_decay(0));
    bool same_scales = true;
    for (size_t i = 0; i < lr_scales.size(); i++) same_scales = same_scales && lr_scales[i] == opt.lr_scale(i);
    if (!same_scales)
      std::printf("--resume: --lr-scale-at is not used: the run continues with its checkpoint's learning rates (%s)\n",
                  nn::lr_scales_summary(opt).empty() ? "lr x1 throughout" : nn::lr_scales_summary(opt).c_str());
  } else {
    // A fresh run owns its folder (it rewrites metrics.jsonl): an earlier run's step checkpoints would outrank its
    // own in --keep-last's pruning and in `average --run`, and its checkpoint_best and checkpoint_last would be
    // reported as this run's (and resumed from, beside this run's metrics) if this one stopped before saving. They
    // are moved, not deleted, into previous_run/: a run that fails before its first save loses nothing.
    if (const size_t moved = set_aside_earlier_run(o.out_dir, {best_ckpt, last_ckpt}, metrics_path))
      std::printf("moved %zu files of an earlier run (checkpoints, metrics.jsonl) to %s/previous_run\n", moved,
                  o.out_dir.c_str());
  }
  // The training batches of an epoch: shuffled by a seed of (--seed, epoch), so a resumed run sees the same ones
  auto epoch_batches = [&](int64_t e) {
    return make_batches(train_ex, o.max_tokens, seed * 1000003 + (uint64_t)e, true);
  };
  if (step == 0 && !train_ex.empty()) {
    // a topology's data-dependent init (Admin's ω: one profiling forward of the first batch); a resumed run has it
    Batch first = collate(train_ex, epoch_batches(0).front(), device);
    const std::string line = model.init_from_batch(first.src, first.tgt_in);
    if (!line.empty()) std::printf("%s\n", line.c_str());
  }
  // A checkpoint with the optimizer state (to resume from), or of the model alone (the --keep-last ones).
  // The vocabulary travels inside ("vocab_model"): a checkpoint copied elsewhere still translates.
  auto save = [&](const std::string& path, bool with_optimizer = true) {
    nn::save_checkpoint(path, model, with_optimizer ? &opt : nullptr,
                        {{"config", config_to_json(cfg)}, {"vocab", vocab_path}, {"vocab_model", vocab_model},
                         {"vocab_source", source},
                         {"step", std::to_string(step)}, {"seed", std::to_string(seed)},
                         {"epoch", std::to_string(epoch)}, {"batch_in_epoch", std::to_string(batch_in_epoch)},
                         {"best_bleu", exact(best_bleu)}, {"best_valid_loss", exact(best_loss)}});
  };
  // --keep-last N: checkpoint_<step>.safetensors beside checkpoint_last at each save, the newest N kept (average.h)
  auto save_step_checkpoint = [&] {
    if (o.keep_last <= 0) return;
    save(o.out_dir + "/checkpoint_" + std::to_string(step) + ".safetensors", false);
    prune_step_checkpoints(o.out_dir, o.keep_last);
  };
  // metrics.jsonl: a fresh run starts it, a resumed one continues it from its checkpoint's step. It is flushed
  // before every save, so a checkpoint's steps are always in it. Checked here: a folder or file that cannot be
  // written fails now, not at the first save.
  if (resuming) cut_metrics_after(metrics_path, step);
  std::ofstream metrics(metrics_path, resuming ? std::ios::app : std::ios::trunc);
  check(metrics.good(), "train", ": cannot write '", metrics_path, "' (is the --out folder writable?)");
  auto flush_metrics = [&] {
    check(metrics.flush().good(), "train", ": writing '", metrics_path, "' failed (disk full?)");
  };
  // The model at `step` on the validation set: loss and greedy BLEU into res, the best loss so far with them.
  int64_t last_eval_step = -1;
  auto evaluate = [&] {
    last_eval_step = step;
    res.valid_loss = evaluate_loss(model, valid_ex, o);
    res.valid_bleu = evaluate_bleu(model, vocab, valid_bleu_pairs, o, 1);
    res.best_valid_loss = std::min(res.best_valid_loss, res.valid_loss);
  };
  // One validation of --eval-every: evaluate(), printed and a metrics line; checkpoint_best when it beats every
  // earlier one by --best-metric. Returns whether it did.
  auto validate = [&] {
    evaluate();
    std::printf("\n[eval] step %lld: valid loss %.4f, valid BLEU (greedy, %zu sentences) %.2f\n", (long long)step,
                res.valid_loss, valid_bleu_pairs.size(), res.valid_bleu);
    metrics << "{\"step\":" << step << ",\"valid_loss\":" << res.valid_loss << ",\"valid_bleu\":" << res.valid_bleu
            << "}\n";
    const bool better = o.best_metric == "bleu" ? res.valid_bleu > best_bleu : res.valid_loss < best_loss;
    best_bleu = std::max(best_bleu, res.valid_bleu);
    best_loss = std::min(best_loss, res.valid_loss);
    if (better) {
      save(best_ckpt);
      have_best = true;
    }
    return better;
  };

  const std::string qk = nn::head_norm_summary(cfg.qk_norm, cfg.qk_norm_kind);
  std::printf("model: %s, %lld+%lld layers, d=%lld, %lld heads%s%s, ffn %lld, %s positions, vocab %lld, %lld "
              "parameters\n", cfg.topology_summary().c_str(), (long long)cfg.enc_layers, (long long)cfg.dec_layers,
              (long long)cfg.d_model, (long long)cfg.heads, qk.empty() ? "" : " with ", qk.c_str(),
              (long long)cfg.d_ff, cfg.positions_summary().c_str(), (long long)cfg.vocab,
              (long long)res.parameters);
  std::printf("data: %zu train, %zu valid, %zu test pairs (%s)\n", corpus.train.size(), corpus.valid.size(),
              corpus.test.size(), data_dir.c_str());
  std::string settings;  // the optimizer's own (a resumed run's are its checkpoint's)
  for (const auto& [name, value] : opt.settings())
    settings += (settings.empty() ? "" : ", ") + name + " " + number_str(value);
  std::printf("optimizer: %s (%s), weight decay %g, lr %g, inverse-sqrt warm-up %lld steps from %g\n", opt.kind(),
              settings.c_str(), opt.weight_decay(0), o.lr, (long long)o.warmup, o.warmup_init_lr);
  if (const std::string scales = nn::lr_scales_summary(opt); !scales.empty()) std::printf("  %s\n", scales.c_str());

  const auto t0 = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  double tokens_done = 0, loss_ema = 0;
  bool stop = false;
  // A step's loss and gradient norm stay on the device until they are read: every step (--sync-every 1, the
  // default: a diverged step is then caught before its update and replayed), or every K steps, and before an
  // evaluation, a save, a profiled step's report and the end (--sync-every K: K steps are queued without the host
  // waiting for the GPU; gradient clipping runs on the device either way).
  struct Queued {
    int64_t step;     // 1-based
    Tensor values;    // [loss, gradient norm], float64, on the device
    int64_t tokens;
    double lr;
    nn::GradNorms grad_norms;  // --grad-norms-every: each parameter's, before clipping (norms on the device)
    std::vector<DytMeasure> dyts;  // --dyt-stats-every
  };
  std::vector<Queued> queued;
  struct Divergence {
    int64_t step = 0;
    double loss = 0, gnorm = 0;
  } diverged;
  bool unused_checked = false;
  // One step read back: the running loss, metrics.jsonl (its line, then its grad_norms line), the progress line.
  auto account = [&](const Queued& q, double loss, double gnorm, const double* param_norms) {
    // The running train loss starts at this run's first step (a resumed run too, not from 0).
    loss_ema = tokens_done == 0 ? loss : 0.98 * loss_ema + 0.02 * loss;
    tokens_done += (double)q.tokens;
    const double t = elapsed(), tps = tokens_done / std::max(t, 1e-9);
    metrics << "{\"step\":" << q.step << ",\"loss\":" << loss << ",\"lr\":" << q.lr << ",\"gnorm\":" << gnorm
            << ",\"tokens\":" << q.tokens << ",\"time\":" << t << "}\n";
    if (param_norms) {
      nlohmann::ordered_json norms;
      for (size_t i = 0; i < q.grad_norms.names.size(); ++i) norms[q.grad_norms.names[i]] = param_norms[i];
      metrics << nlohmann::ordered_json{{"step", q.step}, {"grad_norms", norms}}.dump() << "\n";
    }
    if (!q.dyts.empty()) {
      nlohmann::ordered_json dyts;
      for (const DytMeasure& d : q.dyts)
        dyts[d.norm] = {{"alpha", d.alpha}, {"rms", d.input_rms}, {"saturated", d.saturated}};
      metrics << nlohmann::ordered_json{{"step", q.step}, {"dyt", dyts}}.dump() << "\n";
    }
    if (!o.quiet) {
      double eta = o.max_minutes > 0 ? 60 * o.max_minutes - t
                   : o.max_steps ? (double)(o.max_steps - q.step) * t / (double)q.step : 0;
      std::printf("\rstep %6lld | epoch %3lld | loss %7.4f | lr %.2e | gnorm %8.3f | %6.0f tok/s | ETA %s   ",
                  (long long)q.step, (long long)epoch, loss_ema, q.lr, gnorm, tps, fmt_time(std::max(0.0, eta)).c_str());
      std::fflush(stdout);
    }
  };
  // Reads the queued steps' values in one copy and accounts for them in order; false at the first that diverged
  // (non-finite loss or norm, or a norm over --diverge-grad-norm), which is kept in `diverged`.
  auto read_queued = [&]() -> bool {
    if (queued.empty()) return true;
    std::vector<Tensor> values;  // every step's [loss, norm] and parameter norms, in one copy
    for (const Queued& q : queued) {
      values.push_back(q.values);
      if (q.grad_norms.norms.defined()) values.push_back(q.grad_norms.norms);
    }
    const std::vector<double> v = concat(values, 0).to_vector<double>();
    std::vector<Queued> todo;
    todo.swap(queued);
    size_t at = 0;
    for (const Queued& q : todo) {
      const double loss = v[at], gnorm = v[at + 1];
      const double* param_norms = q.grad_norms.norms.defined() ? &v[at + 2] : nullptr;
      at += 2 + q.grad_norms.names.size();
      if (!std::isfinite(loss) || !std::isfinite(gnorm) || gnorm > o.diverge_grad_norm) {
        diverged = {q.step, loss, gnorm};
        return false;
      }
      account(q, loss, gnorm, param_norms);
    }
    return true;
  };
  auto report_divergence = [&](const std::string& where) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "diverged at step %lld: loss %g, gradient norm %g; ", (long long)diverged.step,
                  diverged.loss, diverged.gnorm);
    res.diverged = true;
    res.divergence = buf + where;
    std::printf("\n%s\n", res.divergence.c_str());
    if (last_saved_step < 0)
      std::printf("this run saved no checkpoint before it diverged\n");
    else if (last_saved_step + 1 == diverged.step)  // the update saved last is the one that made the loss NaN/Inf
      std::printf("%s (step %lld) is kept, but its weights are the ones the diverged step started from: resume "
                  "from it with a lower --lr, or from an earlier --keep-last checkpoint\n",
                  last_ckpt.c_str(), (long long)last_saved_step);
    else
      std::printf("the last checkpoint before the divergence is kept: %s (step %lld)\n", last_ckpt.c_str(),
                  (long long)last_saved_step);
    metrics << "{\"step\":" << diverged.step << ",\"diverged\":true}\n";
  };
  const std::string read_late = "found when the queued steps were read back (--sync-every " +
                                std::to_string(o.sync_every) + "): its update and those after it were applied; "
                                "--sync-every 1 stops before the update and replays the step to name the op that "
                                "made NaN/Inf";
  const auto named_params = model.named_parameters();  // --grad-norms-every: the names of its lines
  model.train();
  // The per-node gradient norms are for graph dumps, not for training: off while train() runs, then the caller's
  // setting again (a test or a program that trains, then dumps a graph, gets its norms).
  TrackGradNormsGuard norm_tracking_off(false);
  while (!stop) {
    auto batches = epoch_batches(epoch);
    for (; batch_in_epoch < (int64_t)batches.size(); batch_in_epoch++) {
      if ((o.max_steps && step >= o.max_steps) || (o.max_minutes > 0 && elapsed() > 60 * o.max_minutes)) {
        stop = true;
        break;
      }
      // --profile-step N: step N from its batch's upload to zero_grad (autograd/profiler.h)
      std::unique_ptr<Profiler> profiler;
      if (step + 1 == o.profile_step) profiler = std::make_unique<Profiler>(device);
      Batch b = collate(train_ex, batches[batch_in_epoch], device);
      opt.set_lr(schedule.lr(step));  // update step+1 at `step` updates done, as fairseq: warmup_init_lr first
      const uint64_t rng_offset = default_generator().offset();  // to replay this step if it diverges
      std::vector<DytMeasure> dyts;
      const bool dyt_stats = o.dyt_stats_every > 0 && (step + 1) % o.dyt_stats_every == 0;
      Tensor values = forward_backward_queued(model, b, o.label_smoothing, autocast_bf16, dyt_stats ? &dyts : nullptr);
      if (!unused_checked) {  // this run's first step: parameters that its forward never reads (no host wait)
        unused_checked = true;
        const std::string unused = nn::without_grad_warning(nn::parameters_without_grad(model));
        if (!unused.empty()) std::printf("warning: %s\n", unused.c_str());
      }
      // --grad-norms-every K: every parameter's ‖∂L/∂θ‖ before clipping, one reduction, read with the step's values
      nn::GradNorms param_norms;
      if (o.grad_norms_every > 0 && (step + 1) % o.grad_norms_every == 0)
        param_norms = nn::grad_norms_on_device(named_params);
      nn::clip_grads_to_norm(model.parameters(), o.clip_norm, values.narrow(0, 1, 1));
      queued.push_back({step + 1, values, b.tgt_tokens, opt.lr(), std::move(param_norms), std::move(dyts)});
      if (o.sync_every <= 1 && !read_queued()) {
        // Replay the step in anomaly mode to name the first op that produced NaN/Inf; its update is not applied.
        opt.zero_grad();
        current_tape().clear();
        std::string where = "no NaN/Inf found on replay (exploding gradient norm)";
        default_generator().set_state(default_generator().seed(), rng_offset);
        try {
          AnomalyGuard anomaly;
          forward_backward(model, b, o.label_smoothing, autocast_bf16);
        } catch (const Error& e) {
          where = e.what();
        }
        current_tape().clear();
        report_divergence(where);
        stop = true;
        break;
      }
      opt.step();
      opt.zero_grad();
      step++;
      if (profiler) {
        profiler->stop();
        const std::string base = o.out_dir + "/profile_step" + std::to_string(step);
        save_profile(*profiler, base);
        std::printf("\n%s(whole tables: %s.txt; Chrome trace: %s.trace.json)\n", profile_table(*profiler, 15).c_str(),
                    base.c_str(), base.c_str());
      }
      const bool evaluates = o.eval_every && step % o.eval_every == 0, saves = o.save_every && step % o.save_every == 0;
      if (((int64_t)queued.size() >= o.sync_every || evaluates || saves || profiler) && !read_queued()) {
        report_divergence(read_late);
        stop = true;
        break;
      }
      if (evaluates) {
        if (validate()) {
          evals_since_best = 0;
        } else if (o.patience && ++evals_since_best >= o.patience) {
          std::printf("early stop: no better valid %s in %d evaluations\n", o.best_metric.c_str(), o.patience);
          stop = true;
        }
      }
      if (saves) {
        flush_metrics();
        batch_in_epoch++;  // the checkpoint resumes at the next batch
        save(last_ckpt);
        last_saved_step = step;
        batch_in_epoch--;
        save_step_checkpoint();
      }
      if (stop) break;
    }
    if (!stop) {
      epoch++;
      batch_in_epoch = 0;
    }
  }
  if (!res.diverged && !read_queued()) report_divergence(read_late);  // the steps queued last
  flush_metrics();
  res.steps = step;
  res.seconds = elapsed();
  res.tokens_per_second = tokens_done / std::max(res.seconds, 1e-9);
  res.final_train_loss = loss_ema;
  if (!o.quiet) std::printf("\n");
  if (!res.diverged) {
    save(last_ckpt);  // first: the training is kept whatever happens in the evaluation
    last_saved_step = step;
    save_step_checkpoint();
  }
  if (!res.diverged && o.eval_every > 0 && step != last_eval_step) {
    // with --eval-every, the model as training left it is one more validation (fairseq validates at the end): it may
    // be checkpoint_best, and then checkpoint_last is written again, its best_* metadata counting it
    if (validate()) save(last_ckpt);
    flush_metrics();
  } else if (step != last_eval_step) {  // (else the last step's validation stands)
    evaluate();
  }
  std::vector<std::string> hyps;
  if (o.test_sentences > 0 && (size_t)o.test_sentences < corpus.test.size()) corpus.test.resize(o.test_sentences);
  res.test_step = step;
  if (o.test_checkpoint == "best" && have_best) {  // (none when every evaluation diverged: the last model, said)
    res.test_step = metadata_int(nn::load_checkpoint(best_ckpt, model, nullptr, /*restore_rng=*/false), "step",
                                 best_ckpt);
  } else if (o.test_checkpoint == "best") {
    std::printf("--test-checkpoint best: no checkpoint_best was written; the test scores the last model\n");
  }
  res.test_bleu = evaluate_bleu(model, vocab, corpus.test, o, o.beam, &hyps);
  {  // for `significance`: the hypotheses and their references, a line each (a sentence is one line of the corpus)
    std::string hyp_text, ref_text;
    for (size_t i = 0; i < hyps.size(); i++) hyp_text += hyps[i] + "\n", ref_text += corpus.test[i].tgt + "\n";
    write_file_atomic(o.out_dir + "/test.hyp.txt", hyp_text);
    write_file_atomic(o.out_dir + "/test.ref.txt", ref_text);
  }
  const std::string tested = res.test_step == step ? "" : ", checkpoint_best of step " + std::to_string(res.test_step);
  std::printf("done: %lld steps in %s (%.0f target tok/s), train loss %.4f, valid loss %.4f, valid BLEU %.2f, "
              "test BLEU (beam %d, %zu sentences%s) %.2f\n",
              (long long)res.steps, fmt_time(res.seconds).c_str(), res.tokens_per_second, res.final_train_loss,
              res.valid_loss, res.valid_bleu, o.beam, corpus.test.size(), tested.c_str(), res.test_bleu);
  for (size_t i = 0; i < std::min<size_t>(5, hyps.size()); i++)
    std::printf("  %s\n    -> %s\n    (ref %s)\n", corpus.test[i].src.c_str(), hyps[i].c_str(), corpus.test[i].tgt.c_str());
  const std::string last = last_saved_step >= 0 ? last_ckpt : "none saved";
  const std::string best = have_best ? ", best valid " + o.best_metric + ": " + best_ckpt : "";
  std::printf("checkpoints: %s%s\nmetrics (JSON lines: steps, evaluations, gradient norms): %s/metrics.jsonl\n",
              last.c_str(), best.c_str(), o.out_dir.c_str());
  return res;
}

}  // namespace translate
