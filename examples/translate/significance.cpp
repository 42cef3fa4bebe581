#include "significance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

#include "tensor/error.h"

namespace translate {

using skipgrad::check;

std::vector<std::vector<int64_t>> bootstrap_resamples(int64_t n, int64_t samples, uint64_t seed) {
  check(n > 0 && samples > 0, "bootstrap_resamples", ": needs sentences and resamples, got ", n, " and ", samples);
  std::mt19937_64 gen(seed);
  // uniform in [0, n) by rejection: std::uniform_int_distribution's draws differ between standard libraries
  const uint64_t range = uint64_t(n), limit = std::numeric_limits<uint64_t>::max() / range * range;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(samples), std::vector<int64_t>(static_cast<size_t>(n)));
  for (auto& sample : out)
    for (int64_t& i : sample) {
      uint64_t r;
      do r = gen(); while (r >= limit);
      i = int64_t(r % range);
    }
  return out;
}

namespace {
// sacreBLEU's estimate_ci: the mean, and half the width between the n/40-th value from each end of the sorted scores.
void mean_and_ci(std::vector<double> scores, double* mean, double* ci) {
  std::sort(scores.begin(), scores.end());
  double sum = 0;
  for (double s : scores) sum += s;
  *mean = sum / double(scores.size());
  const size_t lower = scores.size() / 40, upper = scores.size() - lower - 1;
  *ci = 0.5 * (scores[upper] - scores[lower]);
}
}  // namespace

std::vector<BootstrapResult> paired_bootstrap(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems,
                                              const std::vector<std::vector<int64_t>>& resamples) {
  const char* op = "paired_bootstrap";
  check(!systems.empty() && names.size() == systems.size(), op, ": needs a baseline and a name per system, got ",
        systems.size(), " systems and ", names.size(), " names");
  check(!references.empty() && !resamples.empty(), op, ": needs sentences and resamples, got ", references.size(),
        " references and ", resamples.size(), " resamples");
  const int64_t n = int64_t(references.size());
  for (const auto& sample : resamples)
    for (int64_t i : sample) check(i >= 0 && i < n, op, ": resample index ", i, " is not in [0, ", n, ")");
  std::vector<BootstrapResult> out;
  std::vector<double> base_scores;  // the baseline's BLEU on each resample
  for (size_t s = 0; s < systems.size(); s++) {
    check(systems[s].size() == references.size(), op, ": system '", names[s], "' has ", systems[s].size(),
          " hypotheses for ", references.size(), " references");
    const std::vector<BleuStats> stats = sentence_bleu_stats(systems[s], references, op);
    BleuStats whole;
    for (const BleuStats& st : stats) whole += st;
    BootstrapResult r;
    r.name = names[s];
    r.bleu = bleu_from_stats(whole).score;
    std::vector<double> scores;
    scores.reserve(resamples.size());
    for (const auto& sample : resamples) {
      BleuStats sum;
      for (int64_t i : sample) sum += stats[size_t(i)];
      scores.push_back(bleu_from_stats(sum).score);
    }
    mean_and_ci(scores, &r.mean, &r.ci);
    if (s == 0) {
      base_scores = scores;
      r.p_value = std::numeric_limits<double>::quiet_NaN();
    } else {
      // H0: the two systems score alike, and any whole-set difference d is the test set's luck. The resampled
      // differences, centred on their mean, estimate how far luck alone moves d.
      const double d = std::fabs(r.bleu - out[0].bleu);
      std::vector<double> diffs(scores.size());
      double mean_diff = 0;
      for (size_t k = 0; k < scores.size(); k++) mean_diff += diffs[k] = std::fabs(scores[k] - base_scores[k]);
      mean_diff /= double(scores.size());
      int64_t above = 0;
      for (double x : diffs) above += (x - mean_diff > d) ? 1 : 0;
      r.p_value = double(above + 1) / double(scores.size() + 1);
      // sacreBLEU gives a system scored against itself p = 1/(S + 1), "significant"; here a system that scores as
      // the baseline on the whole set and on every resample (d = 0, every d_s = 0) gets p = 1.
      if (mean_diff == 0 && d == 0) r.p_value = 1;
    }
    out.push_back(r);
  }
  return out;
}

namespace {
std::vector<std::string> read_lines_of(const std::string& path, const char* what) {
  std::ifstream in(path);
  check(in.good(), "significance", ": cannot read ", what, " '", path, "'");
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}
}  // namespace

std::vector<BootstrapResult> run_significance(const SignificanceOptions& o) {
  check(o.systems.size() >= 2, "significance", ": needs a baseline and at least one system, got ", o.systems.size());
  check(o.samples >= 40, "significance", ": --samples must be at least 40 (the 95% interval drops S/40 from each ",
        "end), got ", o.samples);
  std::vector<std::vector<std::string>> hyps;
  std::vector<std::string> refs, ref_source;
  if (!o.references.empty()) refs = read_lines_of(o.references, "references"), ref_source = {o.references};
  for (const std::string& s : o.systems) {
    if (!std::filesystem::is_directory(s)) {
      hyps.push_back(read_lines_of(s, "hypotheses"));
      continue;
    }
    hyps.push_back(read_lines_of(s + "/test.hyp.txt", "a run's test hypotheses"));
    if (!o.references.empty()) continue;
    const std::vector<std::string> r = read_lines_of(s + "/test.ref.txt", "a run's test references");
    if (ref_source.empty()) {
      refs = r, ref_source = {s + "/test.ref.txt"};
      continue;
    }
    check(r == refs, "significance", ": '", s, "/test.ref.txt' and '", ref_source[0],
          "' are different test sets: compare runs scored on the same sentences (the same corpus and ",
          "--test-sentences), or give --references");
  }
  check(!ref_source.empty(), "significance", ": no references: give --references, or run folders with test.ref.txt");
  return paired_bootstrap(refs, o.systems, hyps, bootstrap_resamples(int64_t(refs.size()), o.samples, o.seed));
}

std::string bootstrap_table(const std::vector<BootstrapResult>& results, int64_t samples, uint64_t seed) {
  std::ostringstream out;
  size_t width = 8;
  for (const BootstrapResult& r : results) width = std::max(width, r.name.size());
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %6s  %-18s  %s\n", int(width), "system", "BLEU",
                "mean ± 95% interval", "p-value vs the first");
  out << line;
  for (const BootstrapResult& r : results) {
    char p[64] = "(baseline)";
    if (!std::isnan(r.p_value)) std::snprintf(p, sizeof p, "%.4f%s", r.p_value, r.p_value < 0.05 ? " *" : "");
    std::snprintf(line, sizeof line, "%-*s  %6.2f  %6.2f ± %-7.2f     %s\n", int(width), r.name.c_str(), r.bleu,
                  r.mean, r.ci, p);
    out << line;
  }
  out << "(paired bootstrap resampling, " << samples << " resamples, seed " << seed
      << "; *: p < 0.05, the difference from the first system is unlikely to be the test set's luck)\n";
  return out.str();
}

}  // namespace translate
