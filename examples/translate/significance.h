// Is one system's BLEU better than another's, or is the difference the test set's luck? The two paired tests of
// sacreBLEU 2.x (sacrebleu/significance.py), each system against the first (the baseline):
//
// Paired bootstrap resampling (Koehn 2004; `--paired-bs`; Moses' bootstrap-hypothesis-difference-significance.pl):
//   - draw S resamples of the test set, each n sentence indices with replacement (the same ones for every system);
//   - a system's BLEU on a resample is bleu_from_stats of its sentences' summed statistics;
//   - its mean and 95% interval: the resamples' mean, and half the distance between the (S/40)-th smallest and the
//     (S/40)-th largest (sacreBLEU's estimate_ci);
//   - the p-value of "the system differs from the baseline": with d = |BLEU_sys − BLEU_base| on the whole set and
//     d_s = |BLEU_sys,s − BLEU_base,s| on resample s, centred as c_s = d_s − mean(d), p = (#{c_s > d} + 1) / (S + 1).
// Paired approximate randomization (Riezler and Maxwell 2005; `--paired-ar`; multeval's):
//   - in each of T trials every sentence's statistics swap between the two systems with probability 1/2;
//   - d_t = |BLEU(pseudo-system a) − BLEU(pseudo-system b)|, and p = (#{d_t > d} + 1) / (T + 1);
//   - no interval (mean and ci NaN): sacreBLEU adds one by a bootstrap only when asked.
// One deliberate difference: sacreBLEU gives a system compared with itself p = 1/(S + 1) (no resampled difference
// exceeds d = 0), which reads as significant; a system that scores as the baseline on the whole set and on every
// resample or trial gets p = 1.
// The draws come from our own generator (std::mt19937_64, the same on every platform), not from numpy's, so a run's
// mean, interval and p differ from sacreBLEU's by the resampling's noise; from given draws they are the same
// (tests/test_significance.cpp against sacreBLEU's functions).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bleu.h"

namespace translate {

struct SignificanceResult {
  std::string name;
  double bleu = 0;           // on the whole test set
  double mean = 0, ci = 0;   // over the resamples: mean, and the 95% interval's half width
  double p_value = 0;        // against the baseline (the first system); NaN for the baseline itself
};

// Resamples of n indices in [0, n), drawn with replacement from `seed`: the same sequence on every platform.
class BootstrapSampler {
 public:
  BootstrapSampler(int64_t n, uint64_t seed);
  void next(std::vector<int64_t>& indices);  // the next resample, n indices
 private:
  int64_t n_;
  std::mt19937_64 gen_;
};
// The first S resamples of BootstrapSampler(n, seed), all at once (for tests).
std::vector<std::vector<int64_t>> bootstrap_resamples(int64_t n, int64_t samples, uint64_t seed);

// systems[0] is the baseline; every system's hypotheses are against the same references. Errors (naming the system)
// on a count mismatch, no systems, no sentences or no resamples. With `samples` and `seed` the resamples are drawn
// one at a time (BootstrapSampler), so memory does not grow with S x n; or they are given.
std::vector<SignificanceResult> paired_bootstrap(const std::vector<std::string>& references,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<std::vector<std::string>>& systems,
                                                 int64_t samples, uint64_t seed);
std::vector<SignificanceResult> paired_bootstrap(const std::vector<std::string>& references,
                                                 const std::vector<std::string>& names,
                                                 const std::vector<std::vector<std::string>>& systems,
                                                 const std::vector<std::vector<int64_t>>& resamples);

// Approximate randomization: `trials` trials drawn from `seed`, or given (flips[t][i]: sentence i swaps in trial t).
std::vector<SignificanceResult> paired_randomization(const std::vector<std::string>& references,
                                                     const std::vector<std::string>& names,
                                                     const std::vector<std::vector<std::string>>& systems,
                                                     int64_t trials, uint64_t seed);
std::vector<SignificanceResult> paired_randomization(const std::vector<std::string>& references,
                                                     const std::vector<std::string>& names,
                                                     const std::vector<std::vector<std::string>>& systems,
                                                     const std::vector<std::vector<bool>>& flips);

// `skipgrad-translate significance`: each system is a file of hypotheses, one per line, or a run folder of `train`
// (its test.hyp.txt, and its test.ref.txt as the references when none are given). Folders' references must agree.
struct SignificanceOptions {
  std::vector<std::string> systems;  // the first is the baseline; at least two
  std::string references;            // a file; "" : the run folders' test.ref.txt
  std::string test = "bs";           // "bs": paired bootstrap; "ar": approximate randomization
  int64_t samples = 0;               // resamples or trials; 0: sacreBLEU's defaults, 1000 (bs) and 10000 (ar)
  uint64_t seed = 12345;             // sacreBLEU's default SACREBLEU_SEED
  int64_t draws() const { return samples > 0 ? samples : test == "ar" ? 10000 : 1000; }
};
std::vector<SignificanceResult> run_significance(const SignificanceOptions& opts);

// The results as a table: system, BLEU, mean ± interval (bootstrap), p-value, and a mark when p < 0.05; the last
// line names the test, its draws and seed.
std::string significance_table(const std::vector<SignificanceResult>& results, const SignificanceOptions& opts);

}  // namespace translate
