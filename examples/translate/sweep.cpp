#include "sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config_json.h"
#include "nn/checkpoint.h"
#include "nn/optim.h"
#include "nn/topology.h"
#include "tensor/error.h"

namespace translate {

using namespace skipgrad;
using json = nlohmann::json;
namespace fs = std::filesystem;

std::string sweep_run_name(const std::string& topology, int64_t layers, uint64_t seed, const std::string& positions,
                           double lr) {
  return topology + "_L" + std::to_string(layers) + "_s" + std::to_string(seed) +
         (positions == "sinusoidal" ? "" : "_" + positions) + (lr > 0 ? "_lr" + number_str(lr) : "");
}

std::string sweep_run_name(const SweepRow& r) {
  return sweep_run_name(r.topology, r.layers, r.seed, r.positions, r.lr);
}

static std::string topology_label(const SweepRow& r) {
  if (r.settings.empty()) return r.topology;
  const json settings = json::parse(r.settings);  // (a local: items() of a temporary would dangle)
  json model;                                      // its "model.<field>" entries are the run's config JSON
  for (const auto& item : settings.items())
    if (item.key().rfind("model.", 0) == 0) model[item.key().substr(6)] = item.value();
  // (settings are taken before the vocabulary is known: 0, which the config refuses; any size holding the pad id does)
  model["vocab"] = std::max<int64_t>(model.value("pad_id", int64_t(1)) + 1, 2);
  return config_from_json(model.dump()).topology_summary();
}

std::string sweep_row_label(const SweepRow& r) {
  return topology_label(r) + (r.lr > 0 ? " lr " + number_str(r.lr) : "");
}

std::string run_settings(const TrainOptions& t) {
  json j = {{"corpus", t.corpus}, {"vocab_size", t.vocab_size}, {"max_len", t.max_len}, {"lr", t.lr},
            {"warmup_init_lr", t.warmup_init_lr}, {"optimizer", t.optimizer}, {"beta1", t.beta1},
            {"beta2", t.beta2}, {"adam_eps", t.adam_eps},
            {"weight_decay", t.weight_decay}, {"lr_scale_at", nn::pattern_values_text(t.lr_scale_at)},
            {"warmup", t.warmup}, {"label_smoothing", t.label_smoothing},
            {"clip_norm", t.clip_norm}, {"max_tokens", t.max_tokens}, {"max_steps", t.max_steps},
            {"max_minutes", t.max_minutes}, {"eval_every", t.eval_every}, {"test_sentences", t.test_sentences},
            {"beam", t.beam}, {"device", Device::parse(t.device).str()}, {"matmul_precision", t.matmul_precision},
            {"autocast", t.autocast}, {"diverge_grad_norm", t.diverge_grad_norm}};
  if (t.eval_every > 0) {  // (options of the periodic evaluations, which there are none of otherwise)
    j["best_metric"] = t.best_metric;
    j["test_checkpoint"] = t.test_checkpoint;
    j["patience"] = t.patience;
    j["eval_sentences"] = t.eval_sentences;
  }
  const json model = json::parse(config_to_json(t.model));  // (a local: items() of a temporary would dangle)
  for (const auto& item : model.items()) j["model." + item.key()] = item.value();
  return j.dump();
}

// A setting that one side lacks (written before it was recorded, or left out as it does not apply) reads as its
// default, TrainOptions{}'s; the device is compared as a Device ("cuda" is "cuda:0").
std::string settings_differences(const std::string& a, const std::string& b) {
  const json ja = json::parse(a, nullptr, false), jb = json::parse(b, nullptr, false);
  if (!ja.is_object() || !jb.is_object()) return "settings that are not a JSON object";
  static const json defaults = [] {
    const TrainOptions t;  // (a named object: GCC 12 warns of a temporary's string as maybe uninitialized)
    return json::parse(run_settings(t));
  }();
  auto value = [](const json& j, const std::string& k) {
    const json& v = j.contains(k) ? j[k] : defaults.contains(k) ? defaults[k] : json();
    return k == "device" && v.is_string() ? json(Device::parse(v.get<std::string>()).str()).dump() : v.dump();
  };
  std::set<std::string> keys;
  for (const auto& item : ja.items()) keys.insert(item.key());
  for (const auto& item : jb.items()) keys.insert(item.key());
  std::string out;
  for (const std::string& k : keys) {
    const std::string va = value(ja, k), vb = value(jb, k);
    if (va != vb) out += (out.empty() ? "" : ", ") + k + " " + va + " vs " + vb;
  }
  return out;
}

// ---- the sweep ----

static std::string lr_list(const std::vector<double>& lrs) {
  std::string s;
  for (double lr : lrs) s += (s.empty() ? "" : ", ") + number_str(lr);
  return s;
}

static std::string describe(const SweepOptions& o) {
  const TrainOptions& t = o.train;
  std::ostringstream s;
  s << "Corpus `" << t.corpus << "` (SentencePiece vocabulary of at most " << t.vocab_size << "), d=" << t.model.d_model << ", " << t.model.heads
    << " heads" << (t.model.qk_norm == nn::HeadNormTargets::None ? "" : " with ")
    << nn::head_norm_summary(t.model.qk_norm, t.model.qk_norm_kind) << ", ffn " << t.model.d_ff << ", dropout "
    << t.model.dropout << ", norm " << t.model.norm_summary()
    << "; " << t.optimizer << ", lr " << (o.lrs.empty() ? number_str(t.lr) : lr_list(o.lrs) + " (one run each)")
    << nn::lr_scale_at_note(t.lr_scale_at)
    << ", warm-up " << t.warmup << ", " << t.max_tokens
    << " tokens per batch, label smoothing "
    << t.label_smoothing << "; budget per run: ";
  if (t.max_minutes > 0) s << t.max_minutes << " min of training, evaluations included";
  if (t.max_minutes > 0 && t.max_steps > 0) s << ", or ";
  if (t.max_steps > 0) s << t.max_steps << " steps";
  if (t.max_minutes > 0 && t.max_steps > 0) s << ", whichever comes first";
  if (t.max_minutes <= 0 && t.max_steps <= 0) s << "none";
  s << "; test BLEU " << (t.test_checkpoint == "best" ? "of checkpoint_best " : "") << "with beam " << t.beam
    << " (length penalty 1), "
    << (t.test_sentences > 0 ? std::to_string(t.test_sentences) : std::string("all")) << " test sentences. "
    << "`minutes` is training time; best valid loss is the lowest of "
    << (t.eval_every > 0 ? "the evaluations every " + std::to_string(t.eval_every) + " steps and the final one."
                         : std::string("one: the final evaluation (no --eval-every)."));
  if (!o.command.empty()) s << "\n\nCommand: `" << o.command << "`";
  return s.str();
}

// A finished run of the grid cell `want` (its topology, depth, seed, positions and settings) in `dir` into `row`
// (false: none, train it): its result.json, which must be the result of that run, trained with those settings. A
// result written before runs recorded their settings is checked by its checkpoint's model config where it has one
// (its position encoding: the run folders of sinusoidal sweeps and of --positions sweeps before the positions axis
// had the same names).
static bool read_finished_run(const std::string& dir, const SweepRow& want, SweepRow* row) {
  const std::string path = dir + "/result.json", name = sweep_run_name(want);
  const std::string &settings = want.settings, &positions = want.positions;
  if (!read_sweep_row(path, row)) return false;
  check(sweep_run_name(*row) == name, "sweep", ": '", path, "' holds the result of ", sweep_run_name(*row),
        ", not of ", name, ": delete it to train that run again");
  if (!row->settings.empty()) {  // a run of another sweep's options must not pass for this one's
    const std::string diff = settings_differences(row->settings, settings);
    check(diff.empty(), "sweep", ": '", path, "' was trained with other options (", diff,
          "; its value first): give another --out, or --force to train every run again");
  } else if (const std::string ckpt = dir + "/checkpoint_last.safetensors"; fs::exists(ckpt)) {
    const nn::SafetensorsFile f = nn::load_safetensors(ckpt);
    if (f.metadata.count("config")) {
      const nn::TransformerConfig c = config_from_json(f.metadata.at("config"));
      check(nn::position_encoding_name(c.positions) == positions, "sweep", ": '", path, "' was trained with ",
            nn::position_encoding_name(c.positions), " positions (its checkpoint's config), not ", positions,
            ": give another --out, or --force to train every run again");
    }
  }
  return true;
}

std::vector<SweepRow> run_sweep(const SweepOptions& o) {
  check(!o.topologies.empty() && !o.depths.empty() && !o.seeds.empty(), "sweep",
        ": needs at least one topology, depth and seed (got ", o.topologies.size(), ", ", o.depths.size(), ", ",
        o.seeds.size(), ")");
  o.train.model.check_used_by(o.topologies, "sweep");
  const std::vector<nn::PositionEncoding> encodings =
      o.positions.empty() ? std::vector<nn::PositionEncoding>{o.train.model.positions} : o.positions;
  const bool rope_listed = std::find(encodings.begin(), encodings.end(), nn::PositionEncoding::Rope) != encodings.end();
  check(o.train.model.rope_theta == 10000 || rope_listed, "sweep", ": rope_theta ", o.train.model.rope_theta,
        " is for positions rope, which the sweep does not train");
  check(o.train.model.rope_dims == 0 || rope_listed, "sweep", ": rope_dims ", o.train.model.rope_dims,
        " is for positions rope, which the sweep does not train");
  const bool t5_listed = std::find(encodings.begin(), encodings.end(), nn::PositionEncoding::T5) != encodings.end();
  check((o.train.model.relative_buckets == 32 && o.train.model.relative_max_distance == 128) || t5_listed, "sweep",
        ": relative_buckets ", o.train.model.relative_buckets, " and relative_max_distance ",
        o.train.model.relative_max_distance, " are for positions t5, which the sweep does not train");
  // A run's model: the topology's (--resi-dual-scale: resi_dual's alone), its depth and positions (--rope-theta:
  // rope's alone, --relative-buckets t5's, ...).
  auto run_model = [&](const std::string& topology, nn::PositionEncoding encoding, int64_t layers) {
    nn::TransformerConfig c = o.train.model.with_topology(topology).with_positions(encoding);
    c.enc_layers = c.dec_layers = layers;
    return c;
  };
  for (int64_t L : o.depths) check(L >= 1, "sweep", ": depths must be at least 1, got ", L);
  for (double lr : o.lrs) check(std::isfinite(lr) && lr > 0, "sweep", ": learning rates must be > 0, got ", lr);
  const std::vector<double> lrs = o.lrs.empty() ? std::vector<double>{o.train.lr} : o.lrs;
  for (const std::string& t : o.topologies)  // unknown names and settings a run refuses fail before training
    for (nn::PositionEncoding e : encodings) {
      nn::TransformerConfig c = run_model(t, e, o.depths[0]);
      c.vocab = std::max<int64_t>(c.vocab, c.pad_id + 1);  // (a placeholder: train() takes it from the data)
      c.validate();
      for (int64_t L : o.depths) {  // (names by depth: enc.11.ffn_norm)
        nn::check_name_patterns(run_model(t, e, L), o.train.lr_scale_at, "--lr-scale-at");
      }
    }
  fs::create_directories(o.out_dir);

  const std::string preamble = describe(o);
  auto write_tables = [&](std::vector<SweepRow>& rows) {
    add_bootstrap_p_values(rows, o.out_dir, o.topologies[0]);
    write_results_markdown(o.out_dir + "/results.md", rows, preamble);
    write_results_csv(o.out_dir + "/results.csv", rows);
    write_summary_csv(o.out_dir + "/summary.csv", summarize_sweep(rows));
  };
  // The grid, and what each run has already: every finished run is read and checked before any run trains.
  struct Run {
    TrainOptions t;
    SweepRow row;  // the cell (topology, layers, seed, positions, settings), then its result
    bool done = false;
  };
  std::vector<Run> grid;
  for (const std::string& topology : o.topologies)
    for (nn::PositionEncoding encoding : encodings)
      for (int64_t layers : o.depths)
        for (double lr : lrs)
          for (uint64_t seed : o.seeds) {
            Run run;
            run.row = {topology, layers, seed, 0, 0, 0, 0, 0, false, nn::position_encoding_name(encoding), "",
                       o.lrs.empty() ? 0 : lr};
            run.t = o.train;
            run.t.model = run_model(topology, encoding, layers);
            run.t.seed = seed;
            run.t.lr = lr;
            run.t.out_dir = o.out_dir + "/" + sweep_run_name(run.row);
            run.t.resume = false;
            run.row.settings = run_settings(run.t);
            if (!o.force) run.done = read_finished_run(run.t.out_dir, SweepRow(run.row), &run.row);
            grid.push_back(std::move(run));
          }
  std::vector<SweepRow> rows;
  for (Run& run : grid) {
    const std::string name = sweep_run_name(run.row);
    if (run.done) {
      std::printf("[%zu/%zu] %s: done already (test BLEU %.2f)%s, skipped\n", rows.size() + 1, grid.size(),
                  name.c_str(), run.row.test_bleu,
                  run.row.settings.empty() ? " (its options, written before sweeps recorded them, not checked)" : "");
      rows.push_back(run.row);
      continue;
    }
    std::printf("\n=== [%zu/%zu] %s ===\n", rows.size() + 1, grid.size(), name.c_str());
    std::fflush(stdout);
    const TrainResult r = train(run.t);
    run.row.steps = r.steps;
    run.row.test_bleu = r.test_bleu;
    run.row.best_valid_loss = r.best_valid_loss;
    run.row.final_train_loss = r.final_train_loss;
    run.row.minutes = r.seconds / 60;
    run.row.diverged = r.diverged;
    write_sweep_row(run.t.out_dir + "/result.json", run.row);
    rows.push_back(run.row);
    write_tables(rows);  // a partial table after every run
  }
  write_tables(rows);
  const std::string plot_dir = o.out_dir + "/plots";
  std::vector<std::string> scripts = write_plot_files(plot_dir, o.out_dir, rows);
  std::printf("\nresults: %s/results.md, %s/results.csv, %s/summary.csv\n", o.out_dir.c_str(), o.out_dir.c_str(),
              o.out_dir.c_str());
  if (render_plots(plot_dir, scripts))
    std::printf("plots: %s/{train,valid}_loss_L*.png and .svg\n", plot_dir.c_str());
  else
    std::printf("plots: gnuplot is not installed; the data and scripts are in %s: install gnuplot-nox, then "
                "`cd %s && for f in *.gp; do gnuplot \"$f\"; done`\n",
                plot_dir.c_str(), plot_dir.c_str());
  return rows;
}

}  // namespace translate
