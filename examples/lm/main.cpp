// skipgrad-lm: train a character-level decoder-only language model of each named topology on one text, side by
// side, and compare them by validation loss, stability and a sample (README, "Decoder-only language models").
//
//   skipgrad-lm                                            # GPL-3's text, pre_ln,post_ln,hybrid_norm,deep_norm,...
//   skipgrad-lm --text book.txt --topologies pre_ln,peri_ln --layers 8 --d-model 128 --steps 2000 --device cuda
//
// The data path, as llm.c's: bytes -> ids (a byte's rank among the text's distinct bytes, + 3: ids 0-2 are the
// model's pad and special ids, unused here), the first 90% for training and the rest for validation; a batch is B
// random windows of `context` + 1 ids, x = window[:-1], y = window[1:]. The model is nn::Transformer with
// enc_layers 0 (its init --init: fairseq's by default, gpt2 for nanoGPT's N(0, 0.02)); the recipe TOPOLOGIES.md
// §8.2's toy protocol: AdamW β (0.9, 0.95), weight decay 0.1 off norms and biases, warm-up then cosine to 10%,
// gradients clipped to 1 (--optimizer radam: RAdam with the same settings). Losses are in nats per character
// (bits = nats / ln 2).
// Exit status: 0 when every topology's validation loss fell below its value at initialization; 1 when one did
// not learn or diverged (a non-finite loss stops it); 2 for a bad option or file.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/threads.h"
#include "examples/cli_checks.h"
#include "examples/cli_lists.h"
#include "skipgrad.h"

using namespace skipgrad;

namespace {

struct Options {
  std::string text = "/usr/share/common-licenses/GPL-3";  // on every Debian machine (base-files)
  std::string topologies = "pre_ln,post_ln,hybrid_norm,deep_norm,mix_ln,peri_ln,resi_dual";
  int64_t layers = 4, d_model = 64, heads = 4, d_ff = 256, context = 64, batch = 16, steps = 600, warmup = 30;
  int64_t eval_every = 100, eval_batches = 8, sample = 80, top_k = 0;
  double lr = 2e-3, temperature = 0;  // temperature 0: the greedy sample
  std::string init = "fairseq";  // fairseq | small_init | deep_norm | gpt2 (TransformerConfig::init)
  std::string norm = "layer_norm";  // layer_norm | rms_norm | dyt (TransformerConfig::norm)
  double dyt_alpha = 0.5;
  std::string dyt_alpha_at;  // "PATTERN=ALPHA0,..." (TransformerConfig::dyt_alpha_at)
  std::string optimizer = "adamw";  // adamw | radam (the same betas and decoupled weight decay)
  std::string lr_scale_at;  // "PATTERN=SCALE,..." (nn::lr_scale_groups)
  std::string positions = "sinusoidal";  // sinusoidal | learned | rope | alibi | none (TransformerConfig::positions)
  double rope_theta = 10000;
  int64_t rope_dims = 0;
  int64_t relative_buckets = 32, relative_max_distance = 128;
  uint64_t seed = 1;
  std::string device = "cpu";
};

// The text as ids: byte b -> 3 + its rank among the distinct bytes; `bytes` maps an id back.
struct Corpus {
  std::vector<int64_t> train, valid;
  std::vector<unsigned char> bytes;  // bytes[id - 3]
  int64_t vocab = 0;
};

Corpus load_corpus(const Options& o) {
  const std::string text = read_file(o.text, "--text");
  bool seen[256] = {};
  for (unsigned char c : text) seen[c] = true;
  Corpus c;
  int rank[256] = {};
  for (int b = 0; b < 256; b++)
    if (seen[b]) rank[b] = (int)c.bytes.size(), c.bytes.push_back((unsigned char)b);
  c.vocab = 3 + (int64_t)c.bytes.size();
  const size_t split = text.size() * 9 / 10;
  for (size_t i = 0; i < text.size(); i++) (i < split ? c.train : c.valid).push_back(3 + rank[(unsigned char)text[i]]);
  check((int64_t)c.valid.size() > o.context + 1, "--text", " '", o.text, "' has ", text.size(),
        " bytes; its last 10% must hold more than --context ", o.context, " + 1 of them");
  return c;
}

// B windows of context + 1 ids from `ids`, at offsets drawn from rng: x = window[:-1], y = window[1:].
std::pair<Tensor, Tensor> batch_of(const std::vector<int64_t>& ids, int64_t B, int64_t T, std::mt19937_64& rng,
                                   Device device) {
  std::uniform_int_distribution<size_t> start(0, ids.size() - (size_t)T - 1);
  std::vector<int64_t> x, y;
  for (int64_t b = 0; b < B; b++) {
    const size_t s = start(rng);
    x.insert(x.end(), ids.begin() + s, ids.begin() + s + T);
    y.insert(y.end(), ids.begin() + s + 1, ids.begin() + s + T + 1);
  }
  return {Tensor::from_vector(x, {B, T}, device), Tensor::from_vector(y, {B, T}, device)};
}

double loss_of(nn::Transformer& lm, const Tensor& x, const Tensor& y) {
  return nn::label_smoothed_nll(lm.forward(x), y, lm.config().pad_id, 0.0).loss.item();
}

// Mean loss over the same eval_batches validation windows every time (eval mode, no tape).
double valid_loss(nn::Transformer& lm, const Corpus& c, const Options& o, Device device) {
  NoGradGuard no_grad;
  lm.eval();
  std::mt19937_64 rng(o.seed + 7);
  double sum = 0;
  for (int64_t i = 0; i < o.eval_batches; i++) {
    auto [x, y] = batch_of(c.valid, o.batch, o.context, rng, device);
    sum += loss_of(lm, x, y);
  }
  lm.train();
  return sum / (double)o.eval_batches;
}

// One table cell of text: a line break or tab as a space, '|' and other bytes that are not printable ASCII as \xNN.
std::string cell_text(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) {
    char buf[8];
    if (ch == '\n' || ch == '\t') out += ' ';
    else if (ch >= 0x20 && ch < 0x7f && ch != '|') out += (char)ch;
    else std::snprintf(buf, sizeof buf, "\\x%02X", ch), out += buf;
  }
  return out;
}

// «prompt» and its continuation of o.sample characters (nn::generate: greedy, or drawn at o.temperature > 0 from
// the o.top_k most likely): the prompt is the validation text's first 16 characters, with no bos, as training
// windows begin.
std::string sample_text(nn::Transformer& lm, const Corpus& c, const Options& o) {
  lm.eval();
  const std::vector<int64_t> prompt(c.valid.begin(), c.valid.begin() + std::min<size_t>(16, c.valid.size()));
  nn::GenerateOptions g;
  g.max_new_tokens = o.sample;
  g.sampling = o.temperature > 0;
  g.draw.temperature = o.temperature > 0 ? o.temperature : 1.0;
  g.draw.top_k = o.top_k;
  Generator gen(o.seed);
  g.draw.gen = &gen;
  const std::vector<int64_t> continuation = nn::generate(lm, {prompt}, g)[0];
  lm.train();
  auto text_of = [&](const std::vector<int64_t>& ids) {
    std::string s;
    for (int64_t id : ids) s += id >= 3 ? (char)c.bytes[id - 3] : '?';  // (ids 0-2 never occur in training)
    return cell_text(s);
  };
  return "«" + text_of(prompt) + "» " + text_of(continuation);
}

struct Row {
  std::string topology;
  int64_t params = 0, steps = 0;
  double valid0 = 0, train_loss = 0, valid = 0, max_gnorm = 0, seconds = 0;
  bool diverged = false;
  std::string sample;
};

// --lr-scale-at's patterns and scales (an Error naming the entry that is not PATTERN=SCALE).
nn::PatternValues lr_scale_at(const Options& o) {
  return nn::parse_lr_scale_at(o.lr_scale_at);
}

// The model of `topology` the options describe, over `vocab` ids (validated).
nn::TransformerConfig lm_config(const Options& o, const std::string& topology, int64_t vocab) {
  nn::TransformerConfig cfg;
  cfg.vocab = vocab;
  cfg.d_model = o.d_model, cfg.heads = o.heads, cfg.d_ff = o.d_ff;
  cfg.enc_layers = 0, cfg.dec_layers = o.layers;
  cfg.dropout = 0.0;
  // a training window, or the positions the sample feeds: its prompt (16) and all but its last character
  cfg.max_positions = std::max<int64_t>(o.context, o.sample > 0 ? 16 + o.sample - 1 : 0);
  cfg.topology = topology;
  cfg.init = nn::parse_init_scheme(o.init);
  cfg.norm = nn::parse_norm_kind(o.norm);
  cfg.dyt_alpha = o.dyt_alpha;
  cfg.dyt_alpha_at = nn::parse_dyt_alpha_at(o.dyt_alpha_at);
  cfg.positions = nn::parse_position_encoding(o.positions);
  cfg.rope_theta = o.rope_theta;
  cfg.rope_dims = o.rope_dims;
  cfg.relative_buckets = o.relative_buckets;
  cfg.relative_max_distance = o.relative_max_distance;
  cfg.validate();
  return cfg;
}

Row train_one(const std::string& topology, const Corpus& c, const Options& o, Device device) {
  const nn::TransformerConfig cfg = lm_config(o, topology, c.vocab);
  manual_seed(o.seed);
  nn::Transformer lm(cfg);
  lm.to(device);
  Row r;
  r.topology = topology;
  r.params = lm.num_parameters();
  std::mt19937_64 rng(o.seed);
  TrackGradNormsGuard norm_tracking_off(false);  // per-node gradient norms are for graph dumps: not needed here
  const auto started = std::chrono::steady_clock::now();
  {
    auto [x, y] = batch_of(c.train, o.batch, o.context, rng, device);
    const std::string line = lm.init_from_batch(Tensor(), x);  // Admin's ω; nothing for the others
    if (!line.empty()) std::fprintf(stderr, "%s: %s\n", topology.c_str(), line.c_str());
  }
  r.valid0 = valid_loss(lm, c, o, device);
  const std::unique_ptr<nn::Optimizer> optimizer = nn::make_adamw_or_radam(
      o.optimizer, nn::lr_scale_groups(lm.named_parameters(), lr_scale_at(o), "--lr-scale-at"),
      {.lr = o.lr, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1, .no_decay_on_norms_and_biases = true},
      "skipgrad-lm");
  nn::Optimizer& opt = *optimizer;
  nn::CosineLR schedule(o.lr, o.warmup, o.steps, 0.1);
  for (int64_t step = 1; step <= o.steps; step++) {
    auto [x, y] = batch_of(c.train, o.batch, o.context, rng, device);
    Tensor loss = nn::label_smoothed_nll(lm.forward(x), y, cfg.pad_id, 0.0).loss;
    loss.backward();
    if (step == 1)  // parameters that the forward never reads (a custom topology's module built, never called)
      if (const std::string unused = nn::without_grad_warning(nn::parameters_without_grad(lm)); !unused.empty())
        std::fprintf(stderr, "%s: warning: %s\n", topology.c_str(), unused.c_str());
    const double gnorm = nn::clip_grad_norm(lm.parameters(), 1.0);
    opt.set_lr(schedule.lr(step));
    opt.step();
    opt.zero_grad();
    r.train_loss = loss.item();  // (on a GPU, a wait; clip_grad_norm's read of the norm is the other)
    r.steps = step;
    if (!std::isfinite(r.train_loss) || !std::isfinite(gnorm)) {
      r.diverged = true;
      std::fprintf(stderr, "%s: diverged at step %lld (loss %g, gradient norm %g)\n", topology.c_str(),
                   (long long)step, r.train_loss, gnorm);
      break;
    }
    r.max_gnorm = std::max(r.max_gnorm, gnorm);
    if (o.eval_every > 0 && step % o.eval_every == 0 && step < o.steps)
      std::fprintf(stderr, "%s: step %lld  train %.4f  valid %.4f\n", topology.c_str(), (long long)step,
                   r.train_loss, valid_loss(lm, c, o, device));
  }
  r.valid = r.diverged ? NAN : valid_loss(lm, c, o, device);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!r.diverged && o.sample > 0) r.sample = sample_text(lm, c, o);
  return r;
}

}  // namespace

static int run(int argc, char** argv) {
  ensure_passive_omp(argv);  // backends/threads.h
  CLI::App app{"skipgrad-lm: character-level decoder-only language models of several topologies, side by side"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Options o;
  using cli_checks::in_range;
  app.add_option("--text", o.text, "a text file (read as bytes)")->capture_default_str();
  app.add_option("--topologies", o.topologies, "comma-separated names")->capture_default_str();
  app.add_option("--layers", o.layers)->check(in_range(1, 1000))->capture_default_str();
  app.add_option("--d-model", o.d_model)->check(in_range(1, 1 << 16))->capture_default_str();
  app.add_option("--heads", o.heads)->check(in_range(1, 1 << 12))->capture_default_str();
  app.add_option("--ffn", o.d_ff, "FFN inner size")->check(in_range(1, 1 << 18))->capture_default_str();
  app.add_option("--context", o.context, "tokens per training window")->check(in_range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--batch", o.batch, "windows per step")->check(in_range(1, 1 << 16))->capture_default_str();
  app.add_option("--steps", o.steps)->check(in_range(1, 1 << 30))->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warm-up steps, then cosine to 10%")->check(in_range(0, 1 << 30))
      ->capture_default_str();
  app.add_option("--optimizer", o.optimizer, "adamw, or radam (RAdam: the same betas and decoupled weight decay)")
      ->check(CLI::IsMember({"adamw", "radam"}))->capture_default_str();
  app.add_option("--lr", o.lr, "the peak learning rate")
      ->check(cli_checks::number_that("in (0, 10]", [](double v) { return v > 0 && v <= 10; }))
      ->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "print train/valid loss every N steps (0: only at the end)")
      ->check(in_range(0, 1 << 30))->capture_default_str();
  app.add_option("--eval-batches", o.eval_batches, "validation batches per evaluation")->check(in_range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--sample", o.sample, "characters of the sample after training (0: none)")
      ->check(in_range(0, 1 << 16))->capture_default_str();
  app.add_option("--init", o.init, "fairseq | small_init | deep_norm | gpt2 (N(0, 0.02), as nanoGPT)")
      ->capture_default_str();
  app.add_option("--norm", o.norm, "layer_norm | rms_norm | dyt (DyT, tanh(alpha x) in every norm's place)")
      ->capture_default_str();
  app.add_option("--dyt-alpha", o.dyt_alpha, "with --norm dyt: the init of each DyT's learned alpha")
      ->capture_default_str();
  app.add_option("--dyt-alpha-at", o.dyt_alpha_at, cli_checks::kDytAlphaAtHelp);
  app.add_option("--lr-scale-at", o.lr_scale_at, cli_checks::kLrScaleAtHelp);
  app.add_option("--positions", o.positions,
                 "sinusoidal | learned (GPT-2's) | rope (rotary, as LLaMA/OLMo) | alibi (as BLOOM/MPT) | t5 (T5's "
                 "relative bias) | none (NoPE)")
      ->capture_default_str();
  app.add_option("--rope-theta", o.rope_theta, "RoPE's base, with --positions rope")->capture_default_str();
  app.add_option("--rope-dims", o.rope_dims,
                 "with --positions rope: rotate only each head's first N dims (GPT-NeoX's partial rotary; 0: all)")
      ->capture_default_str();
  app.add_option("--relative-buckets", o.relative_buckets, "T5's buckets, with --positions t5")
      ->capture_default_str();
  app.add_option("--relative-max-distance", o.relative_max_distance,
                 "with --positions t5: the distance from which T5's bias is the same")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "the sample's: 0 greedy, else drawn (nn::generate)")
      ->check(cli_checks::number_that("in [0, 100]", [](double v) { return v >= 0 && v <= 100; }))
      ->capture_default_str();
  app.add_option("--top-k", o.top_k, "with --temperature: draw from the k most likely (0: all)")
      ->check(in_range(0, 1 << 24))->capture_default_str();
  app.add_option("--seed", o.seed)->check(cli_checks::seed_range())->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda | cuda:N")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    const Device device = Device::parse(o.device);
    (void)backend_for(device);  // no such device: an error now, before the text is read
    check(o.top_k == 0 || o.temperature > 0, "--top-k ", o.top_k, " draws the sample: it needs --temperature > 0 "
          "(0: the greedy sample)");
    check(o.steps > o.warmup, "--steps ", o.steps, " must exceed --warmup ", o.warmup,
          " (warm-up, then a cosine decay to 10%)");
    const std::vector<std::string> names = cli_lists::split_names(o.topologies, "--topologies");
    for (const std::string& t : names) {  // names, sizes and the patterns checked before the text is read
      nn::check_name_patterns(lm_config(o, t, 1000), lr_scale_at(o), "--lr-scale-at");
    }
    // (sinusoidal and RoPE extrapolate smoothly; the last new character is never fed, so it needs no position)
    if (o.positions == "learned" && 16 + o.sample - 1 > o.context) {
      const int64_t fits = std::max<int64_t>(o.context - 15, 0);
      std::fprintf(stderr, "--positions learned: the sample is cut from %lld to %lld characters, so that the prompt "
                   "(16) and all but the last sampled character stay within the --context %lld positions training "
                   "updates\n",
                   (long long)o.sample, (long long)fits, (long long)o.context);
      o.sample = fits;
    }
    const Corpus corpus = load_corpus(o);
    std::fprintf(stderr, "%s: %zu training and %zu validation characters, vocabulary %lld (ln V = %.3f)\n",
                 o.text.c_str(), corpus.train.size(), corpus.valid.size(), (long long)corpus.vocab,
                 std::log((double)corpus.vocab));
    std::vector<Row> rows;
    for (const std::string& t : names) rows.push_back(train_one(t, corpus, o, device));
    const nn::TransformerConfig first = lm_config(o, names[0], corpus.vocab);
    const std::string positions = first.positions_summary();
    const std::string norms = first.norm_summary();
    std::printf("Character-level decoder-only LMs on %s: %lld layers, d %lld, %lld heads, FFN %lld, context %lld, "
                "batch %lld, %lld steps, init %s, %s norms, %s positions, %s lr %g%s (cosine to 10%% after %lld "
                "warm-up steps), clip 1, device %s. Losses in nats per character, validation over %lld fixed "
                "batches.\n\n",
                o.text.c_str(), (long long)o.layers, (long long)o.d_model, (long long)o.heads, (long long)o.d_ff,
                (long long)o.context, (long long)o.batch, (long long)o.steps, o.init.c_str(), norms.c_str(),
                positions.c_str(),
                o.optimizer == "radam" ? "RAdam" : "AdamW", o.lr,
                nn::lr_scale_at_note(lr_scale_at(o)).c_str(),
                (long long)o.warmup, o.device.c_str(), (long long)o.eval_batches);
    std::printf("| topology | parameters | valid at init | train (last step) | valid | bits/char | max ‖g‖ | seconds "
                "| sample (greedy, or --temperature) |\n|---|---|---|---|---|---|---|---|---|\n");
    bool all_learned = true;
    for (const Row& r : rows) {
      const bool learned = !r.diverged && r.valid < r.valid0;
      all_learned = all_learned && learned;
      char valid[48], bits[32];
      if (r.diverged) {
        std::snprintf(valid, sizeof valid, "diverged at step %lld", (long long)r.steps);
        std::snprintf(bits, sizeof bits, "–");
      } else {
        std::snprintf(valid, sizeof valid, "%.4f", r.valid);
        std::snprintf(bits, sizeof bits, "%.3f", r.valid / std::log(2.0));
      }
      std::printf("| %s | %lld | %.4f | %.4f | %s | %s | %.3g | %.1f | %s |\n", r.topology.c_str(),
                  (long long)r.params, r.valid0, r.train_loss, valid, bits, r.max_gnorm, r.seconds,
                  r.sample.c_str());
    }
    return all_learned ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "skipgrad-lm: %s\n", e.what());
    return 2;
  }
}

int main(int argc, char** argv) { return cli_checks::with_stdout_checked("skipgrad-lm", run(argc, argv)); }
