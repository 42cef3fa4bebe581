// skipgrad-translate: train, decode and score a toy German→English Transformer, for every topology.
//   skipgrad-translate train --corpus numbers --topology resi_dual --minutes 3
//   skipgrad-translate compare --topologies post_ln,pre_ln,resi_dual --steps 1000
//   skipgrad-translate translate --checkpoint runs/x/checkpoint_best.safetensors < input.de
//   skipgrad-translate translate --checkpoint ... --sampling --sampling-topk 10 --seed 3 < input.de
//   skipgrad-translate eval --checkpoint runs/x/checkpoint_last.safetensors --corpus numbers --beam 5
//   skipgrad-translate sweep --corpus numbers --topologies all --depths 3 --seeds 1 --minutes 3
//   skipgrad-translate bleu hyp.txt ref.txt
//   skipgrad-translate significance runs/post_ln runs/pre_ln runs/resi_dual
// See docs/translate.md.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "backends/threads.h"
#include "average.h"
#include "bleu.h"
#include "examples/cli_checks.h"
#include "examples/cli_lists.h"
#include "eval.h"
#include "nn/optim.h"
#include "nn/topology.h"
#include "significance.h"
#include "sweep.h"
#include "trainer.h"

using namespace translate;
using namespace skipgrad;

using cli_checks::at_least;
using cli_checks::number_that;
using cli_checks::seed_range;

static CLI::Validator label_smoothing_range() {
  return number_that("in [0, 1)", [](double e) { return e >= 0 && e < 1; });
}

// The model options given by name, parsed into TrainOptions::model once the command line is read (and --lr-scale-at,
// into TrainOptions::lr_scale_at).
struct ModelChoices {
  std::string norm = "layer_norm", act = "relu", init = "fairseq", qk_norm = "none", qk_norm_kind = "rms_norm";
  std::string dyt_alpha_at;  // "PATTERN=ALPHA0,..." (nn::parse_dyt_alpha_at)
  std::string lr_scale_at;   // "PATTERN=SCALE,..." (nn::parse_lr_scale_at)
  std::string positions = "sinusoidal";
};

// Options shared by train, compare and sweep.
static void add_train_options(CLI::App* c, TrainOptions& o, ModelChoices& m) {
  c->add_option("--data-dir", o.data_dir, "where corpora and vocabularies are cached")->capture_default_str();
  c->add_option("--device", o.device, "cpu | cuda | cuda:N (docs/cuda.md)")->capture_default_str();
  c->add_option("--matmul-precision", o.matmul_precision,
                "fp32 | tf32 | bf16: float32 matrix products on TF32 or bf16 tensor cores (cuda; the CPU keeps fp32)")
      ->capture_default_str();
  c->add_option("--autocast", o.autocast,
                "off | bf16: bf16 mixed precision for the training forward (bf16 products and activations, float32 "
                "weights, norms and loss; docs/mixed_precision.md)")
      ->capture_default_str();
  c->add_option("--corpus", o.corpus, "numbers | ding | a folder with train.tsv valid.tsv test.tsv")->capture_default_str();
  c->add_option("--vocab-size", o.vocab_size, "SentencePiece vocabulary size")->capture_default_str();
  c->add_option("--layers", o.model.enc_layers, "layers per side")->capture_default_str();
  c->add_option("--d-model", o.model.d_model)->capture_default_str();
  c->add_option("--heads", o.model.heads)->capture_default_str();
  c->add_option("--ffn", o.model.d_ff)->capture_default_str();
  c->add_option("--dropout", o.model.dropout)->capture_default_str();
  c->add_option("--attn-dropout", o.model.attn_dropout)->capture_default_str();
  c->add_option("--act-dropout", o.model.act_dropout)->capture_default_str();
  c->add_option("--norm", m.norm, "layer_norm | rms_norm | dyt (DyT, tanh(alpha x) in every norm's place)")
      ->capture_default_str();
  c->add_option("--dyt-alpha", o.model.dyt_alpha, "with --norm dyt: the init of each DyT's learned alpha")
      ->capture_default_str();
  c->add_option("--dyt-alpha-at", m.dyt_alpha_at, cli_checks::kDytAlphaAtHelp);
  c->add_option("--activation", m.act, "relu | gelu | swiglu")->capture_default_str();
  c->add_option("--init", m.init, "fairseq | small_init | deep_norm | gpt2")->capture_default_str();
  c->add_option("--qk-norm", m.qk_norm, "none | qk | qkv: per-head norms of q, k (and v) in every attention")
      ->capture_default_str();
  c->add_option("--qk-norm-kind", m.qk_norm_kind, "rms_norm | layer_norm | l2 (HybridNorm: --norm's kind)")
      ->capture_default_str();
  c->add_option("--positions", m.positions, "sinusoidal | learned | rope (rotary, in every self-attention) | alibi "
                "(linear distance biases, in every self-attention) | t5 (a learned bias of the relative position, per "
                "stack) | none (no positions: the encoder then sees a bag of tokens)")
      ->capture_default_str();
  c->add_option("--rope-theta", o.model.rope_theta, "RoPE's base, with --positions rope")->capture_default_str();
  c->add_option("--rope-dims", o.model.rope_dims,
                "with --positions rope: rotate only each head's first N dims (GPT-NeoX's partial rotary; 0: all)")
      ->capture_default_str();
  c->add_option("--relative-buckets", o.model.relative_buckets, "T5's buckets, with --positions t5")
      ->capture_default_str();
  c->add_option("--relative-max-distance", o.model.relative_max_distance,
                "with --positions t5: the distance from which T5's bias is the same")
      ->capture_default_str();
  c->add_option("--resi-dual-scale", o.model.resi_dual_scale)->capture_default_str();
  c->add_option("--b2t-rescale", o.model.b2t_rescale,
                "b2t: its layers' weights x L^-1/2 at init, as its authors' code (false: Post-LN's init)")
      ->capture_default_str();
  c->add_option("--layer-scale-init", o.model.layer_scale_init,
                "layer_scale: its lambdas' initial value (-1: CaiT's 0.1 / 1e-5 / 1e-6 by depth)")
      ->capture_default_str();
  c->add_option("--normformer-scale-resids", o.model.normformer_scale_resids,
                "normformer: a learned per-channel scale on each FFN's skip (fairseq's --scale-resids)")
      ->capture_default_str();
  c->add_option("--normformer-fairseq-head-scale", o.model.normformer_fairseq_head_scale,
                "normformer: HeadScale as fairseq's code (after out_proj, channels transposed), not the paper's")
      ->capture_default_str();
  c->add_option("--label-smoothing", o.label_smoothing)->check(label_smoothing_range())->capture_default_str();
  c->add_option("--lr", o.lr)->capture_default_str();
  c->add_option("--warmup", o.warmup, "linear warm-up steps, then inverse square root")->capture_default_str();
  c->add_option("--weight-decay", o.weight_decay)->capture_default_str();
  c->add_option("--lr-scale-at", m.lr_scale_at, cli_checks::kLrScaleAtHelp);
  c->add_option("--optimizer", o.optimizer, "adamw, or radam (RAdam: no warm-up needed; decoupled weight decay)")
      ->check(CLI::IsMember({"adamw", "radam"}))->capture_default_str();
  c->add_option("--clip-norm", o.clip_norm, "0: no clipping")->capture_default_str();
  c->add_option("--max-tokens", o.max_tokens, "padded tokens per batch and side")->capture_default_str();
  c->add_option("--steps", o.max_steps, "stop after this many updates (0: no limit)")->capture_default_str();
  c->add_option("--minutes", o.max_minutes, "stop after this much training time (0: no limit)")->capture_default_str();
  c->add_option("--eval-every", o.eval_every)->capture_default_str();
  c->add_option("--save-every", o.save_every)->capture_default_str();
  c->add_option("--keep-last", o.keep_last,
                "also keep the model of the last N saves as checkpoint_<step>.safetensors, for `average`")
      ->check(at_least(0))->capture_default_str();
  c->add_option("--best-metric", o.best_metric,
                "what checkpoint_best.safetensors keeps: the lowest valid loss or the highest valid BLEU")
      ->check(CLI::IsMember({"loss", "bleu"}))->capture_default_str();
  c->add_option("--patience", o.patience, "early stop after N evaluations without a better --best-metric")
      ->capture_default_str();
  c->add_option("--eval-sentences", o.eval_sentences, "validation sentences decoded for BLEU at each evaluation "
                "(0: all)")->capture_default_str();
  c->add_option("--beam", o.beam, "beam size for the final test BLEU")->capture_default_str();
  c->add_option("--test-sentences", o.test_sentences, "test sentences for the final BLEU (0: all)")->capture_default_str();
  c->add_option("--test-checkpoint", o.test_checkpoint, "the model the final test BLEU scores: the last, or "
                "checkpoint_best (needs --eval-every)")->check(CLI::IsMember({"last", "best"}))->capture_default_str();
  c->add_option("--seed", o.seed)->capture_default_str();
  c->add_option("--out", o.out_dir,
                "run folder: checkpoints and metrics.jsonl (default runs/<topology>; compare: runs/compare; sweep: "
                "runs/sweep)");
  c->add_flag("--resume", o.resume, "continue from <out>/checkpoint_last.safetensors (none there: a fresh run)");
  c->add_flag("--quiet", o.quiet, "no live progress line");
  c->add_option("--profile-step", o.profile_step,
                "profile training step N: time per op and per node on the host and the device, "
                "<out>/profile_stepN.txt and .trace.json (docs/profiling.md); 0: none")->capture_default_str();
  c->add_option("--sync-every", o.sync_every,
                "read the loss and gradient norm back every K steps (and before evaluations and saves): 1 checks "
                "each step before its update; K > 1 queues K steps on a GPU without waiting for it")
      ->check(at_least(1))->capture_default_str();
  c->add_option("--grad-norms-every", o.grad_norms_every,
                "every K steps, each parameter's gradient norm before clipping, as a metrics.jsonl line (0: never)")
      ->check(at_least(0))->capture_default_str();
  c->add_option("--dyt-stats-every", o.dyt_stats_every,
                "with --norm dyt: every K steps, each DyT's alpha, input RMS and saturated share on that step's batch, "
                "as a metrics.jsonl line (0: never)")
      ->check(at_least(0))->capture_default_str();
  // Counts, budgets and sizes: a negative value (or a zero where none makes sense) is refused before any work.
  for (const char* name : {"--steps", "--minutes", "--eval-every", "--save-every", "--patience", "--eval-sentences",
                           "--test-sentences", "--profile-step", "--clip-norm", "--warmup"})
    c->get_option(name)->check(at_least(0));
  c->get_option("--seed")->check(seed_range());
  for (const char* name : {"--max-tokens", "--beam", "--vocab-size"}) c->get_option(name)->check(at_least(1));
}

static int run_command(int argc, char** argv) {
  ensure_passive_omp(argv);  // backends/threads.h: no OpenMP threads spinning against OpenBLAS's
  CLI::App app{"skipgrad-translate: a toy German→English Transformer for comparing residual/norm topologies"};
  app.require_subcommand(1);
  // An option given twice takes its last value, so arguments appended to a command line override it (scripts/main.sh
  // passes its defaults first and the user's arguments after them). Subcommands inherit this.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);

  TrainOptions o;
  o.model.enc_layers = o.model.dec_layers = 3;
  o.model.d_model = 128;
  o.model.heads = 4;
  o.model.d_ff = 512;
  o.model.dropout = 0.1;
  o.lr = 1e-3;
  o.warmup = 400;
  o.max_tokens = 2048;
  ModelChoices choices;

  auto* train_cmd = app.add_subcommand("train", "train one model");
  train_cmd->add_option("--topology", o.model.topology, "post_ln | pre_ln | resi_dual | hybrid_norm | ...")->capture_default_str();
  add_train_options(train_cmd, o, choices);

  auto* compare_cmd = app.add_subcommand("compare", "train one model per topology with the same budget and seed");
  std::string topologies = "post_ln,pre_ln,resi_dual,hybrid_norm,deep_norm";
  compare_cmd->add_option("--topologies", topologies, "comma-separated names")->capture_default_str();
  add_train_options(compare_cmd, o, choices);

  auto* tr_cmd = app.add_subcommand("translate", "translate sentences from a file or stdin");
  std::string ckpt, input;
  int beam = 5;
  tr_cmd->add_option("--checkpoint", ckpt, "a checkpoint written by train")->required();
  tr_cmd->add_option("--input", input, "one sentence per line (default: stdin)");
  tr_cmd->add_option("--beam", beam, "1: greedy")->check(at_least(1))->capture_default_str();
  tr_cmd->add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
  std::string tr_remove_layers;
  tr_cmd->add_option("--remove-layers", tr_remove_layers,
                     "comma-separated layers (enc.3,dec.0) skipped: layer removal");
  DecodeOptions sampling;  // (docs/translate.md "Sampling")
  uint64_t sampling_seed = 1;
  auto* sampling_flag = tr_cmd->add_flag("--sampling", sampling.sampling,
                                         "draw each token from the model's distribution (fairseq's --sampling)");
  tr_cmd->add_option("--sampling-topk", sampling.sampling_topk, "draw among the k most likely tokens (0: all)")
      ->check(at_least(0))->needs(sampling_flag)->capture_default_str();
  tr_cmd->add_option("--sampling-topp", sampling.sampling_topp,
                     "then among the fewest most likely whose probability reaches p (1: all)")
      ->check(number_that("in (0, 1]", [](double p) { return p > 0 && p <= 1; }))
      ->needs(sampling_flag)->capture_default_str();
  tr_cmd->add_option("--temperature", sampling.temperature, "log-probabilities / T before sampling")
      ->check(number_that("> 0", [](double t) { return t > 0 && std::isfinite(t) && std::isfinite(1 / t); }))
      ->needs(sampling_flag)->capture_default_str();
  tr_cmd->add_option("--seed", sampling_seed, "the draws' seed: the same seed, the same output")
      ->check(seed_range())->needs(sampling_flag)->capture_default_str();

  auto* eval_cmd = app.add_subcommand("eval", "test loss and BLEU of a checkpoint, decoded the same way every time");
  EvalOptions ev;
  eval_cmd->add_option("--checkpoint", ev.checkpoint, "a checkpoint written by train")->required();
  eval_cmd->add_option("--corpus", o.corpus, "numbers | ding | a folder: its test.tsv is scored")->capture_default_str();
  eval_cmd->add_option("--data-dir", o.data_dir)->capture_default_str();
  eval_cmd->add_option("--tsv", ev.tsv, "score this source<TAB>target file instead of the corpus's test split");
  eval_cmd->add_option("--beam", ev.beam, "1: greedy")->check(at_least(1))->capture_default_str();
  eval_cmd->add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
  eval_cmd->add_option("--test-sentences", ev.test_sentences, "the first N sentences (0: all)")->capture_default_str();
  eval_cmd->add_option("--label-smoothing", o.label_smoothing, "for the reported loss")
      ->check(label_smoothing_range())->capture_default_str();
  eval_cmd->add_option("--hypotheses", ev.hypotheses_path, "write the translations here, one per line");
  eval_cmd->add_option("--measure", ev.measure,
                       "per-layer gradient norms, cosines and token cosines (rank collapse) on the first N test batches")
      ->check(at_least(0))->capture_default_str();
  std::string remove_layers;
  eval_cmd->add_option("--remove-layers", remove_layers,
                       "comma-separated layers (enc.3,dec.0) skipped in everything eval reports: layer removal");
  eval_cmd->add_flag("--layer-removal", ev.layer_removal,
                     "also score the test set without each (other) layer in turn: loss and BLEU per removed layer");

  auto* sweep_cmd = app.add_subcommand(
      "sweep", "topologies x positions x depths x lrs x seeds under one budget: results table and loss plots");
  SweepOptions sw;
  std::string sweep_topologies = "all", depths = "3", seeds = "1", lrs;
  sweep_cmd->add_option("--topologies", sweep_topologies, "comma-separated names, or all")->capture_default_str();
  sweep_cmd->add_option("--depths", depths, "comma-separated layers per side")->capture_default_str();
  sweep_cmd->add_option("--seeds", seeds, "comma-separated")->capture_default_str();
  sweep_cmd->add_option("--lrs", lrs, "comma-separated peak learning rates, each a run of its own (in place of --lr; "
                        "the runs' folders and labels name theirs)");
  sweep_cmd->add_flag("--force", sw.force, "train again runs whose result.json exists");
  add_train_options(sweep_cmd, o, choices);
  sweep_cmd->get_option("--positions")->description("comma-separated position encodings, each a run of its own: "
                                                     "sinusoidal | learned | rope | alibi | t5 | none");
  for (const char* grid_set : {"--layers", "--seed", "--resume"})  // the grid sets these per run
    sweep_cmd->remove_option(sweep_cmd->get_option(grid_set));

  auto* average_cmd =
      app.add_subcommand("average", "the mean of a run's last checkpoints (fairseq's average_checkpoints)");
  std::vector<std::string> average_inputs;
  std::string average_run, average_out;
  int average_last = 5;
  auto* run_opt =
      average_cmd->add_option("--run", average_run, "a run folder: its checkpoint_<step> files (--keep-last)");
  average_cmd->add_option("--last", average_last, "with --run: the newest N")->check(at_least(1))->needs(run_opt)
      ->capture_default_str();
  average_cmd->add_option("--checkpoints", average_inputs, "these checkpoint files instead")->excludes(run_opt)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  average_cmd->add_option("--out", average_out, "default: <run>/checkpoint_average.safetensors");

  auto* bleu_cmd = app.add_subcommand("bleu", "corpus BLEU (sacreBLEU defaults: 13a, exp smoothing)");
  std::string hyp_path, ref_path;
  bleu_cmd->add_option("hypotheses", hyp_path)->required();
  bleu_cmd->add_option("references", ref_path)->required();

  auto* sig_cmd = app.add_subcommand("significance", "paired significance tests of BLEU, as sacreBLEU's: is each "
                                      "system's difference from the first the test set's luck?");
  SignificanceOptions sig;
  sig_cmd->add_option("systems", sig.systems, "hypothesis files or run folders (their test.hyp.txt); the first is "
                      "the baseline")->required();
  sig_cmd->add_option("--references", sig.references, "default: the run folders' test.ref.txt");
  sig_cmd->add_option("--test", sig.test, "bs: paired bootstrap resampling (sacreBLEU's --paired-bs); ar: paired "
                      "approximate randomization (--paired-ar)")->check(CLI::IsMember({"bs", "ar"}))
      ->capture_default_str();
  sig_cmd->add_option("--samples", sig.samples, "resamples (bs) or trials (ar); default 1000 and 10000")
      ->check(at_least(40));
  sig_cmd->add_option("--seed", sig.seed, "the resamples' generator")->capture_default_str();

  try {
    app.parse(argc, argv);
    if (sampling.sampling && tr_cmd->count("--beam") && beam != 1)  // (sampling draws one hypothesis per sentence)
      throw CLI::ValidationError("--beam", "must be 1 with --sampling, got " + std::to_string(beam));
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints the help, or the message naming the option
    return rc == 0 ? 0 : 2;      // a bad option exits 2, as every other error does
  }
  try {
    o.model.dec_layers = o.model.enc_layers;
    o.model.norm = nn::parse_norm_kind(choices.norm);
    o.model.dyt_alpha_at = nn::parse_dyt_alpha_at(choices.dyt_alpha_at);
    o.lr_scale_at = nn::parse_lr_scale_at(choices.lr_scale_at);
    o.model.activation = nn::parse_activation(choices.act);
    o.model.init = nn::parse_init_scheme(choices.init);
    o.model.qk_norm = nn::parse_head_norm_targets(choices.qk_norm);
    o.model.qk_norm_kind = nn::parse_head_norm_kind(choices.qk_norm_kind);
    // sweep: a comma-separated list, each a run of its own (SweepOptions::positions); else one encoding
    for (const std::string& name : *sweep_cmd ? cli_lists::split_names(choices.positions, "--positions")
                                              : std::vector<std::string>{choices.positions})
      sw.positions.push_back(nn::parse_position_encoding(name));
    o.model.positions = sw.positions[0];
    check(o.model.qk_norm != nn::HeadNormTargets::None || o.model.qk_norm_kind == nn::HeadNormKind::RMSNorm,
          "--qk-norm-kind", ": ", choices.qk_norm_kind, " needs --qk-norm qk or qkv");
    // Options that only act together with another: given alone they would be silently ignored.
    for (CLI::App* cmd : {train_cmd, compare_cmd, sweep_cmd}) {
      if (!*cmd) continue;
      for (const char* name : {"--patience", "--best-metric"})
        check(!cmd->count(name) || o.eval_every > 0, name, ": acts on the evaluations of --eval-every, which is 0");
      check(!o.max_steps || o.profile_step <= o.max_steps, "--profile-step", ": step ", o.profile_step,
            " is past --steps ", o.max_steps);
    }
    for (CLI::App* cmd : {train_cmd, compare_cmd})
      if (*cmd) o.seed_given = cmd->count("--seed") > 0;
    if (*train_cmd) {
      if (o.out_dir == "runs/default") o.out_dir = "runs/" + o.model.topology;
      TrainResult r = train(o);
      return r.diverged ? 3 : 0;
    }
    if (*compare_cmd) {
      std::vector<std::pair<std::string, TrainResult>> rows;
      const std::string base = o.out_dir == "runs/default" ? "runs/compare" : o.out_dir;
      const std::vector<std::string> names = cli_lists::split_names(topologies, "--topologies");
      o.model.check_used_by(names, "compare");
      for (const std::string& t : names) {  // every topology's checks before training
        nn::make_topology(t)->check_config(o.model.with_topology(t));
        nn::check_name_patterns(o.model.with_topology(t), o.lr_scale_at, "--lr-scale-at");
      }
      for (const std::string& t : names) {
        TrainOptions ot = o;
        ot.model = o.model.with_topology(t);  // (--resi-dual-scale: resi_dual's alone)
        ot.out_dir = base + "/" + t;
        std::printf("\n=== %s ===\n", t.c_str());
        rows.emplace_back(t, train(ot));
      }
      bool all_diverged = true;
      for (auto& row : rows) all_diverged = all_diverged && row.second.diverged;
      std::printf("\n| topology | params | steps | train loss | valid loss | valid BLEU | test BLEU (beam %d) | tok/s | status |\n"
                  "|---|---|---|---|---|---|---|---|---|\n", o.beam);
      for (auto& [t, r] : rows)
        std::printf("| %s | %lld | %lld | %.3f | %.3f | %.2f | %.2f | %.0f | %s |\n", t.c_str(), (long long)r.parameters,
                    (long long)r.steps, r.final_train_loss, r.valid_loss, r.valid_bleu, r.test_bleu, r.tokens_per_second,
                    r.diverged ? "diverged" : "ok");
      if (rows.size() >= 2) {  // is each test BLEU's difference from the first topology's the test set's luck?
        SignificanceOptions so;
        for (const std::string& t : names) so.systems.push_back(base + "/" + t);
        std::printf("\ntest BLEU against %s's:\n%s", names[0].c_str(),
                    significance_table(run_significance(so), so).c_str());
      }
      return all_diverged ? 3 : 0;  // as train's exit status for its one run
    }
    if (*tr_cmd) {
      std::vector<std::string> removed;  // (the list checked before the model is read)
      if (!tr_remove_layers.empty()) removed = cli_lists::split_names(tr_remove_layers, "--remove-layers");
      TrainedModel m = load_trained_model(ckpt, o.device);
      if (!removed.empty()) m.model->remove_layers(removed);
      std::vector<std::string> lines;
      if (input.empty()) lines = read_lines(std::cin);
      else lines = read_lines(input, "translate", "input");
      std::vector<Pair> pairs;
      for (auto& l : lines) pairs.push_back({l, "x"});
      // A source longer than the model's positions (with its eos) is cut to them, and said so (ALiBi and none take
      // any length).
      const int64_t max_src = m.cfg.position_limit();
      for (size_t i = 0; i < lines.size(); i++) {
        if (!valid_utf8(lines[i]))  // (decoded all the same, as SentencePiece reads it; eval skips such a line)
          std::fprintf(stderr, "warning: line %zu: invalid UTF-8\n", i + 1);
        if (const int64_t n = (int64_t)m.vocab.encode(lines[i]).size() + 1; n > max_src)
          std::fprintf(stderr, "warning: line %zu: %lld source tokens, cut to the model's %lld positions\n", i + 1,
                       (long long)n, (long long)max_src);
      }
      std::vector<Example> ex = encode_pairs(m.vocab, pairs, max_src);
      DecodeOptions d = sampling;
      Generator gen(sampling_seed);
      d.beam = sampling.sampling ? 1 : beam;
      d.gen = &gen;
      std::vector<std::string> out(lines.size());
      for (auto& idx : make_batches(ex, 2048, 0, false)) {
        d.sentence_keys.assign(idx.begin(), idx.end());  // a line draws the same whatever its batch
        auto res = translate_batch(*m.model, collate(ex, idx).src, d);
        for (size_t k = 0; k < idx.size(); k++) out[idx[k]] = m.vocab.decode(res[k]);
      }
      for (auto& s : out) std::printf("%s\n", s.c_str());
      return 0;
    }
    if (*eval_cmd) {
      ev.data = o;
      if (!remove_layers.empty()) ev.remove_layers = cli_lists::split_names(remove_layers, "--remove-layers");
      EvalResult r = evaluate_checkpoint(ev);
      const std::string qk = nn::head_norm_summary(r.cfg.qk_norm, r.cfg.qk_norm_kind);
      std::printf("checkpoint: %s (step %lld; %s, %lld+%lld layers, d=%lld%s%s)\ntest set: %s, %lld sentences\n",
                  ev.checkpoint.c_str(), (long long)r.step, r.cfg.topology.c_str(), (long long)r.cfg.enc_layers,
                  (long long)r.cfg.dec_layers, (long long)r.cfg.d_model, qk.empty() ? "" : ", ", qk.c_str(),
                  r.test_file.c_str(), (long long)r.sentences);
      std::printf("decoding: beam %d, length penalty %.1f, max length %.1f*source+%d, batches of %lld tokens\n",
                  ev.beam, DecodeOptions{}.len_penalty, DecodeOptions{}.max_len_a, DecodeOptions{}.max_len_b,
                  (long long)std::min<int64_t>(o.max_tokens, 2048));
      std::printf("test loss %.4f (label smoothing %g), nll %.4f (perplexity %.3f)\n", r.loss, o.label_smoothing,
                  r.nll, std::exp(r.nll));
      std::printf("%s\n", bleu_signature_line(r.bleu).c_str());
      if (!ev.hypotheses_path.empty()) std::printf("hypotheses: %s\n", ev.hypotheses_path.c_str());
      if (!ev.remove_layers.empty()) {
        std::printf("removed layers:");
        for (auto& l : ev.remove_layers) std::printf(" %s", l.c_str());
        std::printf(" (skipped: the stream passes them unchanged)\n");
      }
      if (ev.measure > 0)
        std::printf("\nper layer, the mean over %lld test batches (docs/graph.md, \"Measured statistics\"):\n\n%s",
                    (long long)r.measures.samples, layer_measures_markdown(r.measures).c_str());
      if (ev.measure > 0 && !r.measures.dyts.empty())
        std::printf("\nper DyT, the same batches (docs/graph.md, \"DyT's saturation\"):\n\n%s",
                    dyt_measures_markdown(r.measures.dyts).c_str());
      if (ev.layer_removal)
        std::printf("\nwithout one more layer (the same test set and decoding; docs/translate.md, \"Layer "
                    "removal\"):\n\n%s", layer_removal_markdown(r).c_str());
      return 0;
    }
    if (*sweep_cmd) {
      sw.train = o;
      sw.topologies = sweep_topologies == "all" ? nn::topology_names()
                                                : cli_lists::split_names(sweep_topologies, "--topologies");
      sw.depths = cli_lists::split_numbers<int64_t>(depths, "--depths", 1);
      sw.seeds = cli_lists::split_numbers<uint64_t>(seeds, "--seeds", 0);
      check(!(sweep_cmd->count("--lr") && sweep_cmd->count("--lrs")), "--lrs",
            ": lists every run's learning rate: give it or --lr, not both");
      if (sweep_cmd->count("--lrs")) sw.lrs = cli_lists::split_positive_numbers(lrs, "--lrs");
      sw.out_dir = o.out_dir == "runs/default" ? "runs/sweep" : o.out_dir;
      for (int i = 0; i < argc; i++) sw.command += (i ? " " : "") + std::string(i ? argv[i] : "skipgrad-translate");
      run_sweep(sw);  // a diverged run is a result of the sweep, not an error
      return 0;
    }
    if (*average_cmd) {
      if (!average_run.empty()) {
        average_inputs = step_checkpoints(average_run);
        check(!average_inputs.empty(), "average", ": no checkpoint_<step>.safetensors in '", average_run,
              "' (train with --keep-last N)");
        if (average_inputs.size() > (size_t)average_last)
          average_inputs.erase(average_inputs.begin(), average_inputs.end() - average_last);
        if (average_out.empty()) average_out = average_run + "/checkpoint_average.safetensors";
      }
      check(!average_inputs.empty() && !average_out.empty(), "average",
            ": give --run <folder>, or --checkpoints <files> and --out <file>");
      average_checkpoints(average_inputs, average_out);
      std::printf("%s: the mean of %zu checkpoints:\n", average_out.c_str(), average_inputs.size());
      for (auto& p : average_inputs) std::printf("  %s\n", p.c_str());
      return 0;
    }
    if (*sig_cmd) {
      std::cout << significance_table(run_significance(sig), sig);
      return 0;
    }
    if (*bleu_cmd) {
      const std::vector<std::string> hyps = read_lines(hyp_path, "bleu", "hypotheses");  // (in this order)
      std::cout << corpus_bleu(hyps, read_lines(ref_path, "bleu", "references")).str() << "\n";
      return 0;
    }
  } catch (const std::exception& e) {  // skipgrad::Error, and a file system's or allocator's own
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}

int main(int argc, char** argv) {
  return cli_checks::with_stdout_checked("skipgrad-translate", run_command(argc, argv));
}
