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

}  // namespace translate
