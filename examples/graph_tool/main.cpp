// skipgrad-graph: the graph of a Transformer and the gradient paths on it (docs/graph.md).
//   skipgrad-graph dump --topology resi_dual --layers 2 --format svg --depth 2 -o model.svg
//   skipgrad-graph dump --topology post_ln --layers 6 --format json -o graph.json
//   skipgrad-graph paths --topology pre_ln --layers 6
//   skipgrad-graph report --topologies post_ln,pre_ln,resi_dual,hybrid_norm,deep_norm --depths 6,12
//                         --steps 0,100 --task reverse -o docs/analysis_report.md
//   skipgrad-graph cost --topologies post_ln,pre_ln,resi_dual --layers 6 --device cuda --trace-dir prof
// dump and paths build the model at initialization with random tokens (tiny by default, so a dump takes a moment);
// the graph is recorded by one forward, label-smoothed loss and backward, so the dump carries gradient norms.
// report measures at initialization and, with --steps, after training with Adam on a synthetic task.
#include <CLI/CLI.hpp>

#include <filesystem>

#include <iostream>

#include "analysis/measure.h"
#include "autograd/autocast.h"
#include "backends/threads.h"
#include "nn/optim.h"
#include "tensor/random.h"
#include "cost.h"
#include "examples/cli_checks.h"
#include "examples/cli_lists.h"
#include "report.h"

using namespace skipgrad;
using graph_tool::ModelOptions;

namespace {

// The model sizes are bounded: the graph tool studies small models, and a mistyped 10^20 should be an error, not
// a wrapped number or an hour of building layers until memory runs out.
void add_model_options(CLI::App* cmd, ModelOptions& m, bool topology) {
  using cli_checks::in_range;
  if (topology) {
    cmd->add_option("--topology", m.topology, "post_ln | pre_ln | resi_dual | hybrid_norm | deep_norm | ...")
        ->capture_default_str();
    cmd->add_option("--layers", m.layers, "layers per side (encoder and decoder; the decoder's with --decoder-only)")
        ->check(in_range(1, 1000))->capture_default_str();
  }
  if (topology)  // dump and paths; cost adds its own
    cmd->add_flag("--decoder-only", m.decoder_only, "a decoder-only language model of --layers layers (no encoder)");
  cmd->add_option("--d-model", m.d_model)->check(in_range(1, 1 << 16))->capture_default_str();
  cmd->add_option("--heads", m.heads)->check(in_range(1, 1 << 12))->capture_default_str();
  cmd->add_option("--ffn", m.d_ff, "FFN inner size")->check(in_range(1, 1 << 18))->capture_default_str();
  cmd->add_option("--vocab", m.vocab)->check(in_range(2, 1 << 24))->capture_default_str();
  cmd->add_option("--batch", m.batch, "sentences per batch")->check(in_range(1, 1 << 16))->capture_default_str();
  cmd->add_option("--len", m.len, "tokens per sentence (padded)")->check(in_range(1, 1 << 16))->capture_default_str();
  cmd->add_option("--seed", m.seed)->check(cli_checks::seed_range())->capture_default_str();
  cmd->add_option("--norm", m.norm, "layer_norm | rms_norm | dyt (DyT, tanh(alpha x) in every norm's place)")
      ->capture_default_str();
  cmd->add_option("--dyt-alpha", m.dyt_alpha, "with --norm dyt: the init of each DyT's learned alpha")
      ->capture_default_str();
  cmd->add_option("--dyt-alpha-at", m.dyt_alpha_at, cli_checks::kDytAlphaAtHelp);
  cmd->add_option("--qk-norm", m.qk_norm, "none | qk | qkv: per-head norms of q, k (and v) inside attention")
      ->capture_default_str();
  cmd->add_option("--qk-norm-kind", m.qk_norm_kind, "rms_norm | layer_norm | l2")->capture_default_str();
  cmd->add_option("--positions", m.positions,
                  "sinusoidal | learned | rope (rotary q, k in every self-attention) | alibi (distance biases) | t5 "
                  "(learned relative biases) | none")
      ->capture_default_str();
  cmd->add_option("--rope-theta", m.rope_theta, "RoPE's base, with --positions rope")->capture_default_str();
  cmd->add_option("--rope-dims", m.rope_dims, "with --positions rope: rotate each head's first N dims (0: all)")
      ->capture_default_str();
  cmd->add_option("--relative-buckets", m.relative_buckets, "T5's buckets, with --positions t5")
      ->capture_default_str();
  cmd->add_option("--relative-max-distance", m.relative_max_distance,
                  "with --positions t5: the distance from which T5's bias is the same")
      ->capture_default_str();
  cmd->add_option("--b2t-rescale", m.own.b2t_rescale,
                  "b2t: its layers' weights x L^-1/2 at init, as its authors' code (false: Post-LN's init)")
      ->capture_default_str();
  cmd->add_option("--layer-scale-init", m.own.layer_scale_init,
                  "layer_scale: its lambdas' initial value (-1: CaiT's 0.1 / 1e-5 / 1e-6 by depth)")
      ->capture_default_str();
  cmd->add_option("--normformer-scale-resids", m.own.normformer_scale_resids,
                  "normformer: a learned per-channel scale on each FFN's skip (fairseq's --scale-resids)")
      ->capture_default_str();
  cmd->add_option("--normformer-fairseq-head-scale", m.own.normformer_fairseq_head_scale,
                  "normformer: HeadScale as fairseq's code (after out_proj, channels transposed), not the paper's")
      ->capture_default_str();
  cmd->add_option("--device", m.device, "cpu | cuda | cuda:N: where the model runs (the dump is the same)")
      ->capture_default_str();
}

// One forward + loss + backward on a random batch, keeping the graph; with --autocast bf16 the forward runs in an
// AutocastBF16 scope, so the graph shows the casts and the bf16 nodes (docs/mixed_precision.md).
LayerMeasures record(const ModelOptions& mo) {
  const bool autocast_bf16 = parse_autocast(mo.autocast);  // a bad value fails before the model is built
  nn::TransformerConfig cfg = mo.config();
  manual_seed(mo.seed);
  nn::Transformer model(cfg);
  model.to(Device::parse(mo.device));
  const MeasureBatch b = random_batch(cfg, mo.batch, mo.len, mo.seed).to(model.device());
  // a topology's data-dependent init (Admin's ω profiling pass), as training runs it: else Admin is Post-LN here
  model.init_from_batch(b.src, b.tgt_in);
  AutocastBF16 autocast(autocast_bf16);
  return measure_batch(model, b, 0.1, /*graph=*/true);
}

void add_autocast_option(CLI::App* cmd, ModelOptions& m) {
  cmd->add_option("--autocast", m.autocast, "off | bf16: record the forward in bf16 mixed precision")
      ->capture_default_str();
}

std::string joined_args(int argc, char** argv) {
  std::string s = "skipgrad-graph";
  for (int i = 1; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

}  // namespace

static int run_command(int argc, char** argv) {
  ensure_passive_omp(argv);  // backends/threads.h
  CLI::App app{"skipgrad-graph: dump a Transformer's graph and analyse its gradient paths"};
  app.require_subcommand(1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // as skipgrad-translate's

  ModelOptions dump_model, paths_model;
  dump_model.d_model = 16, dump_model.heads = 2, dump_model.d_ff = 32, dump_model.vocab = 20;
  dump_model.batch = 2, dump_model.len = 5;
  auto* dump_cmd = app.add_subcommand("dump", "record one forward/backward and write its graph");
  add_model_options(dump_cmd, dump_model, true);
  std::string format = "dot", out, filter, rankdir = "TB";
  int depth = -1;
  bool no_leaves = false;
  int max_leaf_fanout = DotOptions{}.max_leaf_fanout;
  dump_cmd->add_option("--format", format, "dot | json | text | svg | png")->capture_default_str();
  dump_cmd->add_option("--depth", depth, "collapse scopes deeper than N components (1: a box per layer); -1: all")
      ->check(cli_checks::in_range(-1, 1000))->capture_default_str();
  dump_cmd->add_option("--filter", filter, "keep one scope (e.g. enc.1 or dec.0.ffn) and its neighbours");
  dump_cmd->add_option("--rankdir", rankdir, "TB | BT | LR | RL")->capture_default_str();
  dump_cmd->add_flag("--no-leaves", no_leaves, "hide parameters and inputs");
  dump_cmd->add_option("--max-leaf-fanout", max_leaf_fanout,
                       "with --depth: an input read in more items than this goes into a note; -1: draw all")
      ->check(cli_checks::at_least(-1))->capture_default_str();
  dump_cmd->add_option("-o,--output", out, "output file")->required();
  add_autocast_option(dump_cmd, dump_model);

  auto* paths_cmd = app.add_subcommand("paths", "print the gradient-path tables (Markdown) of a model");
  paths_model.d_model = 16, paths_model.heads = 2, paths_model.d_ff = 32, paths_model.vocab = 20;
  paths_model.batch = 2, paths_model.len = 5;
  add_model_options(paths_cmd, paths_model, true);
  add_autocast_option(paths_cmd, paths_model);

  auto* report_cmd = app.add_subcommand("report", "measure several topologies and depths, write a Markdown report");
  graph_tool::ReportOptions ro;
  std::string topologies = "post_ln,pre_ln,resi_dual,hybrid_norm,deep_norm", depths = "6,12", seeds = "1,2,3";
  report_cmd->add_option("--topologies", topologies, "comma-separated names")->capture_default_str();
  report_cmd->add_option("--depths", depths, "comma-separated layers per side")->capture_default_str();
  report_cmd->add_option("--seeds", seeds, "comma-separated init seeds")->capture_default_str();
  report_cmd->add_option("--batches", ro.n_batches, "measured batches per seed (the same at every step)")
      ->capture_default_str();
  std::string steps = "0";
  report_cmd->add_option("--steps", steps, "comma-separated training steps to measure at (0: initialization)")
      ->capture_default_str();
  report_cmd->add_option("--task", ro.task, "batches measured and trained on: random | copy | reverse")
      ->capture_default_str();
  report_cmd->add_option("--lr", ro.lr, "Adam's peak learning rate (inverse-sqrt schedule)")->capture_default_str();
  report_cmd->add_option("--warmup", ro.warmup, "linear warm-up steps")->capture_default_str();
  std::string lr_scale_at;
  report_cmd->add_option("--lr-scale-at", lr_scale_at, cli_checks::kLrScaleAtHelp);
  report_cmd->add_flag("!--no-plots", ro.plots, "tables only (no gnuplot PNGs)");
  report_cmd->add_flag("--removal", ro.removal, "also the loss without each layer in turn (layer removal)");
  report_cmd->add_option("-o,--output", ro.out)->capture_default_str();
  add_model_options(report_cmd, ro.model, false);
  report_cmd->add_flag("--decoder-only", ro.model.decoder_only, "decoder-only language models of --depths layers");

  auto* cost_cmd = app.add_subcommand("cost", "profile a training step of each topology: time, memory, norms' share");
  graph_tool::CostOptions co;
  std::string cost_topologies = "post_ln,pre_ln,resi_dual,hybrid_norm,deep_norm";
  cost_cmd->add_option("--topologies", cost_topologies, "comma-separated names")->capture_default_str();
  cost_cmd->add_option("--layers", co.model.layers, "layers per side (encoder and decoder)")
      ->check(cli_checks::in_range(1, 1000))->capture_default_str();
  cost_cmd->add_option("--warmup", co.warmup, "untimed steps before the profiled ones")
      ->check(cli_checks::at_least(0))->capture_default_str();
  cost_cmd->add_option("--steps", co.steps, "profiled steps; the median by device time is reported")
      ->check(cli_checks::at_least(1))->capture_default_str();
  cost_cmd->add_option("--trace-dir", co.trace_dir, "write each topology's whole profile and Chrome trace here");
  add_model_options(cost_cmd, co.model, false);
  cost_cmd->add_flag("--decoder-only", co.model.decoder_only, "decoder-only language models of --layers layers");
  add_autocast_option(cost_cmd, co.model);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints the help, or the message naming the option
    return rc == 0 ? 0 : 2;      // a bad option exits 2, as every other error does (and as skipgrad-translate)
  }
  try {
    if (*dump_cmd) {
      if (format == "json" || format == "text")  // the whole graph: the drawing options would do nothing
        for (const char* o : {"--depth", "--filter", "--rankdir", "--no-leaves", "--max-leaf-fanout"})
          check(dump_cmd->count(o) == 0, "dump", ": ", o,
                " draws the DOT picture (--format dot, svg or png); --format ", format, " writes the whole graph");
      LayerMeasures m = record(dump_model);
      DotOptions opt;
      opt.max_depth = depth;
      opt.filter = filter;
      opt.leaves = !no_leaves;
      opt.rankdir = rankdir;
      opt.max_leaf_fanout = max_leaf_fanout;
      if (format == "json") {
        m.graph.save_json(out);
      } else if (format == "text") {
        write_file_atomic(out, m.graph.to_text());
      } else if (format == "dot") {
        m.graph.save_dot(out, opt);
      } else if (format == "svg" || format == "png") {
        const std::string ext = "." + format;
        check(out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0, "dump",
              ": --format ", format, ": -o '", out, "' should end in ", ext);
        check(graphviz_available(), "dump", ": --format ", format, " needs Graphviz `dot` on the PATH");
        if (depth < 0 && filter.empty() && m.graph.nodes.size() > 1500)  // a 24+24-layer model: > 5 minutes
          std::fprintf(stderr, "dump: %zu nodes uncollapsed; Graphviz may take many minutes (--depth 1 or --filter "
                       "enc.3 draw a part)\n", m.graph.nodes.size());
        // the DOT text goes to a temporary of this process (never a file of the user's), removed either way
        const std::string dot_path = out + ".tmp." + std::to_string(::getpid()) + ".dot";
        try {
          m.graph.save_dot(dot_path, opt);
          render_dot(dot_path, out);
        } catch (...) {
          std::remove(dot_path.c_str());
          throw;
        }
        std::remove(dot_path.c_str());
      } else {
        throw Error("dump: unknown --format '" + format + "' (dot, json, text, svg or png)");
      }
      std::cerr << "wrote " << out << " (" << m.graph.nodes.size() << " nodes, loss " << m.loss << ")\n";
    } else if (*paths_cmd) {
      LayerMeasures m = record(paths_model);
      std::cout << "# Gradient paths: " << paths_model.topology << ", " << paths_model.layers_text()
                << (paths_model.norm == "layer_norm" ? "" : ", " + paths_model.norm_text() + " norms") << "\n\n"
                << paths_markdown(m.graph, m.paths);
    } else if (*report_cmd) {
      ro.topologies = cli_lists::split_names(topologies, "--topologies");
      ro.depths = cli_lists::split_numbers<int64_t>(depths, "--depths", 1);
      ro.seeds = cli_lists::split_numbers<uint64_t>(seeds, "--seeds", 0);
      ro.steps = cli_lists::split_numbers<int64_t>(steps, "--steps", 0);
      ro.lr_scale_at = nn::parse_lr_scale_at(lr_scale_at);
      ro.command = joined_args(argc, argv);
      graph_tool::write_report(ro);
    } else if (*cost_cmd) {
      std::vector<graph_tool::TopologyCost> rows;
      const std::vector<std::string> names = cli_lists::split_names(cost_topologies, "--topologies");
      co.model.check_topologies(names);
      if (!co.trace_dir.empty()) {  // before the first topology is measured, not after
        std::error_code ec;
        std::filesystem::create_directories(co.trace_dir, ec);
        check(!ec && std::filesystem::is_directory(co.trace_dir), "cost", ": --trace-dir '", co.trace_dir,
              "' is not a folder that can be made: ", ec ? ec.message() : "a file is there");
      }
      for (const std::string& t : names) {
        std::cerr << "cost: " << t << "\n";
        rows.push_back(graph_tool::measure_cost(co, t));
      }
      std::cout << graph_tool::cost_markdown(co, rows);
    }
  } catch (const std::exception& e) {
    std::cerr << "skipgrad-graph: " << e.what() << "\n";
    return 2;
  }
  return 0;
}

int main(int argc, char** argv) {
  return cli_checks::with_stdout_checked("skipgrad-graph", run_command(argc, argv));
}
