// "PATTERN=VALUE,..." lists over module or parameter names: a shell pattern ('*', '?', '[...]'; fnmatch, where '*'
// also crosses dots) with a number, a later pattern winning where several match one name. The command lines'
// --dyt-alpha-at (TransformerConfig::dyt_alpha_at, DyT's α0 by position) and --lr-scale-at (lr_scale_groups: the
// learning rate by parameter) read them.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace skipgrad::nn {

using PatternValues = std::vector<std::pair<std::string, double>>;

// "a.*=0.2,*b=1" -> {{"a.*", 0.2}, {"*b", 1}} ("" -> none). An entry that is not PATTERN=NUMBER is an Error naming
// `who`, the entry, the text, and the form expected: "PATTERN=<value_name>" with `example`.
PatternValues parse_pattern_values(const std::string& text, const char* who, const char* value_name,
                                   const char* example);
// The text parse_pattern_values reads back ("a.*=0.2,*b=1"; numbers with their 17 digits where needed).
std::string pattern_values_text(const PatternValues& at);
// Whether `name` matches the shell pattern (fnmatch with no flags).
bool name_matches(const std::string& pattern, const std::string& name);

}  // namespace skipgrad::nn
