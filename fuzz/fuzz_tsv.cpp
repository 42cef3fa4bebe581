// libFuzzer target: the parallel-corpus reader (translate::read_tsv). It reads a path, so each input is written
// to a per-process temporary file first. Lenient mode must never throw and must keep only clean pairs; strict
// mode must throw skipgrad::Error exactly when lenient mode reported a problem.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "data.h"
#include "tensor/error.h"

static const std::string& temp_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/skipgrad_fuzz_tsv." + std::to_string(::getpid()) + ".tsv";
  }();
  static const bool cleanup = std::atexit([] { std::remove(path.c_str()); }) == 0;
  (void)cleanup;
  return path;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = temp_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);

  std::vector<std::string> problems;
  std::vector<translate::Pair> pairs = translate::read_tsv(path, /*strict=*/false, &problems);
  for (const translate::Pair& p : pairs) {
    // What the reader keeps: valid UTF-8, no tab, no surrounding or doubled whitespace, neither side empty.
    if (p.src.empty() || p.tgt.empty()) std::abort();
    if (!translate::valid_utf8(p.src) || !translate::valid_utf8(p.tgt)) std::abort();
    if (p.src.find('\t') != std::string::npos || p.tgt.find('\t') != std::string::npos) std::abort();
    if (translate::squash_spaces(p.src) != p.src || translate::squash_spaces(p.tgt) != p.tgt) std::abort();
  }
  bool threw = false;
  try {
    translate::read_tsv(path, /*strict=*/true);
  } catch (const skipgrad::Error&) {
    threw = true;
  }
  if (threw != !problems.empty()) std::abort();
  return 0;
}
