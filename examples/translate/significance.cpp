#include "significance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "tensor/error.h"

namespace translate {

using skipgrad::check;

BootstrapSampler::BootstrapSampler(int64_t n, uint64_t seed) : n_(n), gen_(seed) {
  check(n > 0, "BootstrapSampler", ": needs sentences, got ", n);
}

// Uniform in [0, n) by rejection: std::uniform_int_distribution's draws differ between standard libraries.
void BootstrapSampler::next(std::vector<int64_t>& indices) {
  const uint64_t range = uint64_t(n_), limit = std::numeric_limits<uint64_t>::max() / range * range;
  indices.resize(size_t(n_));
  for (int64_t& i : indices) {
    uint64_t r;
    do r = gen_(); while (r >= limit);
    i = int64_t(r % range);
  }
}

std::vector<std::vector<int64_t>> bootstrap_resamples(int64_t n, int64_t samples, uint64_t seed) {
  check(samples > 0, "bootstrap_resamples", ": needs resamples, got ", samples);
  BootstrapSampler sampler(n, seed);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(samples));
  for (auto& sample : out) sampler.next(sample);
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

// The test, with `draw(indices)` giving each of `samples` resamples in turn (one resample in memory at a time).
std::vector<BootstrapResult> bootstrap(const std::vector<std::string>& references,
                                       const std::vector<std::string>& names,
                                       const std::vector<std::vector<std::string>>& systems, int64_t samples,
                                       const std::function<void(std::vector<int64_t>&)>& draw) {
  const char* op = "paired_bootstrap";
  check(!systems.empty() && names.size() == systems.size(), op, ": needs a baseline and a name per system, got ",
        systems.size(), " systems and ", names.size(), " names");
  check(!references.empty() && samples > 0, op, ": needs sentences and resamples, got ", references.size(),
        " references and ", samples, " resamples");
  std::vector<std::vector<BleuStats>> stats;  // [system][sentence]
  std::vector<BootstrapResult> out(systems.size());
  for (size_t s = 0; s < systems.size(); s++) {
    check(systems[s].size() == references.size(), op, ": system '", names[s], "' has ", systems[s].size(),
          " hypotheses for ", references.size(), " references");
    stats.push_back(sentence_bleu_stats(systems[s], references, op));
    BleuStats whole;
    for (const BleuStats& st : stats[s]) whole += st;
    out[s].name = names[s];
    out[s].bleu = bleu_from_stats(whole).score;
  }
  const int64_t n = int64_t(references.size());
  std::vector<std::vector<double>> scores(systems.size());  // [system][resample]: BLEU on that resample
  std::vector<int64_t> indices;
  for (int64_t k = 0; k < samples; k++) {
    draw(indices);
    for (int64_t i : indices) check(i >= 0 && i < n, op, ": resample index ", i, " is not in [0, ", n, ")");
    for (size_t s = 0; s < systems.size(); s++) {
      BleuStats sum;
      for (int64_t i : indices) sum += stats[s][size_t(i)];
      scores[s].push_back(bleu_from_stats(sum).score);
    }
  }
  for (size_t s = 0; s < systems.size(); s++) {
    BootstrapResult& r = out[s];
    mean_and_ci(scores[s], &r.mean, &r.ci);
    if (s == 0) {
      r.p_value = std::numeric_limits<double>::quiet_NaN();
      continue;
    }
    // H0: the two systems score alike, and any whole-set difference d is the test set's luck. The resampled
    // differences, centred on their mean, estimate how far luck alone moves d.
    const double d = std::fabs(r.bleu - out[0].bleu);
    std::vector<double> diffs(static_cast<size_t>(samples));
    double mean_diff = 0;
    for (size_t k = 0; k < diffs.size(); k++) mean_diff += diffs[k] = std::fabs(scores[s][k] - scores[0][k]);
    mean_diff /= double(samples);
    int64_t above = 0;
    for (double x : diffs) above += (x - mean_diff > d) ? 1 : 0;
    r.p_value = double(above + 1) / double(samples + 1);
    // sacreBLEU gives a system scored against itself p = 1/(S + 1), "significant"; here a system that scores as
    // the baseline on the whole set and on every resample (d = 0, every d_s = 0) gets p = 1.
    if (mean_diff == 0 && d == 0) r.p_value = 1;
  }
  return out;
}
}  // namespace

std::vector<BootstrapResult> paired_bootstrap(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems,
                                              const std::vector<std::vector<int64_t>>& resamples) {
  size_t k = 0;
  return bootstrap(references, names, systems, int64_t(resamples.size()),
                   [&](std::vector<int64_t>& indices) { indices = resamples[k++]; });
}

std::vector<BootstrapResult> paired_bootstrap(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems, int64_t samples,
                                              uint64_t seed) {
  check(!references.empty(), "paired_bootstrap", ": needs sentences, got none");
  BootstrapSampler sampler(int64_t(references.size()), seed);
  return bootstrap(references, names, systems, samples, [&](std::vector<int64_t>& indices) { sampler.next(indices); });
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
  std::vector<std::string> refs;
  std::string ref_source = o.references;  // the file the references came from; "" while there are none
  if (!o.references.empty()) refs = read_lines_of(o.references, "references");
  for (const std::string& s : o.systems) {
    if (!std::filesystem::is_directory(s)) {
      hyps.push_back(read_lines_of(s, "hypotheses"));
      continue;
    }
    hyps.push_back(read_lines_of(s + "/test.hyp.txt", "a run's test hypotheses"));
    if (!o.references.empty()) continue;
    const std::vector<std::string> r = read_lines_of(s + "/test.ref.txt", "a run's test references");
    if (ref_source.empty()) {
      refs = r, ref_source = s + "/test.ref.txt";
      continue;
    }
    check(r == refs, "significance", ": '", s, "/test.ref.txt' and '", ref_source,
          "' are different test sets: compare runs scored on the same sentences (the same corpus and ",
          "--test-sentences), or give --references");
  }
  check(!ref_source.empty(), "significance", ": no references: give --references, or run folders with test.ref.txt");
  return paired_bootstrap(refs, o.systems, hyps, o.samples, o.seed);
}

std::string bootstrap_table(const std::vector<BootstrapResult>& results, int64_t samples, uint64_t seed) {
  std::ostringstream out;
  size_t width = 8;
  for (const BootstrapResult& r : results) width = std::max(width, r.name.size());
  auto pad = [&](const std::string& s) { return s + std::string(width - s.size(), ' '); };
  auto number = [](const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return std::string(buf);
  };
  out << pad("system") << "    BLEU  mean ± 95% interval  p-value vs the first\n";
  for (const BootstrapResult& r : results) {
    const std::string p = std::isnan(r.p_value) ? "(baseline)"
                                                : number("%.4f", r.p_value) + (r.p_value < 0.05 ? " *" : "");
    out << pad(r.name) << "  " << number("%6.2f", r.bleu) << "  " << number("%6.2f", r.mean) << " ± "
        << number("%-7.2f", r.ci) << "     " << p << "\n";
  }
  out << "(paired bootstrap resampling, " << samples << " resamples, seed " << seed
      << "; *: p < 0.05, the difference from the first system is unlikely to be the test set's luck)\n";
  return out.str();
}

}  // namespace translate
