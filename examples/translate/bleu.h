// Corpus BLEU computed as sacreBLEU does by default (13a tokenisation, exp smoothing, case-sensitive, one
// reference), so our scores can be compared with published ones.
#pragma once
#include <string>
#include <vector>

namespace translate {

struct BleuScore {
  double score = 0;               // 0..100
  double precisions[4] = {0, 0, 0, 0};
  double brevity_penalty = 0;
  long long sys_len = 0, ref_len = 0;
  std::string str() const;        // "BLEU = 27.31 60.1/33.5/20.9/13.2 (BP = 0.981 ratio = 0.981 hyp_len = ... ref_len = ...)"
};

// mteval-v13a tokenisation, as sacreBLEU's default "13a".
std::vector<std::string> tokenize_13a(const std::string& line);
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

// BLEU's sufficient statistics: corpus BLEU is bleu_from_stats of the sum of its sentences' (sacreBLEU's
// _extract_corpus_statistics and _compute_score_from_stats), which is what a bootstrap resample recomputes.
struct BleuStats {
  long long correct[4] = {0, 0, 0, 0};  // clipped n-gram matches, n = 1..4
  long long total[4] = {0, 0, 0, 0};    // hypothesis n-grams
  long long sys_len = 0, ref_len = 0;   // tokens (13a)
  BleuStats& operator+=(const BleuStats& other);
};
BleuStats sentence_bleu_stats(const std::string& hypothesis, const std::string& reference);
// One per sentence; a count mismatch is an Error naming `who`.
std::vector<BleuStats> sentence_bleu_stats(const std::vector<std::string>& hypotheses,
                                           const std::vector<std::string>& references, const char* who);
BleuScore bleu_from_stats(const BleuStats& sum);

}  // namespace translate
