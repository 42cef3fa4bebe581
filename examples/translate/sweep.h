// Topology sweep: topologies × position encodings × depths × learning rates × seeds, each trained by translate::train
// under the same budget and options, one run folder each
// (<out>/<topology>_L<layers>_s<seed>[_<positions>][_lr<lr>]/). Writes a results
// table (results.md, results.csv) and loss curves from every run's metrics.jsonl (plots/: gnuplot data, scripts, and
// PNG/SVG when gnuplot is installed). A sweep resumes: a run whose result.json exists is read back instead of trained
// again (unless `force`), after checking that it was trained with the same options (its "settings").
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "trainer.h"

namespace translate {

struct SweepOptions {
  TrainOptions train;                   // shared by every run; topology, layers, seed and out_dir are set per run
  std::vector<std::string> topologies;  // names from nn::topology_names()
  // position encodings (nn::PositionEncoding); empty: train.model.positions alone
  std::vector<skipgrad::nn::PositionEncoding> positions;
  std::vector<int64_t> depths;          // layers per side (encoder = decoder)
  // Peak learning rates, each a run of its own (--lrs; the run folders and labels then name theirs); empty:
  // train.lr alone, and the names and labels of sweeps before this axis.
  std::vector<double> lrs;
  std::vector<uint64_t> seeds;
  std::string out_dir = "runs/sweep";
  bool force = false;                   // train again even when a run's result.json exists
  std::string command;                  // the command line, recorded in results.md
};

// One row of the table: a finished run.
struct SweepRow {
  std::string topology;
  int64_t layers = 0;
  uint64_t seed = 0;
  int64_t steps = 0;
  double test_bleu = 0, best_valid_loss = 0, final_train_loss = 0, minutes = 0;  // minutes: training time
  bool diverged = false;
  std::string positions = "sinusoidal";  // the run's position encoding
  // The options the run was trained with (run_settings), as JSON text; "" in a result.json written before sweeps
  // recorded them.
  std::string settings;
  double lr = 0;  // the run's learning rate when the sweep has an lr axis (SweepOptions::lrs); 0: no such axis
  // Not in result.json, computed from the run folders (add_bootstrap_p_values): the paired bootstrap p-value of this
  // run's test BLEU against the baseline's run of the same positions, depth, lr and seed; NaN where there is none.
  double p_value = std::numeric_limits<double>::quiet_NaN();
  std::string baseline{};  // that run's label, "" when p_value is NaN
};

// Fills p_value and baseline for every row that has no p-value yet and whose run and baseline run
// (`baseline_topology`, the same positions, depth, lr and seed) left their test hypotheses in <runs_dir>/<run>/
// (test.hyp.txt and test.ref.txt, which train writes; runs of older binaries have none): a sweep calls it after every
// run, and each pair is compared once. The baseline's own rows keep NaN, and so does a row whose files cannot be
// compared (a warning on stderr names the run and why).
void add_bootstrap_p_values(std::vector<SweepRow>& rows, const std::string& runs_dir,
                            const std::string& baseline_topology);

// "<topology>_L<layers>_s<seed>", then "_<positions>" unless sinusoidal (the names of sweeps before the positions
// axis), then "_lr<lr>" with an lr axis (lr > 0; "_lr0.001"): the run's folder under the sweep's out_dir.
std::string sweep_run_name(const std::string& topology, int64_t layers, uint64_t seed,
                           const std::string& positions = "sinusoidal", double lr = 0);
std::string sweep_run_name(const SweepRow& row);
// The row's topology with its own options away from their defaults, from its settings ("b2t (b2t_rescale false)":
// TransformerConfig::topology_summary), for results.md and the plots; the plain name when the row has no settings.
// With an lr axis, its learning rate follows ("post_ln lr 0.001"), so that summaries, p-values and plots keep the
// learning rates apart.
std::string sweep_row_label(const SweepRow& row);

// What a run's result depends on besides its topology, depth, positions and seed, as a flat JSON object: the model
// config ("model.d_model", ...), the corpus, the optimiser, the budget and the evaluation (its device as
// Device::str(): "cuda" is "cuda:0"). Where the data lives, logging and checkpointing are left out, and so are the
// periodic evaluations' options when there are none (eval_every 0).
std::string run_settings(const TrainOptions& t);
// The settings that differ, "lr 0.002 vs 0.001, model.positions \"rope\" vs \"sinusoidal\"" (a's value first); "" if
// none. A setting one side lacks (an older result, or evaluation options without evaluations) reads as its default.
std::string settings_differences(const std::string& a, const std::string& b);

// <run>/result.json: the row as JSON (non-finite numbers as null). read_sweep_row returns false when absent.
void write_sweep_row(const std::string& path, const SweepRow& row);
bool read_sweep_row(const std::string& path, SweepRow* row);

// The table as Markdown (a header paragraph `preamble`, then one row per run, with a last column "p vs <baseline>"
// when a row has a p_value, then, when a topology, encoding and depth has runs of more than one seed, the "Across
// seeds" table of summarize_sweep) and as CSV (a header line, then one line per run, in the same column order, and
// last columns `label`: sweep_row_label, quoted when it holds a comma, and `p_vs_baseline`, nan when none).
void write_results_markdown(const std::string& path, const std::vector<SweepRow>& rows, const std::string& preamble);
void write_results_csv(const std::string& path, const std::vector<SweepRow>& rows);

// Runs of one topology (with its own options), position encoding and depth over seeds: a row of results.md's
// "Across seeds" table and of summary.csv. Means and standard deviations are over the runs whose value is a number
// (n of them), diverged runs included: a seed that diverges is an outcome of the topology, and `diverged` counts them.
struct SeedStats {
  int64_t n = 0;  // values that are numbers (NaN ones, e.g. a run that never evaluated, are left out)
  double mean = 0, sd = 0, min = 0, max = 0;  // sd: the sample standard deviation (n - 1), NaN for n < 2
};
struct SweepSummary {
  std::string label;  // sweep_row_label: "b2t (b2t_rescale false)"
  std::string positions;
  int64_t layers = 0;
  int64_t runs = 0, diverged = 0;
  int64_t min_steps = 0, max_steps = 0;
  SeedStats test_bleu, best_valid_loss, final_train_loss;
};
// One summary per (label, positions, layers), in the order the rows first show them.
std::vector<SweepSummary> summarize_sweep(const std::vector<SweepRow>& rows);
SeedStats seed_stats(const std::vector<double>& values);
// One CSV field (RFC 4180): quoted, its quotes doubled, when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s);
// A header line, then one line per summary: label (csv_field), positions, layers, runs, diverged, min_steps,
// max_steps, then n, mean, sd, min, max of test_bleu, best_valid_loss and final_train_loss.
void write_summary_csv(const std::string& path, const std::vector<SweepSummary>& summaries);

// Loss curves of one run, read from its metrics.jsonl (lines that are not JSON objects are skipped).
struct RunCurves {
  std::vector<int64_t> step;               // training steps
  std::vector<double> loss;                // training loss per step
  std::vector<int64_t> valid_step;         // evaluations
  std::vector<double> valid_loss, valid_bleu;
};
RunCurves read_metrics(const std::string& metrics_jsonl);

// For every row, <plot_dir>/<run>.train.dat ("step loss ema", ema = 0.98-smoothed loss as the progress line) and
// <run>.valid.dat ("step valid_loss valid_bleu"), read from <runs_dir>/<run>/metrics.jsonl; then per depth L,
// train_loss_L<L>.gp and valid_loss_L<L>.gp: gnuplot scripts drawing one line per run into .png and .svg when run
// from plot_dir. Returns the scripts' file names.
std::vector<std::string> write_plot_files(const std::string& plot_dir, const std::string& runs_dir,
                                          const std::vector<SweepRow>& rows);
// Runs gnuplot on each script in plot_dir; false (and nothing run) when gnuplot is not installed.
bool render_plots(const std::string& plot_dir, const std::vector<std::string>& scripts);

// Trains every run that has no result yet, then writes results.md, results.csv, summary.csv and plots/ under out_dir.
// Returns the rows in grid order (topology-major, then positions, depth, lr and seed). A result.json whose settings
// differ from this sweep's (another --lr, --positions ...) is an error naming them, not a row.
std::vector<SweepRow> run_sweep(const SweepOptions& opts);

}  // namespace translate
