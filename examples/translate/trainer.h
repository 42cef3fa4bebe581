// Training and evaluation of the translation model: one clear path from batches to loss to update, with
// validation, checkpoints, exact resume, early stopping and divergence detection.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "analysis/dyt_measure.h"
#include "batches.h"
#include "decode.h"
#include "nn/transformer.h"

namespace translate {

struct TrainOptions {
  // data
  std::string data_dir = "data";
  std::string corpus = "numbers";  // numbers | ding | a directory holding train.tsv/valid.tsv/test.tsv
  int vocab_size = 1000;
  int64_t max_len = 64;            // tokens per side after subwords (longer sentences are cut)
  // model (vocab and pad are filled from the data)
  skipgrad::nn::TransformerConfig model;
  // optimisation (fairseq IWSLT defaults)
  double lr = 5e-4, warmup_init_lr = 1e-7, beta1 = 0.9, beta2 = 0.98, adam_eps = 1e-8, weight_decay = 1e-4;
  // adamw (fairseq's adam, whose weight decay is decoupled) | radam (nn::RAdam with decoupled weight decay, as the
  // RAdam authors' code that Admin's recipes train with); both take beta1, beta2, adam_eps and weight_decay
  std::string optimizer = "adamw";
  // "PATTERN=SCALE" entries: the parameters whose names match learn at lr x SCALE (nn::lr_scale_groups; a later
  // pattern wins). Restored from the checkpoint on --resume, as torch restores param_groups.
  skipgrad::nn::PatternValues lr_scale_at;
  int64_t warmup = 4000;
  double label_smoothing = 0.1;
  double clip_norm = 0;            // 0: no clipping (the norm is still reported)
  int64_t max_tokens = 4096;       // per batch and side, padded
  // budget
  int64_t max_steps = 0;           // 0: unlimited
  double max_minutes = 0;          // 0: unlimited
  int64_t eval_every = 500, save_every = 1000;
  int keep_last = 0;               // also keep the model of the last N saves as checkpoint_<step> (for `average`)
  // checkpoint_best.safetensors is the evaluation with the lowest valid loss ("loss", as fairseq's default) or the
  // highest greedy valid BLEU on eval_sentences ("bleu": noisier on a few hundred sentences).
  std::string best_metric = "loss";
  int patience = 0;                // early stop after this many evaluations without a better best_metric (0: never)
  int64_t eval_sentences = 300;    // validation sentences decoded for BLEU at each evaluation (0: all)
  int64_t test_sentences = 0;      // test sentences decoded for the final BLEU (0: all)
  // The model the final test BLEU scores: "last" (the model as training left it) or "best" (checkpoint_best, the
  // evaluation that best_metric chose; needs eval_every > 0), as fairseq's generate is run on checkpoint_best.
  std::string test_checkpoint = "last";
  int beam = 5;
  uint64_t seed = 1;
  bool seed_given = true;          // false: the command line left --seed at its default (a resume says nothing of it)
  std::string out_dir = "runs/default";
  bool resume = false;
  bool quiet = false;              // no live progress line
  double diverge_grad_norm = 1e6;  // a larger (or non-finite) gradient norm counts as divergence
  std::string device = "cpu";      // cpu | cuda | cuda:N: where the model, its batches and the optimizer live
  std::string matmul_precision = "fp32";  // fp32 | tf32 | bf16: float32 products on tensor cores (cuda only)
  std::string autocast = "off";           // off | bf16: mixed precision for the training forward (autograd/autocast.h)
  int64_t profile_step = 0;  // profile this training step (1-based; 0: none): <out>/profile_step<N>.{txt,trace.json}
  // Read each step's loss and gradient norm back every this many steps (and before evaluations, saves, a profiled
  // step's report, the end). 1: every step, before its update, so a diverged step is not applied and is replayed to
  // name the op; K > 1: K steps queue without the host waiting for the GPU (the issue-6 step), a divergence is
  // found at the next read, after the updates of the steps between.
  int64_t sync_every = 1;
  // Every this many steps (0: never), the norm of each parameter's gradient before clipping (TOPOLOGIES.md §7.3, as
  // HybridNorm logs grad/<param>.norm), one line in metrics.jsonl: {"step":N,"grad_norms":{"<name>":norm,...}}.
  // The norms stay on the device and are read with the step's loss (--sync-every), the line written after its.
  int64_t grad_norms_every = 0;
  // Every this many steps (0: never), each DyT's α, input RMS and saturated share on that step's batch
  // (analysis/dyt_measure.h), one metrics.jsonl line after the step's:
  // {"step":N,"dyt":{"<norm>":{"alpha":a,"rms":r,"saturated":s},...}}; none for a model without DyT. Read from the
  // forward's tape before its backward: a host copy of every DyT's input (on a GPU, a wait on those steps).
  int64_t dyt_stats_every = 0;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0, valid_loss = 0, valid_bleu = 0, test_bleu = 0, seconds = 0;
  double best_valid_loss = std::numeric_limits<double>::infinity();  // lowest of the evaluations and the final one
  double tokens_per_second = 0;
  bool diverged = false;
  std::string divergence;  // step, loss and offending node when diverged
  int64_t parameters = 0;
  int64_t test_step = 0;   // the step of the model the test BLEU scored (test_checkpoint best: checkpoint_best's)
};

struct Corpus {
  std::vector<Pair> train, valid, test;
};
// Whether opts.corpus names a built-in corpus (numbers, ding), made under opts.data_dir when missing, rather than
// a folder of the user's; and the folder its TSVs (and cached vocabularies) are in.
bool builtin_corpus(const TrainOptions& opts);
std::string corpus_dir(const TrainOptions& opts);
// Builds (or reads the cached) train/valid/test TSVs for opts.corpus under opts.data_dir.
Corpus prepare_corpus(const TrainOptions& opts);
TrainResult train(const TrainOptions& opts);
// One batch's forward, label-smoothed loss and backward (gradients accumulate into the parameters). Returns the
// mean loss and the global gradient norm, read back together in one copy: on a GPU the step's only wait.
struct LossAndNorm {
  double loss = 0, grad_norm = 0;
};
// autocast_bf16: the forward (and loss) inside an AutocastBF16 scope (--autocast bf16).
LossAndNorm forward_backward(skipgrad::nn::Transformer& model, const Batch& b, double label_smoothing,
                             bool autocast_bf16 = false);
// The same without the read: [loss, gradient norm] as a float64 [2] tensor on the model's device (norm 0 when no
// parameter has a gradient).
// With `dyts`, also each DyT's statistics of this forward (measure_dyts), before its backward.
skipgrad::Tensor forward_backward_queued(skipgrad::nn::Transformer& model, const Batch& b, double label_smoothing,
                                         bool autocast_bf16 = false,
                                         std::vector<skipgrad::DytMeasure>* dyts = nullptr);
// Mean label-smoothed loss per target token of `ex` under a model (teacher-forced, eval mode), and with `nll` the
// mean -log p(target) from the same forward; corpus BLEU of `pairs`.
double evaluate_loss(skipgrad::nn::Transformer& model, const std::vector<Example>& ex, const TrainOptions& opts,
                     double* nll = nullptr);
double evaluate_bleu(skipgrad::nn::Transformer& model, const Vocab& vocab, const std::vector<Pair>& pairs,
                     const TrainOptions& opts, int beam, std::vector<std::string>* hypotheses = nullptr);

}  // namespace translate
