#include "nn/name_patterns.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "tensor/error.h"

namespace skipgrad::nn {

PatternValues parse_pattern_values(const std::string& text, const char* who, const char* value_name,
                                   const char* example) {
  PatternValues at;
  if (text.empty()) return at;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string entry = text.substr(start, comma - start);
    const size_t eq = entry.rfind('=');  // (a pattern may hold '=': the number is after the last)
    double value = NAN;
    size_t used = 0;
    if (eq != std::string::npos && eq > 0 && eq + 1 < entry.size()) {
      try {
        value = std::stod(entry.substr(eq + 1), &used);
      } catch (const std::exception&) {
        used = 0;
      }
    }
    check(used > 0 && eq + 1 + used == entry.size(), who, ": '", entry, "' in '", text, "' is not PATTERN=",
          value_name, " (a name pattern, '*' and '?' allowed, and a number: ", example, ")");
    at.emplace_back(entry.substr(0, eq), value);
    start = comma + 1;
  }
  return at;
}

std::string pattern_values_text(const PatternValues& at) {
  std::string s;
  for (const auto& [pattern, value] : at) s += (s.empty() ? "" : ",") + pattern + "=" + number_str(value);
  return s;
}

bool name_matches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

}  // namespace skipgrad::nn
