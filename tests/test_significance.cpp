// Paired bootstrap resampling and approximate randomization of BLEU (examples/translate/significance.h) against
// sacreBLEU's --paired-bs and --paired-ar (tests/reference/significance_reference.json, written by
// scripts/make_significance_reference.py), their draws, degenerate cases and the `significance` command's inputs.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "significance.h"
#include "test_util.h"
#include "translate_test_util.h"

using namespace sgtest;
using namespace translate;
namespace fs = std::filesystem;

namespace {
void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::ofstream out(p);
  for (const std::string& l : lines) out << l << "\n";
}
}  // namespace

TEST_SUITE("translate") {
  TEST_CASE("paired bootstrap and randomization: BLEU, mean, 95% interval and p as sacreBLEU's on its own draws") {
    std::ifstream in(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/significance_reference.json");
    REQUIRE(in.good());
    const nlohmann::json j = nlohmann::json::parse(in);
    const std::vector<std::string> refs = j["references"];
    std::vector<std::string> names;
    std::vector<std::vector<std::string>> systems;
    for (const auto& s : j["systems"]) names.push_back(s["name"]), systems.push_back(s["hypotheses"]);
    const std::vector<std::vector<int64_t>> resamples = j["resamples"];
    REQUIRE(resamples.size() == 300);
    const std::vector<SignificanceResult> got = paired_bootstrap(refs, names, systems, resamples);
    REQUIRE(got.size() == j["results"].size());
    int significant = 0;
    for (size_t i = 0; i < got.size(); i++) {
      const auto& want = j["results"][i];
      INFO(got[i].name << ": BLEU " << got[i].bleu << " mean " << got[i].mean << " ci " << got[i].ci << " p "
                       << got[i].p_value);
      CHECK(got[i].name == want["name"].get<std::string>());
      CHECK(got[i].bleu == doctest::Approx(want["bleu"].get<double>()).epsilon(1e-12));
      // sacreBLEU computes each resample's BLEU from float32 sums (off by up to ~3e-6); in float64 it is ours
      CHECK(got[i].mean == doctest::Approx(want["mean_f64"].get<double>()).epsilon(1e-12));
      CHECK(got[i].ci == doctest::Approx(want["ci_f64"].get<double>()).epsilon(1e-12));
      CHECK(std::fabs(got[i].mean - want["mean"].get<double>()) < 1e-5);
      CHECK(std::fabs(got[i].ci - want["ci"].get<double>()) < 1e-5);
      if (want["p_value"].is_null()) {
        CHECK(std::isnan(got[i].p_value));
      } else {
        CHECK(got[i].p_value == doctest::Approx(want["p_value_f64"].get<double>()).epsilon(1e-15));
        CHECK(got[i].p_value == doctest::Approx(want["p_value"].get<double>()).epsilon(1e-15));
        significant += got[i].p_value < 0.05;
      }
    }
    CHECK(significant == 2);  // "better" and "worse"; "alike" (the baseline's noise) is not
    SignificanceOptions shown;
    shown.samples = 300;
    const std::string table = significance_table(got, shown);
    CHECK(table.find("(baseline)") != std::string::npos);
    CHECK(table.find("paired bootstrap resampling, 300 resamples, seed 12345") != std::string::npos);

    // approximate randomization on the coin flips numpy drew for sacreBLEU's _paired_ar_test
    std::vector<std::vector<bool>> flips;
    for (const auto& row : j["ar_flips"]) {
      std::vector<bool> f;
      for (char c : row.get<std::string>()) f.push_back(c == '1');
      flips.push_back(f);
    }
    REQUIRE(flips.size() == 500);
    const std::vector<SignificanceResult> ar = paired_randomization(refs, names, systems, flips);
    REQUIRE(ar.size() == 4);
    CHECK(std::isnan(ar[0].p_value));
    for (size_t i = 1; i < ar.size(); i++) {
      const auto& want = j["ar_results"][i - 1];
      CHECK(ar[i].name == want["name"].get<std::string>());
      CHECK(ar[i].bleu == got[i].bleu);
      CHECK(std::isnan(ar[i].mean));  // no interval
      CHECK(ar[i].p_value == doctest::Approx(want["p_value"].get<double>()).epsilon(1e-15));
    }
    CHECK((ar[1].p_value < 0.05 && ar[2].p_value > 0.05 && ar[3].p_value < 0.05));
    shown.test = "ar";
    shown.samples = 0;  // the default: 10000 trials
    const std::string ar_table = significance_table(ar, shown);
    CHECK(ar_table.find("paired approximate randomization, 10000 trials, seed 12345") != std::string::npos);
  }

  TEST_CASE("paired bootstrap: resamples repeat with their seed and cover the set; a system against itself has p 1") {
    const auto a = bootstrap_resamples(60, 500, 7), b = bootstrap_resamples(60, 500, 7);
    CHECK(a == b);
    CHECK(bootstrap_resamples(60, 500, 8) != a);
    std::vector<int64_t> count(60, 0);
    bool in_range = true;
    for (const auto& s : a) {
      REQUIRE(s.size() == 60);
      for (int64_t i : s) {
        in_range = in_range && i >= 0 && i < 60;
        if (i >= 0 && i < 60) count[size_t(i)]++;
      }
    }
    CHECK(in_range);
    // 30000 draws, 500 expected per index, sd ~22: every count within 7 sd
    for (int64_t c : count) CHECK((c > 340 && c < 660));

    const std::vector<std::string> refs = {"the cat sat on the mat", "a dog ran fast", "one two three four five"};
    const std::vector<std::string> hyp = {"the cat sat on mat", "a dog ran", "one two three four"};
    const auto r = paired_bootstrap(refs, {"base", "same"}, {hyp, hyp}, bootstrap_resamples(3, 100, 1));
    CHECK(r[1].bleu == r[0].bleu);
    CHECK(r[1].p_value == 1);  // sacreBLEU: 1/101
    // drawn one resample at a time from a seed: the same as the seed's resamples given at once
    const std::vector<std::string> other = {"the cat sat", "a dog ran fast", "one two three four five"};
    const auto given = paired_bootstrap(refs, {"a", "b"}, {hyp, other}, bootstrap_resamples(3, 200, 9));
    const auto drawn = paired_bootstrap(refs, {"a", "b"}, {hyp, other}, 200, 9);
    for (size_t i = 0; i < 2; i++)
      CHECK((drawn[i].mean == given[i].mean && drawn[i].ci == given[i].ci && drawn[i].bleu == given[i].bleu));
    CHECK(drawn[1].p_value == given[1].p_value);
    // approximate randomization: repeats with its seed; a system against itself has p 1 (sacreBLEU: 1/(T + 1))
    const auto ar1 = paired_randomization(refs, {"a", "b"}, {hyp, other}, 300, 4);
    const auto ar2 = paired_randomization(refs, {"a", "b"}, {hyp, other}, 300, 4);
    CHECK(ar1[1].p_value == ar2[1].p_value);
    CHECK((ar1[1].p_value > 0 && ar1[1].p_value <= 1));
    CHECK(paired_randomization(refs, {"a", "same"}, {hyp, hyp}, 300, 4)[1].p_value == 1);
    CHECK_THROWS_WITH_AS(paired_randomization(refs, {"a", "b"}, {hyp, other}, {{true, false}}),
                         doctest::Contains("a trial of 2 flips for 3 sentences"), skipgrad::Error);

    CHECK_THROWS_WITH_AS(paired_bootstrap(refs, {"base", "short"}, {hyp, {"x"}}, bootstrap_resamples(3, 10, 1)),
                         doctest::Contains("system 'short' has 1 hypotheses for 3 references"), skipgrad::Error);
    CHECK_THROWS_WITH_AS(paired_bootstrap(refs, {"base"}, {hyp}, {{0, 1, 3}}),
                         doctest::Contains("resample index 3 is not in [0, 3)"), skipgrad::Error);
    CHECK_THROWS_AS(bootstrap_resamples(0, 10, 1), skipgrad::Error);
  }

  TEST_CASE("significance command inputs: hypothesis files with --references, run folders with their test set") {
    const ScratchDir scratch("skipgrad_significance");  // removed at the end of the case
    const fs::path dir = scratch.path();
    fs::create_directories(dir);
    const std::vector<std::string> refs = {"the cat sat on the mat", "a dog ran fast", "one two three four five"};
    write_lines(dir / "ref.txt", refs);
    write_lines(dir / "a.txt", {"the cat sat on mat", "a dog ran", "one two three four"});
    write_lines(dir / "b.txt", {"the cat sat on the mat", "a dog ran fast", "one two three"});
    for (const char* run : {"run_a", "run_b"}) fs::create_directories(dir / run);
    fs::copy_file(dir / "a.txt", dir / "run_a" / "test.hyp.txt");
    fs::copy_file(dir / "b.txt", dir / "run_b" / "test.hyp.txt");
    write_lines(dir / "run_a" / "test.ref.txt", refs);
    write_lines(dir / "run_b" / "test.ref.txt", refs);

    SignificanceOptions o;
    o.samples = 200;
    o.systems = {(dir / "a.txt").string(), (dir / "b.txt").string()};
    o.references = (dir / "ref.txt").string();
    const auto files = run_significance(o);
    o.systems = {(dir / "run_a").string(), (dir / "run_b").string()};
    o.references.clear();
    const auto folders = run_significance(o);
    REQUIRE((files.size() == 2 && folders.size() == 2));
    for (size_t i = 0; i < 2; i++) {  // the same texts and seed: the same numbers
      CHECK(files[i].bleu == folders[i].bleu);
      CHECK(files[i].mean == folders[i].mean);
      CHECK(files[i].ci == folders[i].ci);
    }
    CHECK(files[1].p_value == folders[1].p_value);
    CHECK(folders[1].name == (dir / "run_b").string());
    o.test = "ar";
    const auto ar = run_significance(o);
    CHECK((ar[1].bleu == folders[1].bleu && std::isnan(ar[1].mean) && ar[1].p_value > 0));
    o.test = "bs";

    write_lines(dir / "run_b" / "test.ref.txt", {"another", "test", "set"});
    CHECK_THROWS_WITH_AS(run_significance(o), doctest::Contains("are different test sets"), skipgrad::Error);
    o.systems = {(dir / "a.txt").string(), (dir / "b.txt").string()};  // files and no --references
    CHECK_THROWS_WITH_AS(run_significance(o), doctest::Contains("no references"), skipgrad::Error);
    o.systems = {(dir / "a.txt").string()};
    CHECK_THROWS_WITH_AS(run_significance(o), doctest::Contains("at least one system"), skipgrad::Error);
    o.systems = {(dir / "a.txt").string(), (dir / "missing.txt").string()};
    o.references = (dir / "ref.txt").string();
    CHECK_THROWS_WITH_AS(run_significance(o), doctest::Contains("cannot read hypotheses"), skipgrad::Error);
  }
}
