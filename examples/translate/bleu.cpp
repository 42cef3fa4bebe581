#include "bleu.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <sstream>

#include "analysis/graph.h"
#include "tensor/error.h"

namespace translate {

namespace {
// Replaces every character Python's str.split() splits on beyond ASCII's (U+001C..U+001F, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000) by a space, so the split below is sacreBLEU's.
std::string unicode_spaces_to_ascii(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    size_t len = skipgrad::utf8_sequence(s, i, &cp);
    if (len == 0) len = 1;  // a byte that is not UTF-8: kept as it is
    const bool space = (cp >= 0x1C && cp <= 0x1F) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
                       (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
                       cp == 0x205F || cp == 0x3000;
    if (space) out += ' ';
    else out.append(s, i, len);
    i += len;
  }
  return out;
}
}  // namespace

std::vector<std::string> tokenize_13a(const std::string& in) {
  std::string line = in;
  auto replace_all = [](std::string& s, const std::string& a, const std::string& b) {
    for (size_t at = s.find(a); at != std::string::npos; at = s.find(a, at + b.size())) s.replace(at, a.size(), b);
  };
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  static const std::regex punct(R"(([\{-\~\[-\` -\&\(-\+\:-\@\/]))");
  static const std::regex period_comma_before(R"(([^0-9])([\.,]))");
  static const std::regex period_comma_after(R"(([\.,])([^0-9]))");
  static const std::regex dash_after_digit(R"(([0-9])(-))");
  line = std::regex_replace(line, punct, " $1 ");
  line = std::regex_replace(line, period_comma_before, "$1 $2 ");
  line = std::regex_replace(line, period_comma_after, " $1 $2");
  line = std::regex_replace(line, dash_after_digit, "$1 $2 ");
  std::istringstream is(unicode_spaces_to_ascii(line));
  std::vector<std::string> toks;
  std::string w;
  while (is >> w) toks.push_back(w);
  return toks;
}

BleuStats& BleuStats::operator+=(const BleuStats& o) {
  for (int n = 0; n < 4; n++) correct[n] += o.correct[n], total[n] += o.total[n];
  sys_len += o.sys_len, ref_len += o.ref_len;
  return *this;
}

BleuStats sentence_bleu_stats(const std::string& hyp, const std::string& ref) {
  const std::vector<std::string> h = tokenize_13a(hyp), r = tokenize_13a(ref);
  BleuStats s;
  s.sys_len = (long long)h.size();
  s.ref_len = (long long)r.size();
  for (int n = 1; n <= 4; n++) {  // clipped matches: an n-gram counts at most as often as the reference has it
    std::map<std::vector<std::string>, int> rc, hc;
    for (size_t k = 0; k + n <= r.size(); k++) rc[std::vector<std::string>(r.begin() + k, r.begin() + k + n)]++;
    for (size_t k = 0; k + n <= h.size(); k++) hc[std::vector<std::string>(h.begin() + k, h.begin() + k + n)]++;
    for (auto& [g, c] : hc) {
      auto it = rc.find(g);
      if (it != rc.end()) s.correct[n - 1] += std::min(c, it->second);
    }
    s.total[n - 1] = std::max<long long>(0, (long long)h.size() - n + 1);
  }
  return s;
}

BleuScore bleu_from_stats(const BleuStats& st) {
  BleuScore b;
  b.sys_len = st.sys_len;
  b.ref_len = st.ref_len;
  const long long *correct = st.correct, *total = st.total;
  // sacreBLEU's: 1 when the hypotheses are at least as long (both empty too), 0 when they are empty
  b.brevity_penalty = b.sys_len >= b.ref_len ? 1.0
                      : b.sys_len > 0        ? std::exp(1.0 - (double)b.ref_len / (double)b.sys_len)
                                             : 0.0;
  // No n-gram of any order matches: 0, precisions 0 (sacreBLEU returns before smoothing, which would score it).
  if (correct[0] == 0 && correct[1] == 0 && correct[2] == 0 && correct[3] == 0) return b;
  // sacreBLEU "exp" smoothing: each zero-match order gets 100 / (2^k * total), k counting such orders.
  double smooth = 1, log_sum = 0;
  for (int n = 0; n < 4; n++) {
    if (total[n] == 0) {
      b.precisions[n] = 0;
      b.score = 0;
      log_sum = -INFINITY;
      continue;
    }
    if (correct[n] == 0) {
      smooth *= 2;
      b.precisions[n] = 100.0 / (smooth * (double)total[n]);
    } else {
      b.precisions[n] = 100.0 * (double)correct[n] / (double)total[n];
    }
    log_sum += std::log(b.precisions[n]);
  }
  b.score = std::isfinite(log_sum) ? b.brevity_penalty * std::exp(log_sum / 4) : 0.0;
  return b;
}

std::vector<BleuStats> sentence_bleu_stats(const std::vector<std::string>& hyps,
                                           const std::vector<std::string>& refs, const char* who) {
  skipgrad::check(hyps.size() == refs.size(), who, ": ", hyps.size(), " hypotheses but ", refs.size(),
                  " references");
  std::vector<BleuStats> out;
  out.reserve(hyps.size());
  for (size_t i = 0; i < hyps.size(); i++) out.push_back(sentence_bleu_stats(hyps[i], refs[i]));
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  BleuStats sum;
  for (const BleuStats& s : sentence_bleu_stats(hyps, refs, "corpus_bleu")) sum += s;
  return bleu_from_stats(sum);
}

std::string BleuScore::str() const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = %lld)",
                score, precisions[0], precisions[1], precisions[2], precisions[3], brevity_penalty,
                ref_len ? (double)sys_len / (double)ref_len : 0.0, sys_len, ref_len);
  return buf;
}

}  // namespace translate
