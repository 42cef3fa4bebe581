#include "significance.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <sstream>

#include "data.h"
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

// Every system's sentence statistics ([system][sentence]) and its BLEU on the whole set, checked; `draws` counts the
// resamples or trials to come.
struct Scored {
  std::vector<std::vector<BleuStats>> stats;
  std::vector<SignificanceResult> results;
};
Scored score_systems(const char* op, const std::vector<std::string>& references, const std::vector<std::string>& names,
                     const std::vector<std::vector<std::string>>& systems, int64_t draws) {
  check(!systems.empty() && names.size() == systems.size(), op, ": needs a baseline and a name per system, got ",
        systems.size(), " systems and ", names.size(), " names");
  check(!references.empty() && draws > 0, op, ": needs sentences and draws, got ", references.size(),
        " references and ", draws, " draws");
  Scored out;
  out.results.resize(systems.size());
  for (size_t s = 0; s < systems.size(); s++) {
    check(systems[s].size() == references.size(), op, ": system '", names[s], "' has ", systems[s].size(),
          " hypotheses for ", references.size(), " references");
    out.stats.push_back(sentence_bleu_stats(systems[s], references, op));
    BleuStats whole;
    for (const BleuStats& st : out.stats[s]) whole += st;
    SignificanceResult& r = out.results[s];
    r.name = names[s];
    r.bleu = bleu_from_stats(whole).score;
    r.mean = r.ci = r.p_value = std::numeric_limits<double>::quiet_NaN();
  }
  return out;
}

// p = (#{x > d} + 1) / (N + 1) (sacreBLEU's _compute_p_value, from multeval); 1 for the same output (`same`: d = 0
// and every draw's difference 0), which sacreBLEU would call significant.
double p_value(const std::vector<double>& x, double d, bool same) {
  if (same) return 1;
  int64_t above = 0;
  for (double v : x) above += v > d ? 1 : 0;
  return double(above + 1) / double(x.size() + 1);
}

// The bootstrap, with `draw(indices)` giving each of `samples` resamples in turn (one in memory at a time).
std::vector<SignificanceResult> bootstrap(const std::vector<std::string>& references,
                                          const std::vector<std::string>& names,
                                          const std::vector<std::vector<std::string>>& systems, int64_t samples,
                                          const std::function<void(std::vector<int64_t>&)>& draw) {
  const char* op = "paired_bootstrap";
  Scored sc = score_systems(op, references, names, systems, samples);
  const int64_t n = int64_t(references.size());
  std::vector<std::vector<double>> scores(systems.size());  // [system][resample]: BLEU on that resample
  std::vector<int64_t> indices;
  for (int64_t k = 0; k < samples; k++) {
    draw(indices);
    for (int64_t i : indices) check(i >= 0 && i < n, op, ": resample index ", i, " is not in [0, ", n, ")");
    for (size_t s = 0; s < systems.size(); s++) {
      BleuStats sum;
      for (int64_t i : indices) sum += sc.stats[s][size_t(i)];
      scores[s].push_back(bleu_from_stats(sum).score);
    }
  }
  for (size_t s = 0; s < systems.size(); s++) {
    SignificanceResult& r = sc.results[s];
    mean_and_ci(scores[s], &r.mean, &r.ci);
    if (s == 0) continue;
    // H0: the two systems score alike, and any whole-set difference d is the test set's luck. The resampled
    // differences, centred on their mean, estimate how far luck alone moves d.
    const double d = std::fabs(r.bleu - sc.results[0].bleu);
    std::vector<double> diffs(static_cast<size_t>(samples));
    double mean_diff = 0;
    for (size_t k = 0; k < diffs.size(); k++) mean_diff += diffs[k] = std::fabs(scores[s][k] - scores[0][k]);
    mean_diff /= double(samples);
    for (double& x : diffs) x -= mean_diff;
    r.p_value = p_value(diffs, d, d == 0 && mean_diff == 0);
  }
  return sc.results;
}

// Approximate randomization, with `draw(flips)` giving each of `trials` trials in turn.
std::vector<SignificanceResult> randomization(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems, int64_t trials,
                                              const std::function<void(std::vector<bool>&)>& draw) {
  const char* op = "paired_randomization";
  Scored sc = score_systems(op, references, names, systems, trials);
  const size_t n = references.size();
  std::vector<std::vector<double>> diffs(systems.size());  // [system][trial]: |BLEU(a) - BLEU(b)|
  std::vector<bool> flips;
  for (int64_t t = 0; t < trials; t++) {
    draw(flips);
    check(flips.size() == n, op, ": a trial of ", flips.size(), " flips for ", n, " sentences");
    for (size_t s = 1; s < systems.size(); s++) {  // pseudo-systems: a takes the baseline's flipped sentences
      BleuStats a, b;
      for (size_t i = 0; i < n; i++) {
        a += flips[i] ? sc.stats[0][i] : sc.stats[s][i];
        b += flips[i] ? sc.stats[s][i] : sc.stats[0][i];
      }
      diffs[s].push_back(std::fabs(bleu_from_stats(a).score - bleu_from_stats(b).score));
    }
  }
  for (size_t s = 1; s < systems.size(); s++) {
    const double d = std::fabs(sc.results[s].bleu - sc.results[0].bleu);
    const bool same = d == 0 && std::all_of(diffs[s].begin(), diffs[s].end(), [](double x) { return x == 0; });
    sc.results[s].p_value = p_value(diffs[s], d, same);
  }
  return sc.results;
}
}  // namespace

std::vector<SignificanceResult> paired_bootstrap(const std::vector<std::string>& references,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<std::vector<std::string>>& systems,
                                                 const std::vector<std::vector<int64_t>>& resamples) {
  size_t k = 0;
  return bootstrap(references, names, systems, int64_t(resamples.size()),
                   [&](std::vector<int64_t>& indices) { indices = resamples[k++]; });
}

std::vector<SignificanceResult> paired_bootstrap(const std::vector<std::string>& references,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<std::vector<std::string>>& systems,
                                                 int64_t samples, uint64_t seed) {
  check(!references.empty(), "paired_bootstrap", ": needs sentences, got none");
  BootstrapSampler sampler(int64_t(references.size()), seed);
  return bootstrap(references, names, systems, samples, [&](std::vector<int64_t>& indices) { sampler.next(indices); });
}

std::vector<SignificanceResult> paired_randomization(const std::vector<std::string>& references,
                                                     const std::vector<std::string>& names,
                                                     const std::vector<std::vector<std::string>>& systems,
                                                     const std::vector<std::vector<bool>>& flips) {
  size_t t = 0;
  return randomization(references, names, systems, int64_t(flips.size()),
                       [&](std::vector<bool>& f) { f = flips[t++]; });
}

std::vector<SignificanceResult> paired_randomization(const std::vector<std::string>& references,
                                                     const std::vector<std::string>& names,
                                                     const std::vector<std::vector<std::string>>& systems,
                                                     int64_t trials, uint64_t seed) {
  std::mt19937_64 gen(seed);
  return randomization(references, names, systems, trials, [&](std::vector<bool>& f) {
    f.resize(references.size());
    uint64_t bits = 0;  // one draw gives 64 fair coins
    for (size_t i = 0; i < f.size(); i++) {
      if (i % 64 == 0) bits = gen();
      f[i] = (bits >> (i % 64)) & 1;
    }
  });
}

std::vector<SignificanceResult> run_significance(const SignificanceOptions& o) {
  check(o.systems.size() >= 2, "significance", ": needs a baseline and at least one system, got ", o.systems.size());
  check(o.draws() >= 40, "significance", ": --samples must be at least 40 (the 95% interval drops S/40 from each ",
        "end), got ", o.samples);
  std::vector<std::vector<std::string>> hyps;
  std::vector<std::string> refs;
  std::string ref_source = o.references;  // the file the references came from; "" while there are none
  if (!o.references.empty()) refs = read_lines(o.references, "significance", "references");
  for (const std::string& s : o.systems) {
    if (!std::filesystem::is_directory(s)) {
      hyps.push_back(read_lines(s, "significance", "hypotheses"));
      continue;
    }
    hyps.push_back(read_lines(s + "/test.hyp.txt", "significance", "a run's test hypotheses"));
    if (!o.references.empty()) continue;
    const std::vector<std::string> r = read_lines(s + "/test.ref.txt", "significance", "a run's test references");
    if (ref_source.empty()) {
      refs = r, ref_source = s + "/test.ref.txt";
      continue;
    }
    check(r == refs, "significance", ": '", s, "/test.ref.txt' and '", ref_source,
          "' are different test sets: compare runs scored on the same sentences (the same corpus and ",
          "--test-sentences), or give --references");
  }
  check(!ref_source.empty(), "significance", ": no references: give --references, or run folders with test.ref.txt");
  check(o.test == "bs" || o.test == "ar", "significance", ": --test must be bs or ar, got '", o.test, "'");
  return o.test == "ar" ? paired_randomization(refs, o.systems, hyps, o.draws(), o.seed)
                        : paired_bootstrap(refs, o.systems, hyps, o.draws(), o.seed);
}

std::string significance_table(const std::vector<SignificanceResult>& results, const SignificanceOptions& o) {
  std::ostringstream out;
  size_t width = 8;
  for (const SignificanceResult& r : results) width = std::max(width, r.name.size());
  auto pad = [&](const std::string& s) { return s + std::string(width - s.size(), ' '); };
  auto number = [](const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return std::string(buf);
  };
  out << pad("system") << "    BLEU  mean ± 95% interval  p-value vs the first\n";
  for (const SignificanceResult& r : results) {
    const std::string p = std::isnan(r.p_value) ? "(baseline)"
                                                : number("%.4f", r.p_value) + (r.p_value < 0.05 ? " *" : "");
    const std::string interval =
        std::isnan(r.mean) ? std::string(17, ' ') + "-" : number("%6.2f", r.mean) + " ± " + number("%-7.2f", r.ci);
    out << pad(r.name) << "  " << number("%6.2f", r.bleu) << "  " << interval << "     " << p << "\n";
  }
  out << "(" << (o.test == "ar" ? "paired approximate randomization, " : "paired bootstrap resampling, ") << o.draws()
      << (o.test == "ar" ? " trials" : " resamples") << ", seed " << o.seed
      << "; *: p < 0.05, the difference from the first system is unlikely to be the test set's luck)\n";
  return out.str();
}

}  // namespace translate
