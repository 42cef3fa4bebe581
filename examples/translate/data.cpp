#include "data.h"

#include <unicode/rbnf.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "analysis/graph.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace translate {

using skipgrad::check;
using skipgrad::fail;

// RFC 3629's UTF-8 (skipgrad::utf8_sequence): no overlong forms (C0 AF), no surrogates (ED A0 80), nothing past
// U+10FFFF (F4 90, F5..FF).
bool valid_utf8(const std::string& s) {
  for (size_t i = 0, n; i < s.size(); i += n)
    if ((n = skipgrad::utf8_sequence(s, i)) == 0) return false;
  return true;
}

std::string squash_spaces(const std::string& s) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// ---------------------------------------------------------------- number words

namespace {
std::string spell(icu::RuleBasedNumberFormat& f, int64_t v) {
  icu::UnicodeString u;
  f.format((int64_t)v, u);
  std::string s;
  u.toUTF8String(s);
  // ICU marks German morpheme boundaries with soft hyphens (U+00AD, UTF-8 C2 AD): make them spaces.
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if ((unsigned char)s[i] == 0xC2 && i + 1 < s.size() && (unsigned char)s[i + 1] == 0xAD) {
      out += ' ';
      i++;
    } else {
      out += s[i];
    }
  }
  return squash_spaces(out);
}
}  // namespace

Splits make_number_corpus(int64_t count, uint64_t seed, int64_t max_value) {
  UErrorCode st = U_ZERO_ERROR;
  icu::RuleBasedNumberFormat de(icu::URBNF_SPELLOUT, icu::Locale("de"), st);
  icu::RuleBasedNumberFormat en(icu::URBNF_SPELLOUT, icu::Locale("en"), st);
  check(U_SUCCESS(st), "make_number_corpus", ": ICU spell-out unavailable: ", u_errorName(st));
  check(count > 0 && count <= max_value + 1, "make_number_corpus", ": cannot draw ", count, " distinct numbers in [0, ",
        max_value, "]");
  std::set<int64_t> seen;
  std::vector<int64_t> values;
  for (uint64_t c = 0; (int64_t)values.size() < count; c++) {
    // Mix magnitudes: uniform over the number of digits, then uniform within.
    uint64_t r = skipgrad::random_bits(seed, c);
    int digits = 1 + (int)(r % 6);
    int64_t hi = 1;
    for (int d = 0; d < digits; d++) hi *= 10;
    int64_t v = (int64_t)((r >> 8) % (uint64_t)std::min<int64_t>(hi, max_value + 1));
    if (seen.insert(v).second) values.push_back(v);
  }
  Splits s;
  for (size_t i = 0; i < values.size(); i++) {
    Pair p{spell(de, values[i]), spell(en, values[i])};
    uint64_t bucket = skipgrad::random_bits(seed ^ 0xabcdef, (uint64_t)values[i]) % 100;
    (bucket < 5 ? s.valid : bucket < 10 ? s.test : s.train).push_back(std::move(p));
  }
  return s;
}

// ---------------------------------------------------------------- the Ding dictionary

namespace {
std::vector<std::string> split_on(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    size_t k = s.find(sep, at);
    out.push_back(s.substr(at, k == std::string::npos ? std::string::npos : k - at));
    if (k == std::string::npos) break;
    at = k + sep.size();
  }
  return out;
}

// Removes {...} [...] (...) <...> annotations (nesting-aware) and tidies spaces and stray punctuation.
std::string strip_annotations(const std::string& s) {
  std::string out;
  int depth = 0;
  for (char c : s) {
    if (c == '{' || c == '[' || c == '(' || c == '<') { depth++; continue; }
    if (c == '}' || c == ']' || c == ')' || c == '>') { depth = std::max(0, depth - 1); continue; }
    if (depth == 0) out += c;
  }
  out = squash_spaces(out);
  while (!out.empty() && (out.back() == ',' || out.back() == ';' || out.back() == ' ')) out.pop_back();
  return out;
}

int count_tokens(const std::string& s) {
  std::istringstream is(s);
  std::string w;
  int n = 0;
  while (is >> w) n++;
  return n;
}

bool clean_enough(const std::string& s) {
  // Drop entries with leftover markup or placeholders ("etw.", "jdn.", "sb.", "sth.", "/", "...").
  for (const char* bad : {"/", "…", "...", "etw.", "jdm.", "jdn.", "jds.", "sb.", "sth.", "sb's", "~", "=", "\""})
    if (s.find(bad) != std::string::npos) return false;
  return true;
}
}  // namespace

Splits extract_ding(const std::string& path, int min_tokens, int max_tokens) {
  std::ifstream in(path);
  check(in.good(), "extract_ding", ": cannot read '", path, "' (install the Debian package trans-de-en)");
  Splits s;
  std::set<std::pair<std::string, std::string>> seen;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    line_no++;
    if (line.empty() || line[0] == '#') continue;
    size_t sep = line.find(" :: ");
    if (sep == std::string::npos) continue;
    std::vector<std::string> de = split_on(line.substr(0, sep), " | ");
    std::vector<std::string> en = split_on(line.substr(sep + 4), " | ");
    if (de.size() != en.size()) continue;
    // The split is decided per dictionary line, so all sub-entries of one head word stay together.
    uint64_t bucket = skipgrad::random_bits(0xD1A6, (uint64_t)std::hash<std::string>{}(de[0])) % 100;
    std::vector<Pair>& dst = bucket < 2 ? s.valid : bucket < 4 ? s.test : s.train;
    for (size_t i = 0; i < de.size(); i++) {
      // First synonym of each side: the aligned, most common reading.
      std::string d = strip_annotations(split_on(de[i], "; ")[0]);
      std::string e = strip_annotations(split_on(en[i], "; ")[0]);
      if (d.empty() || e.empty() || !clean_enough(d) || !clean_enough(e)) continue;
      int nd = count_tokens(d), ne = count_tokens(e);
      if (nd < min_tokens || nd > max_tokens || ne < min_tokens || ne > max_tokens) continue;
      if (!seen.insert({d, e}).second) continue;
      dst.push_back({d, e});
    }
  }
  // A phrase on two dictionary lines ("die Fassung verlieren" under two head words) can land in two splits: a
  // valid or test pair whose source the model trained on (or, for test, validated on) would score memory, not
  // translation, so it goes (~2 % of each).
  std::set<std::string> seen_sources;
  auto drop_seen = [&](std::vector<Pair>& split) {
    std::erase_if(split, [&](const Pair& p) { return seen_sources.count(p.src) > 0; });
  };
  for (const Pair& p : s.train) seen_sources.insert(p.src);
  drop_seen(s.valid);
  for (const Pair& p : s.valid) seen_sources.insert(p.src);
  drop_seen(s.test);
  return s;
}

// ---------------------------------------------------------------- TSV files

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> read_lines(const std::string& path, const std::string& who, const std::string& what) {
  std::error_code ec;
  check(!std::filesystem::is_directory(path, ec), who, ": ", what, " '", path, "' is a directory, not a text file");
  std::ifstream in(path);
  check(in.good(), who, ": cannot read ", what, " '", path, "'");
  return read_lines(in);
}

std::vector<Pair> read_tsv(const std::string& path, bool strict, std::vector<std::string>* problems) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "read_tsv", ": cannot open '", path, "'");
  std::vector<Pair> out;
  std::string line;
  int64_t line_no = 0;
  auto bad = [&](const std::string& why) {
    std::string msg = path + ":" + std::to_string(line_no) + ": " + why;
    if (strict) fail("read_tsv", ": ", msg);
    if (problems) problems->push_back(msg);
  };
  while (std::getline(in, line)) {
    line_no++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (!valid_utf8(line)) { bad("invalid UTF-8"); continue; }
    size_t tab = line.find('\t');
    if (tab == std::string::npos) { bad("no tab between source and target"); continue; }
    if (line.find('\t', tab + 1) != std::string::npos) { bad("more than one tab"); continue; }  // before squashing
    std::string src = squash_spaces(line.substr(0, tab)), tgt = squash_spaces(line.substr(tab + 1));
    if (src.empty() || tgt.empty()) { bad(src.empty() ? "empty source" : "empty target"); continue; }
    out.push_back({src, tgt});
  }
  return out;
}

void write_tsv(const std::string& path, const std::vector<Pair>& pairs) {
  std::string text;
  for (const Pair& p : pairs) text += p.src + '\t' + p.tgt + '\n';
  skipgrad::write_file_atomic(path, text);  // a temporary of this process, renamed: two runs may prepare at once
}

}  // namespace translate
