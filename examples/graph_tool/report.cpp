// skipgrad-graph report: path counts and measured per-layer statistics for several topologies and depths.
#include "report.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

namespace graph_tool {

using namespace skipgrad;

nn::TransformerConfig ModelOptions::config() const {
  nn::TransformerConfig c;
  c.vocab = vocab;
  c.d_model = d_model;
  c.heads = heads;
  c.d_ff = d_ff;
  c.enc_layers = c.dec_layers = layers;
  c.dropout = c.attn_dropout = c.act_dropout = 0.0;
  c.topology = topology;
  c.max_positions = std::max<int64_t>(len, 16);
  c.validate();
  return c;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

namespace {

const char* kMarker = "<!-- generated below -->";

std::string num(double v, int prec = 3) {
  if (std::isnan(v)) return "–";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", prec, v);
  return buf;
}

std::string range(int64_t lo, int64_t hi) {
  if (lo < 0) return "–";
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "–" + std::to_string(hi);
}

// The smallest min_norms over the sublayer outputs of `kind` in `layer` (-1 when none).
int64_t min_norms_of(const PathStats& s, const std::string& layer, const std::string& kind) {
  int64_t best = -1;
  for (const SublayerPaths& b : s.sublayers)
    if (b.layer == layer && b.kind == kind && b.stats.min_norms >= 0)
      best = best < 0 ? b.stats.min_norms : std::min(best, b.stats.min_norms);
  return best;
}

struct Run {
  std::string topology;
  int64_t depth;
  LayerMeasures m;
  double seconds;
};

std::string run_table(const Run& r) {
  const bool dual = r.topology == "resi_dual";
  std::string out = "| layer | norms on param paths (min–max, w/o q/k/v) | norms after residual adds (min–max) |";
  if (dual) out += " norms after x_d add (min) |";
  out += " ‖∇W2‖ (fc2) | ‖∇layer‖ | cos(x_{i-1}, x_i) | RMS(x) | max\\|x\\| |";
  if (dual) out += " max\\|x_d\\| |";
  out += "\n|---|---|---|";
  if (dual) out += "---|";
  out += "---|---|---|---|---|";
  if (dual) out += "---|";
  out += "\n";
  for (const LayerMeasure& l : r.m.layers) {
    const LayerPaths* lp = nullptr;
    for (const LayerPaths& x : r.m.paths.layers)
      if (x.scope == l.layer) lp = &x;
    out += "| " + l.layer + " | " + (lp ? range(lp->param_min_norms_outer, lp->param_max_norms_outer) : "?") +
           " | " + (lp ? range(lp->output_min_norms, lp->output_max_norms) : "?") + " |";
    if (dual) out += " " + range(min_norms_of(r.m.paths, l.layer, "dual_add"), min_norms_of(r.m.paths, l.layer, "dual_add")) + " |";
    out += " " + num(l.fc2_grad_norm) + " | " + num(l.layer_grad_norm) + " | " + num(l.cos_prev, 4) + " | " +
           num(l.rms) + " | " + num(l.max_abs) + " |";
    if (dual) out += " " + num(l.dual_max_abs) + " |";
    out += "\n";
  }
  return out;
}

// Ratio of the first to the last layer's fc2 gradient norm on one side ("enc" or "dec").
double first_last_ratio(const LayerMeasures& m, const std::string& side, int64_t depth) {
  return m.layer(side + ".0").fc2_grad_norm / m.layer(side + "." + std::to_string(depth - 1)).fc2_grad_norm;
}

double mean_cos(const LayerMeasures& m, const std::string& side) {
  double s = 0;
  int n = 0;
  for (auto& l : m.layers)
    if (l.layer.rfind(side + ".", 0) == 0 && !std::isnan(l.cos_prev)) s += l.cos_prev, ++n;
  return n ? s / n : std::nan("");
}

bool gnuplot_available() { return std::system("command -v gnuplot >/dev/null 2>&1") == 0; }

// One data file per run: layer index (encoder 0..L-1, decoder L..2L-1) and the statistics.
void write_dat(const std::string& path, const Run& r) {
  std::ostringstream os;
  os << "# i layer fc2 layer_grad cos rms max_abs param_min_norms output_min_norms\n";
  int64_t i = 0;
  for (const LayerMeasure& l : r.m.layers) {
    int64_t pmin = -1, omin = -1;
    for (const LayerPaths& x : r.m.paths.layers)
      if (x.scope == l.layer) pmin = x.param_min_norms_outer, omin = x.output_min_norms;
    if (r.topology == "resi_dual") omin = min_norms_of(r.m.paths, l.layer, "dual_add");
    if (l.layer == "dec.0") os << "\n";  // a blank line: gnuplot does not join the encoder to the decoder
    os << i++ << " " << l.layer << " " << l.fc2_grad_norm << " " << l.layer_grad_norm << " "
       << (std::isnan(l.cos_prev) ? std::string("NaN") : std::to_string(l.cos_prev)) << " " << l.rms << " "
       << l.max_abs << " " << pmin << " " << omin << "\n";
  }
  write_file_atomic(path, os.str());
}

// A PNG of column `col` vs layer, one line per topology, for one depth. Returns the PNG's file name.
std::string plot(const std::string& dir, const std::string& stem, int64_t depth, const std::vector<Run>& runs,
                 int col, const std::string& ylabel, bool logy) {
  const std::string png = stem + "_L" + std::to_string(depth) + ".png";
  std::ostringstream gp;
  gp << "set terminal pngcairo size 900,450 noenhanced\nset output '" << dir << "/" << png << "'\n"
     << "set title '" << ylabel << " vs layer, " << depth << "+" << depth << " layers (encoder 0.." << depth - 1
     << ", decoder " << depth << ".." << 2 * depth - 1 << ")'\nset xlabel 'layer'\nset ylabel '" << ylabel
     << "'\nset key outside right\nset grid\nset datafile missing 'NaN'\nset arrow from " << depth - 0.5
     << ", graph 0 to " << depth - 0.5 << ", graph 1 nohead dt 2\n";
  if (logy) gp << "set logscale y\n";
  gp << "plot ";
  bool first = true;
  for (const Run& r : runs) {
    if (r.depth != depth) continue;
    gp << (first ? "" : ", ") << "'" << dir << "/" << r.topology << "_L" << depth << ".dat' using 1:" << col
       << " with linespoints title '" << r.topology << "'";
    first = false;
  }
  gp << "\n";
  const std::string script = dir + "/" + stem + "_L" + std::to_string(depth) + ".gp";
  write_file_atomic(script, gp.str());
  if (std::system(("gnuplot '" + script + "' 2>/dev/null").c_str()) != 0) {
    // the cairo terminal may be missing: fall back to the plain png terminal
    std::string text = gp.str();
    text.replace(text.find("pngcairo"), 8, "png");
    write_file_atomic(script, text);
    if (std::system(("gnuplot '" + script + "'").c_str()) != 0) return "";
  }
  return png;
}

}  // namespace

void write_report(const ReportOptions& opt) {
  check(!opt.topologies.empty() && !opt.depths.empty(), "report", ": need at least one topology and one depth");
  std::vector<Run> runs;
  for (const std::string& topo : opt.topologies)
    for (int64_t depth : opt.depths) {
      ModelOptions mo = opt.model;
      mo.topology = topo;
      mo.layers = depth;
      MeasureOptions meo;
      meo.seeds = opt.seeds;
      meo.n_batches = opt.n_batches;
      meo.batch = mo.batch;
      meo.len = mo.len;
      meo.graph = true;
      auto t0 = std::chrono::steady_clock::now();
      LayerMeasures m = measure_model(mo.config(), meo);
      double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cerr << "report: " << topo << " L=" << depth << " loss " << m.loss << " (" << num(sec) << " s)\n";
      m.graph = Graph();  // the path stats are all the report needs
      runs.push_back({topo, depth, std::move(m), sec});
    }

  // Plots beside the report: docs/analysis_report.md -> docs/analysis_report_files/
  namespace fs = std::filesystem;
  fs::path out(opt.out);
  const std::string dir_name = out.stem().string() + "_files";
  const std::string dir = (out.parent_path() / dir_name).string();
  std::map<int64_t, std::vector<std::pair<std::string, std::string>>> pngs;  // depth -> (caption, file)
  if (opt.plots && gnuplot_available()) {
    fs::create_directories(dir);
    for (const Run& r : runs) write_dat(dir + "/" + r.topology + "_L" + std::to_string(r.depth) + ".dat", r);
    for (int64_t depth : opt.depths) {
      const std::tuple<const char*, int, const char*, bool> what[] = {
          {"fc2_grad", 3, "grad norm of FFN W2", true},
          {"layer_grad", 4, "grad norm of all layer params", true},
          {"cosine", 5, "cos(x_{i-1}, x_i)", false},
          {"min_norms", 9, "min norms on path after layer output (ResiDual: x_d add)", false}};
      for (auto& [stem, col, label, logy] : what) {
        std::string png = plot(dir, stem, depth, runs, col, label, logy);
        if (!png.empty()) pngs[depth].push_back({label, dir_name + "/" + png});
      }
    }
  }

  std::ostringstream md;
  md << kMarker << "\n\n## Generated tables\n\nCommand:\n\n```sh\n" << opt.command << "\n```\n\n"
     << "Model: d_model " << opt.model.d_model << ", " << opt.model.heads << " heads, d_ff " << opt.model.d_ff
     << ", vocab " << opt.model.vocab << ", batch " << opt.model.batch << "×" << opt.model.len
     << " random tokens (lengths in [len/2, len], the rest padding), dropout 0, label smoothing 0.1, at "
        "initialization. Every number is the mean over "
     << opt.seeds.size() << " seeds × " << opt.n_batches << " batches. Path counts are from the first batch's graph "
     << "(structural: they do not depend on the batch).\n\n"
     << "### Summary\n\n| topology | layers | loss | ‖∇W2‖ enc.0 / enc.last | ‖∇W2‖ dec.0 / dec.last | mean cos enc "
        "| mean cos dec | seconds |\n|---|---|---|---|---|---|---|---|\n";
  for (const Run& r : runs)
    md << "| " << r.topology << " | " << r.depth << " | " << num(r.m.loss, 4) << " | "
       << num(first_last_ratio(r.m, "enc", r.depth)) << " | " << num(first_last_ratio(r.m, "dec", r.depth)) << " | "
       << num(mean_cos(r.m, "enc"), 4) << " | " << num(mean_cos(r.m, "dec"), 4) << " | " << num(r.seconds, 2)
       << " |\n";
  md << "\n";
  for (int64_t depth : opt.depths) {
    if (pngs.count(depth)) {
      md << "### Plots, " << depth << "+" << depth << " layers\n\n";
      for (auto& [caption, file] : pngs[depth]) md << "![" << caption << "](" << file << ")\n\n";
    }
  }
  for (const Run& r : runs)
    md << "### " << r.topology << ", " << r.depth << "+" << r.depth << " layers\n\n" << run_table(r) << "\n";

  // keep the hand-written part above the marker
  std::string head;
  if (fs::exists(opt.out)) {
    std::string old = read_file(opt.out);
    size_t at = old.find(kMarker);
    if (at != std::string::npos) head = old.substr(0, at);
  }
  if (head.empty()) head = "# Gradient-path analysis report\n\n(Summary: write it above the marker line.)\n\n";
  write_file_atomic(opt.out, head + md.str());
  std::cerr << "report: wrote " << opt.out << (pngs.empty() ? " (no plots)" : "") << "\n";
}

}  // namespace graph_tool
