// The analysis report of skipgrad-graph: for each topology and depth, the structural path counts of the graph
// (analysis/paths.h) and the measured per-layer statistics (analysis/measure.h), as Markdown tables and, when
// gnuplot is installed, PNG plots beside the report.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "analysis/measure.h"

namespace graph_tool {

struct ModelOptions {
  std::string topology = "pre_ln";
  int64_t layers = 2;  // per side
  bool decoder_only = false;  // a decoder-only language model of `layers` layers (enc_layers 0)
  int64_t d_model = 64, heads = 4, d_ff = 256, vocab = 100;
  int64_t batch = 8, len = 16;
  uint64_t seed = 1;
  std::string device = "cpu";  // cpu | cuda | cuda:N
  std::string autocast = "off";  // off | bf16: the recorded forward in bf16 mixed precision (dump and paths)
  std::string norm = "layer_norm";  // layer_norm | rms_norm | dyt: every norm a topology places (TransformerConfig)
  double dyt_alpha = 0.5;           // DyT's α0 (norm dyt)
  std::string dyt_alpha_at;         // "PATTERN=ALPHA0,...": other α0 by DyT name (TransformerConfig::dyt_alpha_at)
  std::string qk_norm = "none";  // none | qk | qkv: per-head norms inside attention (TransformerConfig::qk_norm)
  std::string qk_norm_kind = "rms_norm";  // rms_norm | layer_norm | l2
  std::string positions = "sinusoidal";  // sinusoidal | learned | rope | alibi | t5 | none (TransformerConfig::…)
  double rope_theta = 10000;              // RoPE's base (positions rope)
  int64_t rope_dims = 0;                  // RoPE's rotated dims per head (0: all)
  int64_t relative_buckets = 32, relative_max_distance = 128;  // T5's (positions t5)
  // The options that belong to one topology (nn::topology_options(): --b2t-rescale, --layer-scale-init), as the
  // command line sets them; config() starts from this config, the other fields its defaults.
  skipgrad::nn::TransformerConfig own;
  skipgrad::nn::TransformerConfig config() const;  // dropout 0: the statistics at initialization
  // These options for topology t, another topology's own options back to their defaults (as compare's runs:
  // TransformerConfig::with_topology).
  ModelOptions with_topology(const std::string& t) const;
  std::string layers_text() const;  // graph_tool::layers_text(layers, decoder_only)
  std::string norm_text() const;    // "layer_norm", "dyt (alpha0 0.5)": the norm kind in headings
  void set_norm(skipgrad::nn::TransformerConfig& c) const;  // norm, dyt_alpha and dyt_alpha_at into c
  // config() of each topology in turn (with_topology), so a setting one of them refuses fails before any of them
  // runs, --dyt-alpha-at's and --lr-scale-at's patterns too (nn::check_name_patterns); a topology's own option set
  // without that topology listed is refused too.
  void check_topologies(const std::vector<std::string>& topologies,
                        const skipgrad::nn::PatternValues& lr_scale_at = {}) const;
};

// "6+6 layers", or "decoder-only, 6 layers": a model's depth in headings
std::string layers_text(int64_t layers, bool decoder_only);

struct ReportOptions {
  ModelOptions model;  // topology and layers are overridden by the lists below
  std::vector<std::string> topologies;
  std::vector<int64_t> depths;
  std::vector<uint64_t> seeds = {1, 2, 3};
  int64_t n_batches = 2;
  // Measure at these training steps (0: initialization); between them Adam trains on `task` (analysis/measure.h).
  std::vector<int64_t> steps = {0};
  std::string task = "reverse";  // random | copy | reverse
  double lr = 1e-3;
  int64_t warmup = 20;
  skipgrad::nn::PatternValues lr_scale_at;  // --lr-scale-at: Adam's rate by parameter name (nn::lr_scale_groups)
  std::string out = "docs/analysis_report.md";
  std::string command;  // the command line, quoted in the report
  bool plots = true;    // PNGs via gnuplot when it is on the PATH
  bool removal = false; // also each layer's loss without it (MeasureOptions::removal): one forward per layer
};

// Writes the report to opt.out. Text above the line "<!-- generated below -->" of an existing report is kept
// (the hand-written summary), everything below it is regenerated. Progress goes to stderr.
void write_report(const ReportOptions& opt);


}  // namespace graph_tool
