// What the example programs (skipgrad-translate, skipgrad-graph) share on their command lines: range checks for
// their number options, said plainly ("--steps: must be at least 0, got -1"; CLI11's own range check prints the
// double range up to 1.8e308, and its conversion wraps or caps a value out of the option's type without a word),
// and the exit status that counts a failed write to stdout (with_stdout_checked).
#pragma once
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>

namespace cli_checks {

// The help of options that skipgrad-translate, skipgrad-lm and skipgrad-graph share word for word.
inline constexpr const char* kDytAlphaAtHelp =
    "with --norm dyt: PATTERN=ALPHA0,... another init for the DyTs whose names match (\"*attn_norm=0.8,"
    "*.final_norm=0.2\"; a later pattern wins)";
inline constexpr const char* kLrScaleAtHelp =
    "PATTERN=SCALE,...: the parameters whose names match learn at --lr x SCALE (\"*.alpha=10\": DyT's alpha 10x "
    "faster; \"enc.*=0.5\"; a later pattern wins)";

// A program's exit status once stdout is flushed: a result printed to a full disk, past a file-size limit or into
// a closed descriptor makes a failure (2, or the program's own failure status), never a silent exit 0.
inline int with_stdout_checked(const char* program, int status) {
  errno = 0;
  std::cout.flush();  // (synced with stdio: std::cout writes through stdout)
  if (std::cout && std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
  std::fprintf(stderr, "%s: error: writing the output to stdout failed%s%s\n", program, errno ? ": " : "",
               errno ? std::strerror(errno) : "");
  return status ? status : 2;
}

// `ok` says whether a value is in the range, `range` how to say it. Values past `limit` (int64's by default) or
// NaN are out of range.
inline CLI::Validator number_that(const std::string& range, std::function<bool(double)> ok, double limit = 9.2e18) {
  return CLI::Validator(
      [range, ok, limit](std::string& text) -> std::string {
        double v = 0;
        try {
          v = std::stod(text);
        } catch (const std::out_of_range&) {
          return "'" + text + "' is out of range";
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        if (!(std::fabs(v) <= limit)) return "'" + text + "' is out of range";
        return ok(v) ? std::string() : "must be " + range + ", got " + text;
      },
      range);
}
inline CLI::Validator at_least(long long lo) {
  return number_that("at least " + std::to_string(lo), [lo](double v) { return v >= (double)lo; });
}
inline CLI::Validator in_range(long long lo, long long hi) {
  return number_that("in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                     [lo, hi](double v) { return v >= (double)lo && v <= (double)hi; });
}
// A seed: a whole number from 0 to 2^64 - 1, read as one (as a double, 2^64 rounds down into range).
inline CLI::Validator seed_range() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
          return "must be a whole number from 0 to 18446744073709551615, got " + text;
        errno = 0;
        (void)std::strtoull(text.c_str(), nullptr, 10);
        return errno == ERANGE ? "'" + text + "' is out of range (at most 18446744073709551615)" : std::string();
      },
      "0 to 2^64-1");
}

}  // namespace cli_checks
