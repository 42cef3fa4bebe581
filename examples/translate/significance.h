// Is one system's BLEU better than another's, or is the difference the test set's luck? Paired bootstrap resampling
// (Koehn 2004), as sacreBLEU's `--paired-bs` computes it (sacrebleu/significance.py, 2.x; itself Moses'
// bootstrap-hypothesis-difference-significance.pl):
//   - draw S resamples of the test set, each n sentence indices with replacement (the same ones for every system);
//   - a system's BLEU on a resample is bleu_from_stats of its sentences' summed statistics;
//   - its mean and 95% interval: the resamples' mean, and half the distance between the (S/40)-th smallest and the
//     (S/40)-th largest (sacreBLEU's estimate_ci);
//   - the p-value of "the system differs from the baseline": with d = |BLEU_sys − BLEU_base| on the whole set and
//     d_s = |BLEU_sys,s − BLEU_base,s| on resample s, centred as c_s = d_s − mean(d), p = (#{c_s > d} + 1) / (S + 1).
// One deliberate difference: sacreBLEU gives a system compared with itself p = 1/(S + 1) (no centred difference
// exceeds d = 0), which reads as significant; a system whose BLEU equals the baseline's on every resample gets p = 1.
// The resamples come from our own generator (std::mt19937_64 and a rejection draw, the same on every platform), not
// from numpy's, so the indices, and with them mean, interval and p, differ from sacreBLEU's run by run; the
// statistics from given indices are the same (tests/test_significance.cpp against sacreBLEU's functions).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bleu.h"

namespace translate {

struct BootstrapResult {
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
std::vector<BootstrapResult> paired_bootstrap(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems, int64_t samples,
                                              uint64_t seed);
std::vector<BootstrapResult> paired_bootstrap(const std::vector<std::string>& references,
                                              const std::vector<std::string>& names,
                                              const std::vector<std::vector<std::string>>& systems,
                                              const std::vector<std::vector<int64_t>>& resamples);

// `skipgrad-translate significance`: each system is a file of hypotheses, one per line, or a run folder of `train`
// (its test.hyp.txt, and its test.ref.txt as the references when none are given). Folders' references must agree.
struct SignificanceOptions {
  std::vector<std::string> systems;  // the first is the baseline; at least two
  std::string references;            // a file; "" : the run folders' test.ref.txt
  int64_t samples = 1000;            // sacreBLEU's default
  uint64_t seed = 12345;             // sacreBLEU's default SACREBLEU_SEED
};
std::vector<BootstrapResult> run_significance(const SignificanceOptions& opts);

// The results as a table: system, BLEU, mean ± interval, p-value, and a mark when p < 0.05.
std::string bootstrap_table(const std::vector<BootstrapResult>& results, int64_t samples, uint64_t seed);

}  // namespace translate
