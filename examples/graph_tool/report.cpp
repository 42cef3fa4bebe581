// skipgrad-graph report: path counts and measured per-layer statistics for several topologies and depths.
#include "report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <tuple>

#include "nn/optim.h"

namespace graph_tool {

using namespace skipgrad;

nn::TransformerConfig ModelOptions::config() const {
  nn::TransformerConfig c = own;
  c.vocab = vocab;
  c.d_model = d_model;
  c.heads = heads;
  c.d_ff = d_ff;
  c.enc_layers = decoder_only ? 0 : layers;
  c.dec_layers = layers;
  c.dropout = c.attn_dropout = c.act_dropout = 0.0;
  c.topology = topology;
  set_norm(c);
  c.qk_norm = nn::parse_head_norm_targets(qk_norm);
  c.qk_norm_kind = nn::parse_head_norm_kind(qk_norm_kind);
  c.positions = nn::parse_position_encoding(positions);
  c.rope_theta = rope_theta;
  c.rope_dims = rope_dims;
  c.relative_buckets = relative_buckets;
  c.relative_max_distance = relative_max_distance;
  c.max_positions = std::max<int64_t>(len, 16);
  c.validate();
  return c;
}

std::string layers_text(int64_t layers, bool decoder_only) {
  const std::string n = std::to_string(layers);
  return decoder_only ? "decoder-only, " + n + " layers" : n + "+" + n + " layers";
}

std::string ModelOptions::layers_text() const { return graph_tool::layers_text(layers, decoder_only); }

void ModelOptions::set_norm(nn::TransformerConfig& c) const {
  c.norm = nn::parse_norm_kind(norm);
  c.dyt_alpha = dyt_alpha;
  c.dyt_alpha_at = nn::parse_dyt_alpha_at(dyt_alpha_at);
}

std::string ModelOptions::norm_text() const {
  nn::TransformerConfig c;  // (not config(): its topology may be a placeholder that refuses another's options)
  set_norm(c);
  return c.norm_summary();
}

ModelOptions ModelOptions::with_topology(const std::string& t) const {
  ModelOptions mo = *this;
  mo.topology = t;
  mo.own = own.with_topology(t);
  return mo;
}

void ModelOptions::check_topologies(const std::vector<std::string>& topologies,
                                    const nn::PatternValues& lr_scale_at) const {
  own.check_used_by(topologies, "--topologies");
  for (const std::string& t : topologies)
    nn::check_name_patterns(with_topology(t).config(), lr_scale_at, "--lr-scale-at");
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
  std::string label;  // the topology with its own options set away from their defaults: "b2t (b2t_rescale false)"
  int64_t depth;
  std::vector<LayerMeasures> m;  // one per ReportOptions::steps entry
  double seconds;
  const LayerMeasures& init() const { return m.front(); }  // paths are structural: any step's graph would do
};

// The steps as a plot/table label: "init" for 0, "step N" otherwise.
std::string step_label(int64_t step) { return step == 0 ? "init" : "step " + std::to_string(step); }

// Whether layer removal was measured (MeasureOptions::removal): its deltas are NaN otherwise.
bool has_removal(const LayerMeasures& m) { return !m.layers.empty() && !std::isnan(m.layers[0].removal_delta); }

// The sublayers' relative updates ‖o‖/‖x‖: self-attention, [cross-attention,] FFN.
std::string update_cell(const LayerMeasure& l) {
  return num(l.self_attn_update) + (std::isnan(l.cross_attn_update) ? "" : " / " + num(l.cross_attn_update)) +
         " / " + num(l.ffn_update);
}

// The largest self-attention logit, and in the decoder " / " the largest cross-attention one.
std::string logit_cell(const LayerMeasure& l) {
  return num(l.self_logit_max < 0 ? NAN : l.self_logit_max) +
         (l.cross_logit_max >= 0 ? " / " + num(l.cross_logit_max) : "");
}

// The mean entropy of the self-attention, and in the decoder " / " that of the cross-attention.
std::string entropy_cell(const LayerMeasure& l) {
  return num(l.self_attn_entropy) + (std::isnan(l.cross_attn_entropy) ? "" : " / " + num(l.cross_attn_entropy));
}

// Per-layer table of one run: the structural columns, then the measured ones for every step.
std::string run_table(const Run& r) {
  const bool dual = r.topology == "resi_dual", removal = has_removal(r.init());
  const size_t steps = r.m.size();
  std::string head = "| layer | norms on param paths (min–max, w/o q/k/v) | norms after residual adds (min–max) |";
  std::string rule = "|---|---|---|";
  if (dual) head += " norms after x_d add (min) |", rule += "---|";
  for (const LayerMeasures& m : r.m) {
    std::string at;
    if (steps > 1) at.append(" @").append(step_label(m.step));
    head += " ‖∇W2‖" + at + " | ‖∇layer‖" + at + " | cos(x_{i-1}, x_i)" + at + " | cos(tokens)" + at + " | RMS(x)" +
            at + " | max\\|x\\|" + at + " |";
    rule += "---|---|---|---|---|---|";
    if (dual) head += " max\\|x_d\\|" + at + " |", rule += "---|";
    head += " ‖o‖/‖x‖ (self / [cross /] ffn)" + at + " | max logit (self / cross)" + at + " | entropy (self / cross)" +
            at + " |";
    rule += "---|---|---|";
    if (removal) head += " Δloss w/o layer" + at + " |", rule += "---|";
  }
  std::string out = head + "\n" + rule + "\n";
  const PathStats& paths = r.init().paths;
  for (size_t li = 0; li < r.init().layers.size(); ++li) {
    const std::string& layer = r.init().layers[li].layer;
    const LayerPaths* lp = nullptr;
    for (const LayerPaths& x : paths.layers)
      if (x.scope == layer) lp = &x;
    out += "| " + layer + " | " + (lp ? range(lp->param_min_norms_outer, lp->param_max_norms_outer) : "?") + " | " +
           (lp ? range(lp->output_min_norms, lp->output_max_norms) : "?") + " |";
    const int64_t dual_min = min_norms_of(paths, layer, "dual_add");
    if (dual) out.append(" ").append(range(dual_min, dual_min)).append(" |");
    for (const LayerMeasures& m : r.m) {
      const LayerMeasure& l = m.layers[li];
      out.append(" ").append(num(l.fc2_grad_norm)).append(" | ").append(num(l.layer_grad_norm)).append(" | ");
      out.append(num(l.cos_prev, 4)).append(" | ").append(num(l.token_cos, 4)).append(" | ");
      out.append(num(l.rms)).append(" | ").append(num(l.max_abs)).append(" |");
      if (dual) out.append(" ").append(num(l.dual_max_abs)).append(" |");
      out.append(" ").append(update_cell(l)).append(" | ").append(logit_cell(l)).append(" | ");
      out.append(entropy_cell(l)).append(" |");
      if (removal) out.append(" ").append(num(l.removal_delta, 3)).append(" |");
    }
    out += "\n";
  }
  return out;
}

// Per-DyT table of one run (--norm dyt): α, α·RMS(x) and the saturated share at every step; "" without DyT.
std::string dyt_table(const Run& r) {
  if (r.init().dyts.empty()) return "";
  std::string head = "| DyT |", rule = "|---|";
  for (const LayerMeasures& m : r.m) {
    std::string at;
    if (r.m.size() > 1) at.append(" @").append(step_label(m.step));
    head += " α" + at + " | α·RMS(x)" + at + " | saturated" + at + " |";
    rule += "---|---|---|";
  }
  std::string out = head + "\n" + rule + "\n";
  for (size_t i = 0; i < r.init().dyts.size(); ++i) {
    out.append("| ").append(r.init().dyts[i].norm).append(" |");
    for (const LayerMeasures& m : r.m) {
      const DytMeasure& d = m.dyts[i];
      out.append(" ").append(num(d.alpha)).append(" | ").append(num(d.alpha * d.input_rms)).append(" | ");
      out.append(num(100 * d.saturated, 3)).append(" % |");
    }
    out += "\n";
  }
  return out;
}

// Ratio of the first to the last layer's fc2 gradient norm on one side ("enc" or "dec"); NaN without that side.
double first_last_ratio(const LayerMeasures& m, const std::string& side, int64_t depth) {
  const LayerMeasure *first = m.find(side + ".0"), *last = m.find(side + "." + std::to_string(depth - 1));
  return first && last ? first->fc2_grad_norm / last->fc2_grad_norm : std::nan("");
}

// The token cosine of a side's last layer; NaN without that side.
double last_token_cos(const LayerMeasures& m, const std::string& side, int64_t depth) {
  const LayerMeasure* last = m.find(side + "." + std::to_string(depth - 1));
  return last ? last->token_cos : std::nan("");
}

double mean_cos(const LayerMeasures& m, const std::string& side) {
  double s = 0;
  int n = 0;
  for (auto& l : m.layers)
    if (l.layer.rfind(side + ".", 0) == 0 && !std::isnan(l.cos_prev)) s += l.cos_prev, ++n;
  return n ? s / n : std::nan("");
}

// The largest attention logit of any attention of any layer; NaN when none was measured (each layer's -1) or one
// is NaN.
double max_logit(const LayerMeasures& m) {
  double top = -1;
  for (const LayerMeasure& l : m.layers)
    for (double v : {l.self_logit_max, l.cross_logit_max})
      top = std::isnan(v) || std::isnan(top) ? NAN : std::max(top, v);
  return top < 0 ? NAN : top;
}

std::string dat_name(const Run& r, int64_t step) {
  return r.topology + "_L" + std::to_string(r.depth) + (step == 0 ? "" : "_step" + std::to_string(step)) + ".dat";
}

// One data file per run and step: layer index (encoder 0..L-1, decoder L..2L-1) and the statistics.
void write_dat(const std::string& dir, const Run& r, const LayerMeasures& m, bool decoder_only) {
  std::ostringstream os;
  os << "# " << r.label << " " << layers_text(r.depth, decoder_only) << ", " << step_label(m.step)
     << "\n# i layer fc2 layer_grad cos rms max_abs param_min_norms_outer output_min_norms token_cos self_logit_max"
        " cross_logit_max removal_delta ffn_update self_attn_update self_attn_entropy\n";
  int64_t i = 0;
  for (const LayerMeasure& l : m.layers) {
    int64_t pmin = -1, omin = -1;
    for (const LayerPaths& x : r.init().paths.layers)
      if (x.scope == l.layer) pmin = x.param_min_norms_outer, omin = x.output_min_norms;
    if (r.topology == "resi_dual") omin = min_norms_of(r.init().paths, l.layer, "dual_add");
    if (l.layer == "dec.0") os << "\n";  // a blank line: gnuplot does not join the encoder to the decoder
    auto val = [](double v) {  // %g: gradients of 1e-7 must not print as 0.000000
      if (!std::isfinite(v)) return std::string("NaN");
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6g", v);
      return std::string(buf);
    };
    os << i++ << " " << l.layer << " " << val(l.fc2_grad_norm) << " " << val(l.layer_grad_norm) << " "
       << val(l.cos_prev) << " " << val(l.rms) << " " << val(l.max_abs) << " " << pmin << " " << omin << " "
       << val(l.token_cos) << " " << val(l.self_logit_max < 0 ? std::nan("") : l.self_logit_max) << " "
       << val(l.cross_logit_max < 0 ? std::nan("") : l.cross_logit_max) << " " << val(l.removal_delta) << " "
       << val(l.ffn_update) << " " << val(l.self_attn_update) << " " << val(l.self_attn_entropy) << "\n";
  }
  write_file_atomic(dir + "/" + dat_name(r, m.step), os.str());
}

// A PNG of column `col` vs layer for one depth: one colour per topology, one dash type per step (solid: init).
// The script names its files relative to `dir` and gnuplot runs there, so no path is parsed by gnuplot and the one
// the shell sees is quoted. Returns the PNG's file name ("" when gnuplot failed).
std::string plot(const std::string& dir, const std::string& stem, int64_t depth, bool decoder_only,
                 const std::vector<Run>& runs, const std::vector<int64_t>& steps, int col, const std::string& label,
                 bool logy) {
  const std::string png = stem + "_L" + std::to_string(depth) + ".png";
  std::string ylabel;  // inside gnuplot's single quotes, a quote is written twice
  for (char c : label) ylabel += c == '\'' ? std::string("''") : std::string(1, c);
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1000,480 noenhanced\nset output '" << png << "'\n"
     << "set title '" << ylabel << ", " << layers_text(depth, decoder_only) << "'\nset xlabel 'layer ("
     << (decoder_only ? "decoder 0.." + std::to_string(depth - 1)
                      : "encoder 0.." + std::to_string(depth - 1) + ", decoder " + std::to_string(depth) + ".." +
                            std::to_string(2 * depth - 1))
     << ")" << (steps.size() > 1 ? "; solid: init, dashed: trained" : "") << "'\nset ylabel '" << ylabel
     << "'\nset key outside right\nset grid\nset datafile missing 'NaN'\n";
  if (!decoder_only)  // between the encoder's layers and the decoder's
    gp << "set arrow from " << depth - 0.5 << ", graph 0 to " << depth - 0.5 << ", graph 1 nohead dt 2\n";
  if (logy) gp << "set logscale y\nset format y '%.0e'\n";
  gp << "plot ";
  bool first = true;
  int colour = 0;
  for (const Run& r : runs) {
    if (r.depth != depth) continue;
    ++colour;
    for (size_t si = 0; si < steps.size(); ++si) {
      gp << (first ? "" : ", ") << "'" << dat_name(r, steps[si]) << "' using 1:" << col
         << " with linespoints lc " << colour << " dt " << si + 1 << " title '" << r.label
         << (steps.size() > 1 ? " " : "") << (steps.size() > 1 ? step_label(steps[si]) : "") << "'";
      first = false;
    }
  }
  gp << "\n";
  const std::string script = stem + "_L" + std::to_string(depth) + ".gp";
  write_file_atomic(dir + "/" + script, gp.str());
  if (!run_gnuplot(dir, script, /*quiet=*/true)) {
    // the cairo terminal may be missing: fall back to the plain png terminal
    std::string text = gp.str();
    text.replace(text.find("pngcairo"), 8, "png");
    write_file_atomic(dir + "/" + script, text);
    if (!run_gnuplot(dir, script)) {
      std::filesystem::remove(dir + "/" + png);  // an empty file, e.g. when every value was 0 on a log scale
      return "";
    }
  }
  return png;
}

}  // namespace

void write_report(const ReportOptions& opt) {
  check(!opt.topologies.empty() && !opt.depths.empty(), "report", ": need at least one topology and one depth");
  for (int64_t depth : opt.depths) {  // every run's model (--dyt-alpha-at's names depend on the depth)
    ModelOptions m = opt.model;
    m.layers = depth;
    m.check_topologies(opt.topologies, opt.lr_scale_at);
  }
  // the task's own limits (analysis/measure.h task_batch), named by the options that set them
  check(opt.model.vocab > 4, "--vocab", " ", opt.model.vocab, ": the report's task draws its tokens from [3, vocab): "
        "it needs a vocab of at least 5");
  const int64_t min_len = opt.model.decoder_only ? 3 : 2;
  check(opt.model.len >= min_len, "--len", " ", opt.model.len, ": the report's task needs at least ", min_len,
        opt.model.decoder_only ? " tokens (x, the separator, y) with --decoder-only" : " tokens");
  namespace fs = std::filesystem;
  const fs::path out_parent = fs::path(opt.out).parent_path();
  if (!out_parent.empty()) fs::create_directories(out_parent);  // a missing folder fails here, not at the end
  std::vector<Run> runs;
  for (const std::string& topo : opt.topologies)
    for (int64_t depth : opt.depths) {
      ModelOptions mo = opt.model.with_topology(topo);
      mo.layers = depth;
      MeasureOptions meo;
      meo.seeds = opt.seeds;
      meo.n_batches = opt.n_batches;
      meo.batch = mo.batch;
      meo.len = mo.len;
      meo.graph = true;
      meo.device = skipgrad::Device::parse(mo.device);
      meo.task = opt.task;
      meo.steps = opt.steps;
      meo.lr = opt.lr;
      meo.warmup = opt.warmup;
      meo.lr_scale_at = opt.lr_scale_at;
      meo.removal = opt.removal;
      auto t0 = std::chrono::steady_clock::now();
      std::vector<LayerMeasures> m = measure_steps(mo.config(), meo);
      double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cerr << "report: " << topo << " L=" << depth << " loss";
      for (auto& x : m) {
        std::cerr << " " << num(x.loss, 4) << " (" << step_label(x.step) << ")";
        x.graph = Graph();  // the path stats are all the report needs
      }
      std::cerr << ", " << num(sec) << " s\n";
      for (const LayerMeasures& x : m)  // its cells would read "–" (not measured) without a word
        if (!std::isfinite(x.loss))
          std::cerr << "report: warning: " << topo << " L=" << depth << " diverged by " << step_label(x.step)
                    << " (loss " << x.loss << "): its measures there are NaN; try a lower --lr\n";
      runs.push_back({topo, mo.config().topology_summary(), depth, std::move(m), sec});
    }

  // Plots beside the report: docs/analysis_report.md -> docs/analysis_report_files/. A report to stdout or a pipe
  // has no folder to put them beside (/dev/stdout_files was made in /dev) and no earlier text to keep.
  const bool to_stream = is_stream_or_device("report", opt.out);
  if (to_stream && opt.plots) std::cerr << "report: " << opt.out << " is not a file: no plots (give -o a file path)\n";
  fs::path out(opt.out);
  const std::string dir_name = out.stem().string() + "_files";
  const std::string dir = (out.parent_path() / dir_name).string();
  std::map<int64_t, std::vector<std::pair<std::string, std::string>>> pngs;  // depth -> (caption, file)
  if (opt.plots && !to_stream && gnuplot_available()) {
    fs::create_directories(dir);
    for (const Run& r : runs)
      for (const LayerMeasures& m : r.m) write_dat(dir, r, m, opt.model.decoder_only);
    for (int64_t depth : opt.depths) {
      const std::tuple<const char*, int, std::string, bool, bool> what[] = {
          {"fc2_grad", 3, "grad norm of FFN W2", true, true},
          {"layer_grad", 4, "grad norm of all layer params", true, true},
          {"cosine", 5, "cos(x_{i-1}, x_i)", false, true},
          {"token_cosine", 10, "cos between a sentence's tokens", false, true},
          {"self_logit", 11, "largest self-attention logit |q.k|/sqrt(d_h)", true, true},
          {"ffn_update", 14, "relative update of the FFN |o|/|x| (log scale: a 0 is not drawn)", true, true},
          {"self_entropy", 16, "mean entropy of the self-attention (nats)", false, true},
          {"removal", 13, "loss without the layer minus the whole model's", false, true},
          {"min_norms", 9, "min norms after residual adds (ResiDual: x_d add)", false, false}};
      for (auto& [stem, col, label, logy, by_step] : what) {
        if (std::string(stem) == "removal" && !opt.removal) continue;  // not measured
        const std::vector<int64_t> at = by_step ? opt.steps : std::vector<int64_t>{0};
        std::string png = plot(dir, stem, depth, opt.model.decoder_only, runs, at, col, label, logy);
        const std::string caption = label + (at.size() > 1 ? " (solid: init, dashed: after training)" : "");
        if (!png.empty()) pngs[depth].push_back({caption, dir_name + "/" + png});
      }
    }
  }

  std::ostringstream md;
  // the settings every run shares (qk_norm)
  const nn::TransformerConfig mo0 = opt.model.with_topology(opt.topologies.front()).config();
  const bool trained = opt.steps.size() > 1 || opt.steps.front() > 0;
  md << kMarker << "\n\n## Generated tables\n\nCommand:\n\n```sh\n" << opt.command << "\n```\n\n"
     << "Model: d_model " << opt.model.d_model << ", " << opt.model.heads << " heads, d_ff " << opt.model.d_ff
     << ", vocab " << opt.model.vocab << ", batch " << opt.model.batch << "×" << opt.model.len << " tokens of the '"
     << opt.task << "' task (" << (opt.model.decoder_only ? "decoder-only models: one sequence x, 2, y each, the "
                                     "loss on y (analysis/measure.h)" : "lengths in [len/2, len], the rest padding")
     << "), dropout 0, label smoothing 0.1, " << opt.model.norm_text() << " norms"
     << (opt.model.qk_norm == "none" ? "" : ", ") << nn::head_norm_summary(mo0.qk_norm, mo0.qk_norm_kind)
     << ", " << mo0.positions_summary() << " positions. ";
  if (trained) {
    md << "Measured at";
    for (int64_t s : opt.steps) md << " " << step_label(s) << (s == opt.steps.back() ? "" : ",");
    md << " (training: Adam β (0.9, 0.98), inverse-sqrt schedule to lr " << opt.lr
       << nn::lr_scale_at_note(opt.lr_scale_at)
       << " after a linear warm-up of " << opt.warmup << " steps, fresh batches of the same task, no clipping). ";
  } else {
    md << "At initialization. ";
  }
  md << "Every number is the mean over " << opt.seeds.size() << " seeds × " << opt.n_batches
     << " batches (the same held-out batches at every step). Path counts are from the first batch's graph "
     << "(structural: they depend neither on the batch nor on the step). \"max logit\" is the largest "
     << "|q·k|/√d_h a non-pad query gives a key it sees, over every attention"
     << (opt.removal ? "; \"Δloss w/o layer\" is the loss without that one layer minus the whole model's "
                       "(eval mode, the measured batches)" : "")
     << ".\n\n"
     << "### Summary\n\n| topology | layers | step | loss | ‖∇W2‖ enc.0 ÷ enc.last | ‖∇W2‖ dec.0 ÷ dec.last | mean "
        "cos enc | mean cos dec | cos(tokens) enc.last | cos(tokens) dec.last | max logit | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Run& r : runs)
    for (const LayerMeasures& m : r.m)
      md << "| " << r.label << " | " << r.depth << " | " << m.step << " | "
         << (std::isfinite(m.loss) ? num(m.loss, 4) : "diverged") << " | "
         << num(first_last_ratio(m, "enc", r.depth)) << " | " << num(first_last_ratio(m, "dec", r.depth)) << " | "
         << num(mean_cos(m, "enc"), 4) << " | " << num(mean_cos(m, "dec"), 4) << " | "
         << num(last_token_cos(m, "enc", r.depth), 4) << " | " << num(last_token_cos(m, "dec", r.depth), 4)
         << " | " << num(max_logit(m)) << " | "
         << (&m == &r.m.front() ? num(r.seconds, 3) : "") << " |\n";
  md << "\n";
  for (int64_t depth : opt.depths) {
    if (pngs.count(depth)) {
      md << "### Plots, " << layers_text(depth, opt.model.decoder_only) << "\n\n";
      for (auto& [caption, file] : pngs[depth]) md << "![" << caption << "](" << file << ")\n\n";
    }
  }
  for (const Run& r : runs) {
    md << "### " << r.label << ", " << layers_text(r.depth, opt.model.decoder_only) << "\n\n" << run_table(r)
       << "\n";
    if (!r.init().dyts.empty())
      md << "Each DyT: its α, α·RMS of its input and the share of its inputs with |α x| ≥ atanh(0.99) ≈ 2.65, "
            "where tanh saturates (|tanh| ≥ 0.99) and passes back under 2 % of its gradient at 0.\n\n"
         << dyt_table(r) << "\n";
  }

  // keep the hand-written part above the marker
  std::string head;
  if (!to_stream && fs::exists(opt.out)) {
    std::string old = read_file(opt.out);
    size_t at = old.find(kMarker);
    if (at != std::string::npos) head = old.substr(0, at);
  }
  if (head.empty()) head = "# Gradient-path analysis report\n\n(Summary: write it above the marker line.)\n\n";
  write_file_atomic(opt.out, head + md.str());
  std::cerr << "report: wrote " << opt.out << (pngs.empty() ? " (no plots)" : "") << "\n";
}

}  // namespace graph_tool
