// Parallel corpora for the translation example: the Ding German-English dictionary (Debian `trans-de-en`),
// a German→English number-words smoke corpus made with ICU's rule-based spell-out, and a loader for any UTF-8
// `source<TAB>target` file.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace translate {

struct Pair {
  std::string src, tgt;
};

struct Splits {
  std::vector<Pair> train, valid, test;
};

// Number words: "ein und neunzig tausend vier hundert dreißig" -> "ninety-one thousand four hundred thirty".
// `count` distinct numbers drawn deterministically from `seed`, split 90/5/5.
Splits make_number_corpus(int64_t count, uint64_t seed, int64_t max_value = 999999);

// The Ding dictionary (`German :: English` per line, ` | ` separates aligned sub-entries, `;` synonyms,
// `{} [] () <>` annotations). Keeps cleaned aligned pairs of min_tokens..max_tokens tokens a side, dedupes, and splits
// by dictionary line (inflections of one head word never straddle splits): about 2% valid, 2% test.
Splits extract_ding(const std::string& path = "/usr/share/trans/de-en", int min_tokens = 3, int max_tokens = 20);

// Reads `source<TAB>target` lines. Malformed lines (no tab, invalid UTF-8, an empty side) are reported as
// "file:line: reason" in `problems` and skipped; with strict = true the first one throws skipgrad::Error.
std::vector<Pair> read_tsv(const std::string& path, bool strict, std::vector<std::string>* problems = nullptr);
// A stream's lines, or a text file's (`translate`'s input, hypotheses and references). A path that is a folder or
// cannot be opened is an Error naming `who`, `what` and the path.
std::vector<std::string> read_lines(std::istream& in);
std::vector<std::string> read_lines(const std::string& path, const std::string& who, const std::string& what);
// Writes pairs atomically (temp file + rename).
void write_tsv(const std::string& path, const std::vector<Pair>& pairs);

bool valid_utf8(const std::string& s);
// Collapses runs of whitespace to one space and trims.
std::string squash_spaces(const std::string& s);

}  // namespace translate
