// Comma-separated lists on the command lines of the examples and benchmarks: "pre_ln,post_ln" and "3,6,12", the
// numbers checked, with an error that names the option (skipgrad-translate sweep --depths, skipgrad-graph report
// --seeds, bench/vs_libtorch --threads).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace cli_lists {

// "a, b,,c" -> {"a", "b", "c"}: items trimmed of spaces and tabs, empty ones skipped
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    const size_t first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    if (first != std::string::npos) out.push_back(item.substr(first, last - first + 1));
  }
  return out;
}

// Refuses an item listed twice: "pre_ln,pre_ln" would train one run twice into one folder and list it twice.
template <class T>
void check_distinct(const std::vector<T>& items, const char* option, const std::string& s) {
  for (size_t i = 0; i < items.size(); i++)
    for (size_t j = 0; j < i; j++)
      skipgrad::check(!(items[i] == items[j]), option, ": '", items[i], "' is listed twice in '", s, "'");
}

// "pre_ln,post_ln" -> {"pre_ln", "post_ln"}: at least one name, none twice; else a skipgrad::Error naming the option.
inline std::vector<std::string> split_names(const std::string& s, const char* option) {
  std::vector<std::string> out = split_list(s);
  skipgrad::check(!out.empty(), option, ": no names in '", s, "'");
  check_distinct(out, option, s);
  return out;
}

// The items of s, each read by parse(item, value), which says whether the whole item is a valid value (an exception
// counts as no): at least one item, none twice; else a skipgrad::Error naming the option, the item and the list, and
// `what` an item must be.
template <class T, class Parse>
std::vector<T> split_values(const std::string& s, const char* option, const std::string& what, Parse parse) {
  std::vector<T> out;
  for (const std::string& item : split_list(s)) {
    T v{};
    bool ok = false;
    try {
      ok = parse(item, v);
    } catch (const std::exception&) {  // not a number, or out of its type's range
    }
    skipgrad::check(ok, option, ": '", item, "' in '", s, "' is not ", what);
    out.push_back(v);
  }
  skipgrad::check(!out.empty(), option, ": no values in '", s, "'");
  check_distinct(out, option, s);
  return out;
}

// "3,6,12" -> {3, 6, 12}: at least one item, none twice, each a whole number >= lo that fits Int; else a
// skipgrad::Error naming the option, the item and the list.
template <class Int>
std::vector<Int> split_numbers(const std::string& s, const char* option, Int lo) {
  const std::string what = "a whole number from " + std::to_string(lo) + " up";
  return split_values<Int>(s, option, what, [lo](const std::string& item, Int& out) {
    size_t used = 0;
    const long long v = std::stoll(item, &used);
    const bool fits = v < 0 || (unsigned long long)v <= (unsigned long long)std::numeric_limits<Int>::max();
    out = (Int)v;
    return used == item.size() && v >= (long long)lo && fits;
  });
}

// "5e-4,1e-3" -> {0.0005, 0.001}: at least one item, none twice, each a finite number > 0; else a skipgrad::Error
// naming the option, the item and the list.
inline std::vector<double> split_positive_numbers(const std::string& s, const char* option) {
  return split_values<double>(s, option, "a number > 0", [](const std::string& item, double& out) {
    size_t used = 0;
    out = std::stod(item, &used);
    return used == item.size() && std::isfinite(out) && out > 0;
  });
}

}  // namespace cli_lists
