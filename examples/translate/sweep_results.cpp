// What a sweep writes and reads back besides training: each run's result.json, the tables (results.md, results.csv,
// summary.csv, with the paired bootstrap p-values) and the loss curves (plots/). run_sweep (sweep.cpp) calls them;
// declared in sweep.h.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "analysis/graph.h"
#include "significance.h"
#include "sweep.h"
#include "tensor/error.h"
#include "tensor/files.h"

namespace translate {

using namespace skipgrad;
using json = nlohmann::json;
namespace fs = std::filesystem;

// ---- one run's result ----

static double number_or_nan(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::numeric_limits<double>::quiet_NaN();
}

void write_sweep_row(const std::string& path, const SweepRow& r) {
  json j = {{"topology", r.topology}, {"layers", r.layers}, {"seed", r.seed}, {"positions", r.positions},
            {"steps", r.steps}, {"test_bleu", r.test_bleu}, {"best_valid_loss", r.best_valid_loss},
            {"final_train_loss", r.final_train_loss}, {"diverged", r.diverged}, {"minutes", r.minutes}};
  if (r.lr > 0) j["lr"] = r.lr;  // (an lr axis's: the run's name and label hold it)
  if (!r.settings.empty()) j["settings"] = json::parse(r.settings);
  // atomic: a run is "done" only once its whole result is on disk; nlohmann writes NaN/Inf as null
  write_file_atomic(path, j.dump(1) + "\n");
}

bool read_sweep_row(const std::string& path, SweepRow* r) {
  std::ifstream in(path);
  if (!in.good()) return false;
  json j;
  try {
    j = json::parse(in);
    r->topology = j.at("topology").get<std::string>();
    r->layers = j.at("layers").get<int64_t>();
    r->seed = j.at("seed").get<uint64_t>();
    r->steps = j.at("steps").get<int64_t>();
    r->diverged = j.at("diverged").get<bool>();
    r->positions = j.value("positions", std::string("sinusoidal"));  // (results from before the positions axis)
    r->lr = j.value("lr", 0.0);                                         // (0: no lr axis)
    if (j.contains("settings") && !j["settings"].is_object())
      throw std::runtime_error("its settings are " + j["settings"].dump(-1).substr(0, 40) + ", not an object");
    r->settings = j.contains("settings") ? j["settings"].dump() : "";
  } catch (const std::exception& e) {
    fail("read_sweep_row", ": '", path, "' is not a sweep result (", e.what(),
         "): delete it to train that run again, or give --force to train every run again");
  }
  r->test_bleu = number_or_nan(j, "test_bleu");
  r->best_valid_loss = number_or_nan(j, "best_valid_loss");
  r->final_train_loss = number_or_nan(j, "final_train_loss");
  r->minutes = number_or_nan(j, "minutes");
  return true;
}

// ---- the table ----

static std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

SeedStats seed_stats(const std::vector<double>& values) {
  SeedStats st;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double sum = 0;
  st.min = std::numeric_limits<double>::infinity(), st.max = -st.min;
  for (double v : values)
    if (!std::isnan(v)) st.n++, sum += v, st.min = std::min(st.min, v), st.max = std::max(st.max, v);
  if (st.n == 0) return {0, nan, nan, nan, nan};
  st.mean = sum / double(st.n);
  double squares = 0;  // two passes: the mean first, then the squared deviations from it
  for (double v : values)
    if (!std::isnan(v)) squares += (v - st.mean) * (v - st.mean);
  st.sd = st.n < 2 ? nan : std::sqrt(squares / double(st.n - 1));
  return st;
}

std::vector<SweepSummary> summarize_sweep(const std::vector<SweepRow>& rows) {
  std::vector<SweepSummary> out;
  std::vector<std::vector<const SweepRow*>> members;
  for (const SweepRow& r : rows) {
    const std::string label = sweep_row_label(r);
    size_t i = 0;
    while (i < out.size() && !(out[i].label == label && out[i].positions == r.positions && out[i].layers == r.layers))
      i++;
    if (i == out.size()) {
      SweepSummary s;
      s.label = label, s.positions = r.positions, s.layers = r.layers;
      s.min_steps = s.max_steps = r.steps;
      out.push_back(s);
      members.emplace_back();
    }
    members[i].push_back(&r);
  }
  for (size_t i = 0; i < out.size(); i++) {
    SweepSummary& s = out[i];
    std::vector<double> bleu, valid, train;
    for (const SweepRow* r : members[i]) {
      s.runs++;
      s.diverged += r->diverged ? 1 : 0;
      s.min_steps = std::min(s.min_steps, r->steps), s.max_steps = std::max(s.max_steps, r->steps);
      bleu.push_back(r->test_bleu), valid.push_back(r->best_valid_loss), train.push_back(r->final_train_loss);
    }
    s.test_bleu = seed_stats(bleu), s.best_valid_loss = seed_stats(valid), s.final_train_loss = seed_stats(train);
  }
  return out;
}

void write_summary_csv(const std::string& path, const std::vector<SweepSummary>& summaries) {
  std::ostringstream out;
  out << "label,positions,layers,runs,diverged,min_steps,max_steps";
  for (const char* m : {"test_bleu", "best_valid_loss", "final_train_loss"})
    for (const char* f : {"n", "mean", "sd", "min", "max"}) out << "," << m << "_" << f;
  out << "\n";
  for (const SweepSummary& s : summaries) {
    out << csv_field(s.label) << "," << s.positions << "," << s.layers << "," << s.runs << "," << s.diverged << ","
        << s.min_steps << "," << s.max_steps;
    for (const SeedStats* st : {&s.test_bleu, &s.best_valid_loss, &s.final_train_loss})
      out << "," << st->n << "," << fmt("%.6f", st->mean) << "," << fmt("%.6f", st->sd) << ","
          << fmt("%.6f", st->min) << "," << fmt("%.6f", st->max);
    out << "\n";
  }
  write_file_atomic(path, out.str());
}

// "97.51 ± 1.20" ("97.51" for one value, "nan" for none), then "95.90–98.62" for the range.
static std::string mean_sd(const SeedStats& st, const char* f) {
  if (st.n == 0) return "nan";
  return fmt(f, st.mean) + (st.n < 2 ? std::string() : " ± " + fmt(f, st.sd));
}
static std::string min_max(const SeedStats& st, const char* f) {
  return st.n == 0 ? "nan" : fmt(f, st.min) + "–" + fmt(f, st.max);
}

void add_bootstrap_p_values(std::vector<SweepRow>& rows, const std::string& runs_dir,
                            const std::string& baseline_topology) {
  auto has_hypotheses = [&](const SweepRow& r) {
    const std::string dir = runs_dir + "/" + sweep_run_name(r);
    return fs::exists(dir + "/test.hyp.txt") && fs::exists(dir + "/test.ref.txt");
  };
  for (SweepRow& r : rows) {
    if (!std::isnan(r.p_value) || r.topology == baseline_topology || !has_hypotheses(r)) continue;
    auto base = std::find_if(rows.begin(), rows.end(), [&](const SweepRow& b) {
      return b.topology == baseline_topology && b.positions == r.positions && b.layers == r.layers &&
             b.lr == r.lr && b.seed == r.seed;
    });
    if (base == rows.end() || !has_hypotheses(*base)) continue;
    SignificanceOptions so;
    so.systems = {runs_dir + "/" + sweep_run_name(*base), runs_dir + "/" + sweep_run_name(r)};
    try {  // (a folder edited by hand must not stop the table: that row goes without its p-value, said)
      r.p_value = run_significance(so)[1].p_value;
      SweepRow topology_only = *base;  // (the baseline topology's label: with an lr axis, each lr has its own run)
      topology_only.lr = 0;
      r.baseline = sweep_row_label(topology_only);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: no p-value for %s: %s\n", sweep_run_name(r).c_str(), e.what());
    }
  }
}

void write_results_markdown(const std::string& path, const std::vector<SweepRow>& rows, const std::string& preamble) {
  std::ostringstream out;
  if (!preamble.empty()) out << preamble << "\n\n";
  std::string baseline;  // the p column's, when a row has a p-value
  for (const SweepRow& r : rows)
    if (!std::isnan(r.p_value) && baseline.empty()) baseline = r.baseline;
  out << "| topology | positions | layers | seed | steps | test BLEU | best valid loss | final train loss | diverged? "
         "| minutes |"
      << (baseline.empty() ? "" : " p vs " + baseline + " |") << "\n"
      << "|---|---|---|---:|---:|---:|---:|---:|---|---:|" << (baseline.empty() ? "" : "---:|") << "\n";
  for (const SweepRow& r : rows) {
    out << "| " << sweep_row_label(r) << " | " << r.positions << " | " << r.layers << "+" << r.layers << " | " << r.seed
        << " | " << r.steps << " | "
        << fmt("%.2f", r.test_bleu) << " | " << fmt("%.4f", r.best_valid_loss) << " | "
        << fmt("%.4f", r.final_train_loss) << " | " << (r.diverged ? "yes" : "no") << " | " << fmt("%.1f", r.minutes)
        << " |";
    if (!baseline.empty())
      out << " " << (std::isnan(r.p_value) ? std::string("–") : fmt("%.3f", r.p_value) + (r.p_value < 0.05 ? " *" : ""))
          << " |";
    out << "\n";
  }
  if (!baseline.empty())
    out << "\np: paired bootstrap resampling of the test BLEU against " << baseline
        << "'s run of the same positions, depth" << (rows.front().lr > 0 ? ", learning rate" : "")
        << " and seed (1000 resamples of its test sentences, `skipgrad-translate "
           "significance`); * p < 0.05; – no such run, or a run without its test hypotheses.\n";
  const std::vector<SweepSummary> summaries = summarize_sweep(rows);
  const bool several_seeds =
      std::any_of(summaries.begin(), summaries.end(), [](const SweepSummary& s) { return s.runs > 1; });
  if (several_seeds) {
    out << "\n## Across seeds\n\n"
        << "Per topology, encoding and depth: mean ± sample standard deviation over its seeds (diverged runs "
           "included, at the values they reached; `nan` values left out), and the range.\n\n"
        << "| topology | positions | layers | runs | diverged | steps | test BLEU | range | best valid loss | range |\n"
        << "|---|---|---|---:|---:|---|---:|---|---:|---|\n";
    for (const SweepSummary& s : summaries)
      out << "| " << s.label << " | " << s.positions << " | " << s.layers << "+" << s.layers << " | " << s.runs
          << " | " << s.diverged << " | "
          << (s.min_steps == s.max_steps ? std::to_string(s.min_steps)
                                         : std::to_string(s.min_steps) + "–" + std::to_string(s.max_steps))
          << " | " << mean_sd(s.test_bleu, "%.2f") << " | " << min_max(s.test_bleu, "%.2f") << " | "
          << mean_sd(s.best_valid_loss, "%.4f") << " | " << min_max(s.best_valid_loss, "%.4f") << " |\n";
  }
  write_file_atomic(path, out.str());
}

void write_results_csv(const std::string& path, const std::vector<SweepRow>& rows) {
  std::ostringstream out;
  out << "topology,positions,layers,seed,steps,test_bleu,best_valid_loss,final_train_loss,diverged,minutes,label,"
         "p_vs_baseline\n";
  for (const SweepRow& r : rows)
    out << r.topology << "," << r.positions << "," << r.layers << "," << r.seed << "," << r.steps << ","
        << fmt("%.4f", r.test_bleu) << ","
        << fmt("%.6f", r.best_valid_loss) << "," << fmt("%.6f", r.final_train_loss) << ","
        << (r.diverged ? "true" : "false") << "," << fmt("%.3f", r.minutes) << "," << csv_field(sweep_row_label(r))
        << "," << fmt("%.6f", r.p_value) << "\n";
  write_file_atomic(path, out.str());
}

// ---- loss curves ----

RunCurves read_metrics(const std::string& path) {
  RunCurves c;
  std::ifstream in(path);
  check(in.good(), "read_metrics", ": cannot open '", path, "'");
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
    const int64_t step = j["step"].get<int64_t>();
    if (j.contains("loss") && j["loss"].is_number()) {
      c.step.push_back(step);
      c.loss.push_back(j["loss"].get<double>());
    }
    if (j.contains("valid_loss")) {
      c.valid_step.push_back(step);
      c.valid_loss.push_back(number_or_nan(j, "valid_loss"));
      c.valid_bleu.push_back(number_or_nan(j, "valid_bleu"));
    }
  }
  return c;
}

namespace {
// Ten distinguishable colours (matplotlib's tab10); runs beyond ten change the dash pattern.
const char* kColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

struct PlotLine {
  std::string file, title;
  size_t colour = 0, dash = 0;  // kColours[colour % 10]; gnuplot's dash type dash + 1
};

void write_gnuplot_script(const std::string& path, const std::string& stem, const std::string& title,
                          const std::string& ylabel, int column, const char* style, const std::vector<PlotLine>& lines) {
  std::ostringstream out;
  out << "# " << title << ". Render from this folder: gnuplot " << fs::path(path).filename().string()
      << "  (writes " << stem << ".png and " << stem << ".svg)\n"
      << "set terminal pngcairo size 960,600 noenhanced font ',10'\n"
      << "set output '" << stem << ".png'\n"
      << "set title '" << title << "'\n"
      << "set xlabel 'step'\nset ylabel '" << ylabel << "'\n"
      << "set logscale y\nset grid\nset key outside right\n"
      << "plot \\\n";
  for (size_t i = 0; i < lines.size(); i++)
    out << "  '" << lines[i].file << "' using 1:" << column << " with " << style << " lw 1.5 dt " << 1 + lines[i].dash
        << " lc rgb '" << kColours[lines[i].colour % 10] << "' title '" << lines[i].title << "'"
        << (i + 1 < lines.size() ? ", \\" : "") << "\n";
  out << "set terminal svg size 960,600 noenhanced dynamic\n"
      << "set output '" << stem << ".svg'\nreplot\nunset output\n";
  write_file_atomic(path, out.str());
}
}  // namespace

std::vector<std::string> write_plot_files(const std::string& plot_dir, const std::string& runs_dir,
                                          const std::vector<SweepRow>& rows) {
  fs::create_directories(plot_dir);
  std::set<uint64_t> seeds;
  std::set<std::string> positions;
  for (const SweepRow& r : rows) seeds.insert(r.seed), positions.insert(r.positions);
  std::map<int64_t, std::vector<PlotLine>> train_lines, valid_lines;  // per depth
  // One colour per topology and encoding; with several seeds, one dash pattern per seed (else per ten lines, when
  // more than ten topologies share the colours).
  std::vector<std::string> groups;
  std::vector<uint64_t> seed_order(seeds.begin(), seeds.end());
  for (const SweepRow& r : rows) {
    const std::string name = sweep_run_name(r);
    const std::string metrics = runs_dir + "/" + name + "/metrics.jsonl";
    if (!fs::exists(metrics)) continue;
    RunCurves c = read_metrics(metrics);
    const std::string group = sweep_row_label(r) + (positions.size() > 1 ? " " + r.positions : "");
    const std::string title = group + (seeds.size() > 1 ? " s" + std::to_string(r.seed) : "");
    const size_t colour = size_t(std::find(groups.begin(), groups.end(), group) - groups.begin());
    if (colour == groups.size()) groups.push_back(group);
    const size_t dash = seeds.size() > 1
                            ? size_t(std::find(seed_order.begin(), seed_order.end(), r.seed) - seed_order.begin())
                            : colour / 10;
    if (!c.step.empty()) {
      std::ostringstream out;
      out << "# step loss ema(0.98)\n";
      double ema = 0;
      for (size_t i = 0; i < c.step.size(); i++) {
        ema = i == 0 ? c.loss[i] : 0.98 * ema + 0.02 * c.loss[i];
        out << c.step[i] << " " << c.loss[i] << " " << ema << "\n";
      }
      write_file_atomic(plot_dir + "/" + name + ".train.dat", out.str());
      train_lines[r.layers].push_back({name + ".train.dat", title, colour, dash});
    }
    if (!c.valid_step.empty()) {
      std::ostringstream out;
      out << "# step valid_loss valid_bleu\n";
      for (size_t i = 0; i < c.valid_step.size(); i++)
        out << c.valid_step[i] << " " << c.valid_loss[i] << " " << c.valid_bleu[i] << "\n";
      write_file_atomic(plot_dir + "/" + name + ".valid.dat", out.str());
      valid_lines[r.layers].push_back({name + ".valid.dat", title, colour, dash});
    }
  }
  std::vector<std::string> scripts;
  for (auto& [layers, lines] : train_lines) {
    const std::string stem = "train_loss_L" + std::to_string(layers), L = std::to_string(layers);
    write_gnuplot_script(plot_dir + "/" + stem + ".gp", stem,
                         "training loss vs step (0.98-EMA of the per-step loss), " + L + "+" + L + " layers",
                         "label-smoothed loss per target token", 3, "lines", lines);
    scripts.push_back(stem + ".gp");
  }
  for (auto& [layers, lines] : valid_lines) {
    const std::string stem = "valid_loss_L" + std::to_string(layers), L = std::to_string(layers);
    write_gnuplot_script(plot_dir + "/" + stem + ".gp", stem, "validation loss vs step, " + L + "+" + L + " layers",
                         "label-smoothed loss per target token", 2, "linespoints pt 7 ps 0.6", lines);
    scripts.push_back(stem + ".gp");
  }
  return scripts;
}

bool render_plots(const std::string& plot_dir, const std::vector<std::string>& scripts) {
  if (!gnuplot_available()) return false;
  for (const std::string& s : scripts)
    if (!run_gnuplot(plot_dir, s))
      std::fprintf(stderr, "warning: gnuplot failed on %s/%s\n", plot_dir.c_str(), s.c_str());
  return true;
}

}  // namespace translate
