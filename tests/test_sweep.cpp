// The translation example's `sweep` and `eval` (examples/translate/sweep.h, eval.h): the results table and CSV,
// result files, plot data from metrics.jsonl, a tiny end-to-end sweep that skips finished runs when called again
// (and refuses those of other options), a positions axis, and a deterministic checkpoint evaluation.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "data.h"
#include "eval.h"
#include "sweep.h"
#include "test_util.h"
#include "translate_test_util.h"

using namespace sgtest;
using namespace translate;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("skipgrad_sweep_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string text_of(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A tiny number-words corpus and the options of a run small enough for a unit test (1 layer a side, d=16).
TrainOptions tiny_options(const fs::path& root) {
  TrainOptions o = tiny_train_options(write_tiny_corpus(root / "corpus", 300));
  o.max_steps = 6;
  o.eval_every = 3;
  o.eval_sentences = 4;
  o.test_sentences = 6;
  o.beam = 2;
  return o;
}

// A sweep of Post-LN and Pre-LN, 1+1 layers, seed 1, of tiny_options, into root/sweep.
SweepOptions tiny_sweep(const fs::path& root) {
  SweepOptions s;
  s.train = tiny_options(root);
  s.topologies = {"post_ln", "pre_ln"};
  s.depths = {1};
  s.seeds = {1};
  s.out_dir = (root / "sweep").string();
  return s;
}

}  // namespace

TEST_SUITE("sweep") {
  TEST_CASE("results table: one Markdown and one CSV row per run, in order, NaN and divergence shown") {
    const fs::path dir = scratch("table");
    const double nan = std::numeric_limits<double>::quiet_NaN();
    std::vector<SweepRow> rows = {{"post_ln", 3, 1, 1200, 97.512, 1.23456, 1.5, 2.95, false, "sinusoidal", ""},
                                  {"deep_norm", 6, 2, 40, 0.0, nan, nan, 0.25, true, "alibi", ""}};
    write_results_markdown((dir / "r.md").string(), rows, "Corpus `numbers`.");
    write_results_csv((dir / "r.csv").string(), rows);
    auto md = lines_of(dir / "r.md");
    REQUIRE(md.size() == 6);
    CHECK(md[0] == "Corpus `numbers`.");
    CHECK(md[2] == "| topology | positions | layers | seed | steps | test BLEU | best valid loss | final train loss | "
                   "diverged? | minutes |");
    CHECK(md[4] == "| post_ln | sinusoidal | 3+3 | 1 | 1200 | 97.51 | 1.2346 | 1.5000 | no | 3.0 |");
    CHECK(md[5] == "| deep_norm | alibi | 6+6 | 2 | 40 | 0.00 | nan | nan | yes | 0.2 |");
    auto csv = lines_of(dir / "r.csv");
    REQUIRE(csv.size() == 3);
    CHECK(csv[0] == "topology,positions,layers,seed,steps,test_bleu,best_valid_loss,final_train_loss,diverged,minutes,"
                    "label,p_vs_baseline");
    CHECK(csv[1] == "post_ln,sinusoidal,3,1,1200,97.5120,1.234560,1.500000,false,2.950,post_ln,nan");
    CHECK(csv[2] == "deep_norm,alibi,6,2,40,0.0000,nan,nan,true,0.250,deep_norm,nan");
    // a row whose settings give its topology an option of its own: the Markdown names it, the CSV keeps the name in
    // its first column and gives the label in its last
    TrainOptions t;
    t.model = tiny_transformer("b2t");
    t.model.b2t_rescale = false;
    rows = {{"b2t", 3, 1, 10, 1.0, 2.0, 2.0, 0.1, false, "sinusoidal", run_settings(t)}};
    CHECK(sweep_row_label(rows[0]) == "b2t (b2t_rescale false)");
    write_results_markdown((dir / "r.md").string(), rows, "");
    write_results_csv((dir / "r.csv").string(), rows);
    CHECK(lines_of(dir / "r.md")[2].rfind("| b2t (b2t_rescale false) | sinusoidal | 3+3 |", 0) == 0);
    CHECK(lines_of(dir / "r.csv")[1] ==
          "b2t,sinusoidal,3,1,10,1.0000,2.000000,2.000000,false,0.100,b2t (b2t_rescale false),nan");
    t.model.b2t_rescale = true;
    CHECK(sweep_row_label({"b2t", 3, 1, 10, 1.0, 2.0, 2.0, 0.1, false, "sinusoidal", run_settings(t)}) == "b2t");
    CHECK(csv_field("a (x 1, y 2)") == "\"a (x 1, y 2)\"");
    CHECK(csv_field("say \"hi\", twice") == "\"say \"\"hi\"\", twice\"");
    CHECK(csv_field("plain (x 1)") == "plain (x 1)");
  }

  TEST_CASE("across seeds: mean, sample sd and range per topology, encoding and depth; NaN out; diverged counted") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const SeedStats st = seed_stats({1, 2, 3, nan});
    CHECK(st.n == 3);
    CHECK(st.mean == doctest::Approx(2).epsilon(1e-15));
    CHECK(st.sd == doctest::Approx(1).epsilon(1e-15));  // sqrt(((1-2)² + 0 + (3-2)²) / 2)
    CHECK(st.min == 1);
    CHECK(st.max == 3);
    const SeedStats one = seed_stats({5});
    CHECK((one.n == 1 && one.mean == 5 && std::isnan(one.sd) && one.min == 5 && one.max == 5));
    const SeedStats none = seed_stats({nan, nan});
    CHECK((none.n == 0 && std::isnan(none.mean) && std::isnan(none.sd) && std::isnan(none.min)));
    CHECK(seed_stats({}).n == 0);

    // post_ln 3+3 over three seeds (one diverged, one never evaluated), pre_ln 3+3 and post_ln 6+6 with one each
    const std::vector<SweepRow> rows = {{"post_ln", 3, 1, 1200, 80.0, 1.0, 1.1, 3.0, false, "sinusoidal", ""},
                                        {"pre_ln", 3, 1, 1200, 90.0, 0.9, 1.0, 3.0, false, "sinusoidal", ""},
                                        {"post_ln", 3, 2, 100, 40.0, nan, 9.0, 0.5, true, "sinusoidal", ""},
                                        {"post_ln", 6, 1, 1200, 70.0, 1.2, 1.3, 3.0, false, "sinusoidal", ""},
                                        {"post_ln", 3, 3, 1150, 60.0, 1.4, 1.2, 3.0, false, "sinusoidal", ""}};
    const std::vector<SweepSummary> s = summarize_sweep(rows);
    REQUIRE(s.size() == 3);
    CHECK((s[0].label == "post_ln" && s[0].layers == 3 && s[1].label == "pre_ln" && s[2].layers == 6));
    CHECK((s[0].runs == 3 && s[0].diverged == 1 && s[0].min_steps == 100 && s[0].max_steps == 1200));
    CHECK(s[0].test_bleu.mean == doctest::Approx(60).epsilon(1e-15));
    CHECK(s[0].test_bleu.sd == doctest::Approx(20).epsilon(1e-15));
    CHECK((s[0].best_valid_loss.n == 2 && s[0].best_valid_loss.min == 1.0 && s[0].best_valid_loss.max == 1.4));
    CHECK(s[0].best_valid_loss.mean == doctest::Approx(1.2).epsilon(1e-15));
    CHECK(s[0].final_train_loss.n == 3);
    CHECK((s[1].runs == 1 && s[1].diverged == 0 && s[1].test_bleu.n == 1 && std::isnan(s[1].test_bleu.sd)));

    const fs::path dir = scratch("summary");
    write_results_markdown((dir / "r.md").string(), rows, "");
    const auto md = lines_of(dir / "r.md");
    REQUIRE(md.size() == 17);  // (no preamble) header, rule, 5 rows; blank, heading, blank, text, blank; 2 + 3 rows
    CHECK(md[8] == "## Across seeds");
    CHECK(md[12] == "| topology | positions | layers | runs | diverged | steps | test BLEU | range | best valid loss | "
                    "range |");
    CHECK(md[14] == "| post_ln | sinusoidal | 3+3 | 3 | 1 | 100–1200 | 60.00 ± 20.00 | 40.00–80.00 | 1.2000 ± 0.2828 "
                    "| 1.0000–1.4000 |");
    CHECK(md[15] == "| pre_ln | sinusoidal | 3+3 | 1 | 0 | 1200 | 90.00 | 90.00–90.00 | 0.9000 | 0.9000–0.9000 |");
    // one seed per cell: no summary table
    write_results_markdown((dir / "r1.md").string(), {rows[0], rows[1]}, "");
    CHECK(text_of(dir / "r1.md").find("Across seeds") == std::string::npos);

    write_summary_csv((dir / "s.csv").string(), s);
    const auto csv = lines_of(dir / "s.csv");
    REQUIRE(csv.size() == 4);
    CHECK(csv[0] == "label,positions,layers,runs,diverged,min_steps,max_steps,test_bleu_n,test_bleu_mean,test_bleu_sd,"
                    "test_bleu_min,test_bleu_max,best_valid_loss_n,best_valid_loss_mean,best_valid_loss_sd,"
                    "best_valid_loss_min,best_valid_loss_max,final_train_loss_n,final_train_loss_mean,"
                    "final_train_loss_sd,final_train_loss_min,final_train_loss_max");
    CHECK(csv[1].rfind("post_ln,sinusoidal,3,3,1,100,1200,3,60.000000,20.000000,40.000000,80.000000,2,1.200000,", 0) ==
          0);
    CHECK(csv[2] == "pre_ln,sinusoidal,3,1,0,1200,1200,1,90.000000,nan,90.000000,90.000000,1,0.900000,nan,0.900000,"
                    "0.900000,1,1.000000,nan,1.000000,1.000000");
  }

  TEST_CASE("result.json round trip; non-finite numbers come back as NaN; a missing file is not done") {
    const fs::path dir = scratch("result");
    SweepRow in{"resi_dual", 3, 7, 99, 91.25, std::numeric_limits<double>::infinity(), 2.5, 1.0, false, "rope",
                "{\"lr\":0.002,\"model.d_model\":16}"},
        out;
    write_sweep_row((dir / "result.json").string(), in);
    REQUIRE(read_sweep_row((dir / "result.json").string(), &out));
    CHECK(out.positions == "rope");
    CHECK(settings_differences(out.settings, in.settings).empty());
    {  // what a run's result depends on, and only that
      TrainOptions a = tiny_options(dir), b = a;
      b.device = "cpu";
      b.save_every = a.save_every + 7;  // checkpointing: no difference
      CHECK(settings_differences(run_settings(a), run_settings(b)).empty());
      b.lr = a.lr * 2;
      b.model.heads = 4;
      CHECK(settings_differences(run_settings(a), run_settings(b)) ==
            "lr " + nlohmann::json(a.lr).dump() + " vs " + nlohmann::json(b.lr).dump() + ", model.heads 2 vs 4");
      a.eval_every = b.eval_every = 0;  // no evaluations: their options do not matter
      b = a;
      b.eval_sentences = 7;
      CHECK(settings_differences(run_settings(a), run_settings(b)).empty());
      // a setting one side lacks (an older result's) reads as its default; "cuda" is "cuda:0"
      nlohmann::json older = nlohmann::json::parse(run_settings(a));
      older.erase("model.rope_dims");
      older["device"] = "cuda";
      a.device = "cuda:0";
      CHECK(settings_differences(older.dump(), run_settings(a)).empty());
      a.model.rope_dims = 4;
      CHECK(settings_differences(older.dump(), run_settings(a)) == "model.rope_dims 0 vs 4");
    }
    CHECK(sweep_run_name(out) == "resi_dual_L3_s7_rope");
    CHECK(sweep_run_name("resi_dual", 3, 7) == "resi_dual_L3_s7");  // sinusoidal: the names of earlier sweeps
    CHECK(out.topology == "resi_dual");
    CHECK(out.layers == 3);
    CHECK(out.seed == 7);
    CHECK(out.steps == 99);
    CHECK(out.test_bleu == 91.25);
    CHECK(std::isnan(out.best_valid_loss));
    CHECK(out.final_train_loss == 2.5);
    CHECK_FALSE(out.diverged);
    CHECK_FALSE(read_sweep_row((dir / "absent.json").string(), &out));
    std::ofstream((dir / "bad.json").string()) << "{\"topology\": 3}";
    CHECK_THROWS_AS(read_sweep_row((dir / "bad.json").string(), &out), skipgrad::Error);
    // a result written before the positions axis and the settings: sinusoidal, settings unknown
    std::ofstream((dir / "old.json").string())
        << R"({"topology":"pre_ln","layers":3,"seed":1,"steps":5,"test_bleu":1,"best_valid_loss":2,)"
        << R"("final_train_loss":3,"diverged":false,"minutes":0.5})";
    REQUIRE(read_sweep_row((dir / "old.json").string(), &out));
    CHECK(out.positions == "sinusoidal");
    CHECK(out.settings.empty());
  }

  TEST_CASE("plot data from a fake metrics.jsonl: .dat per run, a script per depth and curve kind, line styles") {
    const fs::path dir = scratch("plots");
    fs::create_directories(dir / "pre_ln_L2_s1");
    std::ofstream((dir / "pre_ln_L2_s1" / "metrics.jsonl").string())
        << "{\"step\":1,\"loss\":4,\"lr\":1e-05,\"gnorm\":3,\"tokens\":100,\"time\":0.1}\n"
        << "{\"step\":2,\"loss\":2,\"lr\":2e-05,\"gnorm\":3,\"tokens\":100,\"time\":0.2}\n"
        << "{\"step\":2,\"valid_loss\":3.5,\"valid_bleu\":1.5}\n"
        << "{\"step\":2,\"grad_norms\":{\"embed.weight\":1.5,\"enc.0.ffn.fc2.weight\":null}}\n"
        << "{\"step\":3,\"loss\":1,\"lr\":3e-05,\"gnorm\":3,\"tokens\":100,\"time\":0.3}\n"
        << "{\"step\":3,\"valid_loss\":2.5,\"valid_bleu\":4}\n"
        << "not json\n"
        << "{\"step\":4,\"diverged\":true}\n";
    fs::create_directories(dir / "post_ln_L2_s1");  // no evaluations: a train curve only
    std::ofstream((dir / "post_ln_L2_s1" / "metrics.jsonl").string()) << "{\"step\":1,\"loss\":5}\n{\"step\":2,\"loss\":4}\n";
    std::vector<SweepRow> rows = {{"pre_ln", 2, 1, 2, 0, 0, 0, 0, false, "sinusoidal", ""},
                                  {"post_ln", 2, 1, 1, 0, 0, 0, 0, false, "sinusoidal", ""},
                                  {"mix_ln", 2, 1, 0, 0, 0, 0, 0, false, "sinusoidal", ""}};  // no metrics.jsonl
    RunCurves c = read_metrics((dir / "pre_ln_L2_s1" / "metrics.jsonl").string());
    CHECK(c.step == std::vector<int64_t>{1, 2, 3});
    CHECK(c.loss == std::vector<double>{4, 2, 1});
    CHECK(c.valid_step == std::vector<int64_t>{2, 3});
    CHECK(c.valid_bleu == std::vector<double>{1.5, 4});

    auto scripts = write_plot_files((dir / "plots").string(), dir.string(), rows);
    CHECK(scripts == std::vector<std::string>{"train_loss_L2.gp", "valid_loss_L2.gp"});
    auto train = lines_of(dir / "plots" / "pre_ln_L2_s1.train.dat");
    REQUIRE(train.size() == 4);  // a comment line, then one line per step
    CHECK(train[1] == "1 4 4");
    CHECK(train[2] == "2 2 3.96");  // ema = 0.98 * 4 + 0.02 * 2
    CHECK(lines_of(dir / "plots" / "pre_ln_L2_s1.valid.dat")[1] == "2 3.5 1.5");
    CHECK_FALSE(fs::exists(dir / "plots" / "post_ln_L2_s1.valid.dat"));
    const std::string gp = text_of(dir / "plots" / "train_loss_L2.gp");
    CHECK(gp.find("'pre_ln_L2_s1.train.dat' using 1:3") != std::string::npos);
    CHECK(gp.find("'post_ln_L2_s1.train.dat' using 1:3") != std::string::npos);
    CHECK(gp.find("mix_ln") == std::string::npos);
    CHECK(gp.find("set output 'train_loss_L2.svg'") != std::string::npos);
    const std::string vgp = text_of(dir / "plots" / "valid_loss_L2.gp");
    CHECK(vgp.find("'pre_ln_L2_s1.valid.dat' using 1:2") != std::string::npos);
    CHECK(vgp.find("post_ln") == std::string::npos);
    if (render_plots((dir / "plots").string(), scripts)) {  // gnuplot installed
      CHECK(fs::file_size(dir / "plots" / "train_loss_L2.png") > 0);
      CHECK(fs::file_size(dir / "plots" / "valid_loss_L2.svg") > 0);
    }
    // one seed: a colour per topology, solid lines
    CHECK(gp.find("'pre_ln_L2_s1.train.dat' using 1:3 with lines lw 1.5 dt 1 lc rgb '#1f77b4'") != std::string::npos);
    CHECK(gp.find("'post_ln_L2_s1.train.dat' using 1:3 with lines lw 1.5 dt 1 lc rgb '#ff7f0e'") != std::string::npos);

    // two seeds: a topology keeps its colour, a seed its dash pattern
    fs::create_directories(dir / "pre_ln_L2_s2");
    fs::copy_file(dir / "post_ln_L2_s1" / "metrics.jsonl", dir / "pre_ln_L2_s2" / "metrics.jsonl");
    rows.push_back({"pre_ln", 2, 2, 1, 0, 0, 0, 0, false, "sinusoidal", ""});
    write_plot_files((dir / "plots").string(), dir.string(), rows);
    const std::string gp2 = text_of(dir / "plots" / "train_loss_L2.gp");
    CHECK(gp2.find("'pre_ln_L2_s1.train.dat' using 1:3 with lines lw 1.5 dt 1 lc rgb '#1f77b4' title 'pre_ln s1'") !=
          std::string::npos);
    CHECK(gp2.find("'pre_ln_L2_s2.train.dat' using 1:3 with lines lw 1.5 dt 2 lc rgb '#1f77b4' title 'pre_ln s2'") !=
          std::string::npos);
    CHECK(gp2.find("'post_ln_L2_s1.train.dat' using 1:3 with lines lw 1.5 dt 1 lc rgb '#ff7f0e'") != std::string::npos);
  }

  TEST_CASE("an lr axis: a run per learning rate, named and labelled by it, summarised and compared per rate") {
    const fs::path root = scratch("lrs");
    SweepOptions s = tiny_sweep(root);
    s.lrs = {1e-3, 3e-3};
    std::vector<SweepRow> rows = run_sweep(s);
    REQUIRE(rows.size() == 4);  // topology-major, then the rates
    const char* names[] = {"post_ln_L1_s1_lr0.001", "post_ln_L1_s1_lr0.003", "pre_ln_L1_s1_lr0.001",
                           "pre_ln_L1_s1_lr0.003"};
    for (size_t i = 0; i < rows.size(); i++) {
      CAPTURE(i);
      CHECK(sweep_run_name(rows[i]) == names[i]);
      CHECK(fs::exists(root / "sweep" / names[i] / "result.json"));
      CHECK(rows[i].lr == s.lrs[i % 2]);
      CHECK(nlohmann::json::parse(rows[i].settings).at("lr").get<double>() == s.lrs[i % 2]);  // trained at it
      CHECK(rows[i].steps == 6);
    }
    CHECK(sweep_row_label(rows[1]) == "post_ln lr 0.003");
    CHECK(rows[0].best_valid_loss != rows[1].best_valid_loss);
    CHECK((rows[3].baseline == "post_ln" && !std::isnan(rows[3].p_value)));
    const auto md = lines_of(root / "sweep" / "results.md");
    CHECK(md[2].find("| p vs post_ln |") != std::string::npos);
    CHECK(md[9].find("of the same positions, depth, learning rate and seed") != std::string::npos);
    const auto summary = lines_of(root / "sweep" / "summary.csv");  // a summary per rate
    REQUIRE(summary.size() == 5);
    CHECK(summary[2].rfind("post_ln lr 0.003,sinusoidal,1,1,", 0) == 0);
    CHECK(lines_of(root / "sweep" / "results.csv")[4].find(",pre_ln lr 0.003,") != std::string::npos);
    {  // each row is compared with the baseline's run of its own rate: without post_ln's 0.003 run, pre_ln's 0.003
       // row has no p-value, and its 0.001 row still has one
      std::vector<SweepRow> again = rows;
      for (SweepRow& r : again) r.p_value = std::numeric_limits<double>::quiet_NaN(), r.baseline.clear();
      const fs::path hyp = root / "sweep" / names[1] / "test.hyp.txt";
      fs::rename(hyp, hyp.string() + ".away");
      add_bootstrap_p_values(again, (root / "sweep").string(), "post_ln");
      fs::rename(hyp.string() + ".away", hyp);
      CHECK(!std::isnan(again[2].p_value));
      CHECK(std::isnan(again[3].p_value));
    }
    // the same rates again, and one more: the finished runs are read back, the new rate trains
    s.lrs = {3e-3, 1e-3, 2e-3};
    s.topologies = {"pre_ln"};
    rows = run_sweep(s);
    REQUIRE(rows.size() == 3);
    CHECK(sweep_run_name(rows[2]) == "pre_ln_L1_s1_lr0.002");
    CHECK(std::isnan(rows[0].p_value));  // pre_ln is this sweep's baseline now: no p-value
    s.lrs = {0.0};
    CHECK_THROWS_WITH_ALL(run_sweep(s), "learning rates must be > 0, got 0");
  }

  TEST_CASE("tiny sweep: a row per run, finished runs skipped on a second call, --force trains again; eval repeats") {
    const fs::path root = scratch("e2e");
    SweepOptions s = tiny_sweep(root);
    {  // a setting that one topology of the list refuses fails before any training
      SweepOptions refused = s;
      refused.topologies = {"post_ln", "hybrid_norm_star"};
      refused.train.model.qk_norm = nn::HeadNormTargets::QK;
      CHECK_THROWS_WITH_ALL(run_sweep(refused), "hybrid_norm_star", "qk_norm must be none");
      CHECK_FALSE(fs::exists(root / "sweep"));
    }
    std::vector<SweepRow> rows = run_sweep(s);
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].topology == "post_ln");
    CHECK(rows[1].topology == "pre_ln");
    for (auto& r : rows) {
      CHECK(r.steps == 6);
      CHECK(std::isfinite(r.best_valid_loss));
      CHECK(r.best_valid_loss > 0);
      CHECK_FALSE(r.diverged);
    }
    auto csv = lines_of(root / "sweep" / "results.csv");
    REQUIRE(csv.size() == 3);
    CHECK(csv[1].rfind("post_ln,sinusoidal,1,1,6,", 0) == 0);
    CHECK(csv[2].rfind("pre_ln,sinusoidal,1,1,6,", 0) == 0);
    // preamble, blank, header, rule, two rows, blank, what p is; pre_ln's p against post_ln's run (its tiny model
    // translates nothing, as post_ln's: BLEU 0 on every resample, so the same output's p = 1)
    const auto md = lines_of(root / "sweep" / "results.md");
    REQUIRE(md.size() == 8);
    CHECK(md[2].find("| minutes | p vs post_ln |") != std::string::npos);
    CHECK(md[4].find("| – |") != std::string::npos);  // post_ln, the baseline
    CHECK(std::isnan(rows[0].p_value));
    CHECK((rows[1].p_value > 0 && rows[1].p_value <= 1 && rows[1].baseline == "post_ln"));
    CHECK(md[7].rfind("p: paired bootstrap resampling of the test BLEU against post_ln's run", 0) == 0);
    {  // a run folder whose references were edited: that row has no p-value, and the table is still written
      std::vector<SweepRow> edited = rows;
      CHECK(!std::isnan(edited[1].p_value));  // a row that has its p-value keeps it: each pair is compared once
      edited[1].p_value = std::numeric_limits<double>::quiet_NaN();
      edited[1].baseline.clear();
      const fs::path refs = root / "sweep" / "pre_ln_L1_s1" / "test.ref.txt";
      const std::string kept = text_of(refs);
      std::ofstream(refs.string()) << "another\ntest set\n";
      add_bootstrap_p_values(edited, (root / "sweep").string(), "post_ln");
      CHECK(std::isnan(edited[1].p_value));
      CHECK(edited[1].baseline.empty());
      std::ofstream(refs.string()) << kept;
    }
    const auto summary = lines_of(root / "sweep" / "summary.csv");  // one seed per cell: one run in each summary
    REQUIRE(summary.size() == 3);
    CHECK(summary[1].rfind("post_ln,sinusoidal,1,1,0,6,6,1,", 0) == 0);
    CHECK(summary[2].rfind("pre_ln,sinusoidal,1,1,0,6,6,1,", 0) == 0);
    CHECK(fs::exists(root / "sweep" / "plots" / "train_loss_L1.gp"));
    // each run's test hypotheses and references, a line per test sentence, for `significance`
    CHECK(lines_of(root / "sweep" / "post_ln_L1_s1" / "test.hyp.txt").size() == 6);
    CHECK(lines_of(root / "sweep" / "pre_ln_L1_s1" / "test.ref.txt").size() == 6);
    CHECK(fs::exists(root / "sweep" / "plots" / "valid_loss_L1.gp"));

    // Mark post_ln's result: a second call must read it back rather than train again.
    const std::string result = (root / "sweep" / "post_ln_L1_s1" / "result.json").string();
    SweepRow marked = rows[0];
    marked.steps = 12345;
    write_sweep_row(result, marked);
    rows = run_sweep(s);
    CHECK(rows[0].steps == 12345);
    CHECK(lines_of(root / "sweep" / "results.csv")[1].rfind("post_ln,sinusoidal,1,1,12345,", 0) == 0);

    // a sweep with other options in the same folder is refused, naming them, rather than passing off those runs,
    // and before it trains any run of its own
    SweepOptions other = s;
    other.topologies = {"res_post_norm", "post_ln"};
    other.train.lr *= 2;
    other.train.model.d_ff = 24;
    CHECK_THROWS_WITH_ALL(run_sweep(other), "post_ln_L1_s1/result.json' was trained with other options", "lr ",
                          "model.d_ff 32 vs 24", "--force");
    CHECK_FALSE(fs::exists(root / "sweep" / "res_post_norm_L1_s1"));
    // a positions axis: pre_ln's sinusoidal run is done already; its alibi and t5 runs train into folders of their own
    SweepOptions axis = s;
    axis.topologies = {"pre_ln"};
    axis.positions = {nn::PositionEncoding::Sinusoidal, nn::PositionEncoding::Alibi, nn::PositionEncoding::T5};
    axis.train.model.relative_buckets = 8;  // (t5's option: the t5 run alone takes it)
    rows = run_sweep(axis);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].positions == "sinusoidal");
    CHECK(rows[1].positions == "alibi");
    CHECK(rows[2].positions == "t5");
    CHECK(fs::exists(root / "sweep" / "pre_ln_L1_s1_t5" / "result.json"));
    axis.positions.pop_back();
    CHECK_THROWS_WITH_ALL(run_sweep(axis), "relative_buckets 8 and relative_max_distance 128 are for positions t5");
    axis.train.model.relative_buckets = 32;
    CHECK(rows[1].steps == 6);
    CHECK(rows[1].best_valid_loss != rows[0].best_valid_loss);
    CHECK(fs::exists(root / "sweep" / "pre_ln_L1_s1_alibi" / "result.json"));
    CHECK(lines_of(root / "sweep" / "results.csv")[2].rfind("pre_ln,alibi,1,1,6,", 0) == 0);
    axis.train.model.rope_theta = 5e5;  // rope's option, with no rope run listed: refused before any training
    CHECK_THROWS_WITH_ALL(run_sweep(axis), "rope_theta 500000 is for positions rope");
    axis.train.model.rope_theta = 10000;
    axis.train.model.rope_dims = 4;
    CHECK_THROWS_WITH_ALL(run_sweep(axis), "rope_dims 4 is for positions rope");
    axis.train.model.rope_dims = 0;
    {  // --dyt-alpha-at: a pattern that one topology's model has no DyT for is refused before any run trains
      SweepOptions dyt = axis;
      dyt.out_dir = (root / "sweep_dyt").string();
      dyt.topologies = {"pre_ln", "post_ln"};  // Post-LN has no final norms
      dyt.positions = {nn::PositionEncoding::Sinusoidal};
      dyt.train.model.norm = nn::NormKind::DynamicTanh;
      dyt.train.model.dyt_alpha_at = {{"*.final_norm", 0.2}};
      CHECK_THROWS_WITH_ALL(run_sweep(dyt), "'*.final_norm' matches no DyT of this post_ln model");
      CHECK_FALSE(fs::exists(root / "sweep_dyt" / "pre_ln_L1_s1"));
    }
    {  // a result from before runs recorded their settings (and positions): its checkpoint's config is checked
      const fs::path legacy = root / "legacy";
      fs::create_directories(legacy);
      fs::copy(root / "sweep" / "pre_ln_L1_s1_alibi", legacy / "pre_ln_L1_s1");
      const std::string path = (legacy / "pre_ln_L1_s1" / "result.json").string();
      nlohmann::json j = nlohmann::json::parse(text_of(path));
      j.erase("positions");
      j.erase("settings");
      write_file_atomic(path, j.dump());
      SweepOptions old = s;
      old.topologies = {"pre_ln"};
      old.out_dir = legacy.string();
      CHECK_THROWS_WITH_ALL(run_sweep(old), "was trained with alibi positions (its checkpoint's config), not "
                            "sinusoidal", "--force");
      j["settings"] = nullptr;  // settings that are not an object: not a sweep result
      write_file_atomic(path, j.dump());
      CHECK_THROWS_WITH_ALL(run_sweep(old), "is not a sweep result", "its settings are null, not an object");
    }

    s.force = true;
    s.topologies = {"post_ln"};
    CHECK(run_sweep(s)[0].steps == 6);

    // eval: the same numbers twice, hypotheses written one per line, sacreBLEU's signature.
    EvalOptions e;
    e.checkpoint = (root / "sweep" / "pre_ln_L1_s1" / "checkpoint_last.safetensors").string();
    e.data = s.train;
    e.beam = 2;
    e.test_sentences = 5;
    e.hypotheses_path = (root / "hyp.txt").string();
    EvalResult a = evaluate_checkpoint(e), b = evaluate_checkpoint(e);
    CHECK(a.sentences == 5);
    CHECK(a.bleu.score == b.bleu.score);
    CHECK(a.loss == b.loss);
    CHECK(a.hypotheses == b.hypotheses);
    CHECK(a.nll > 0);
    CHECK(std::isfinite(a.loss));
    CHECK(lines_of(root / "hyp.txt").size() == 5);
    CHECK(bleu_signature_line(a.bleu).rfind("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = ", 0) == 0);
    CHECK(a.measures.layers.empty());  // not asked for
    e.measure = 2;  // per-layer statistics of the trained model on the test batches
    const EvalResult measured = evaluate_checkpoint(e);
    REQUIRE(measured.measures.layers.size() == 2);  // 1 + 1 layers
    CHECK(measured.measures.samples >= 1);
    for (const LayerMeasure& l : measured.measures.layers) {
      CHECK(l.layer_grad_norm > 0);
      CHECK(l.token_cos >= -1.0);
      CHECK(l.token_cos <= 1.0);
    }
    CHECK(layer_measures_markdown(measured.measures).find("| dec.0 |") != std::string::npos);
    CHECK(measured.bleu.score == a.bleu.score);  // measuring changes nothing else
    for (const LayerMeasure& l : measured.measures.layers) CHECK(l.self_logit_max > 0);
    CHECK(measured.measures.layer("dec.0").cross_logit_max > 0);
    e.measure = 0;

    // layer removal: each layer in turn, scored as --remove-layers scores it
    e.layer_removal = true;
    const EvalResult removal = evaluate_checkpoint(e);
    REQUIRE(removal.removals.size() == 2);
    CHECK(removal.removals[0].layer == "enc.0");
    CHECK(removal.removals[1].layer == "dec.0");
    CHECK(removal.loss == a.loss);  // the whole model's scores are unchanged
    CHECK(removal.bleu.score == a.bleu.score);
    const std::string table = layer_removal_markdown(removal);
    CHECK(table.find("| removed layer | test loss | Δloss |") != std::string::npos);
    CHECK(table.find("| dec.0 |") != std::string::npos);
    e.layer_removal = false;
    e.remove_layers = {"dec.0"};
    const EvalResult without_dec0 = evaluate_checkpoint(e);
    CHECK(without_dec0.loss == removal.removals[1].loss);
    CHECK(without_dec0.bleu.score == removal.removals[1].bleu.score);
    CHECK(without_dec0.loss != a.loss);
    e.layer_removal = true;  // the layers already removed are not listed again
    REQUIRE(evaluate_checkpoint(e).removals.size() == 1);
    e.remove_layers = {"dec.1"};
    CHECK_THROWS_WITH_ALL(evaluate_checkpoint(e), "'dec.1' is not a layer", "dec.0 .. dec.0");
    e.remove_layers.clear();
    e.layer_removal = false;
    e.tsv = (root / "corpus" / "valid.tsv").string();
    e.test_sentences = 0;
    CHECK(evaluate_checkpoint(e).sentences == (int64_t)read_tsv(e.tsv, false).size());
    fs::remove_all(root.parent_path());
  }
}
