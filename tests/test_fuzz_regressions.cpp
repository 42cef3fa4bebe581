// Regression tests for what fuzzing the file parsers found (fuzz/, docs/reliability.md): each input that crashed
// or reached undefined behaviour now throws skipgrad::Error with a clear message. The seed corpora are replayed
// too, so every committed fuzz input stays a test of the normal suite.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "analysis/graph.h"
#include "nn/checkpoint.h"
#include "test_util.h"

// The translation example's readers exist only when the examples are built (its include folder is then on the
// path); without them those cases are left out.
#if __has_include("config_json.h")
#include "config_json.h"
#include "data.h"
#define SKIPGRAD_TEST_TRANSLATE 1
#endif

namespace {
using namespace skipgrad;
namespace fs = std::filesystem;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Every file of fuzz/corpus/<target>/, by name.
std::vector<fs::path> corpus(const std::string& target) {
  std::vector<fs::path> out;
  for (auto& e : fs::directory_iterator(fs::path(SKIPGRAD_SOURCE_DIR) / "fuzz" / "corpus" / target))
    if (e.is_regular_file()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// A safetensors file: 8-byte little-endian header length, the header, the data.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// Runs f and reports whether it threw skipgrad::Error (any other exception fails the test).
template <class F>
bool throws_error(F&& f) {
  try {
    f();
  } catch (const Error&) {
    return true;
  }
  return false;
}
}  // namespace

TEST_SUITE("fuzz_regressions") {
  TEST_CASE("safetensors seed corpus: every file loads or throws Error") {
    auto files = corpus("safetensors");
    REQUIRE(files.size() >= 5);
    int loaded = 0;
    for (const fs::path& p : files) {
      INFO(p.filename().string());
      if (!throws_error([&] { nn::parse_safetensors(read_bytes(p), p.string()); })) loaded++;
    }
    CHECK(loaded >= 3);  // one_f32, mixed, no_checksum, only_metadata
  }

  TEST_CASE("safetensors: a shape with a zero size and huge others is an Error, not a stride overflow") {
    // [0, 2^40, 2^40] has no elements, so its data_offsets [0, 0] fit, but its strides overflow int64 (UBSan:
    // "signed integer overflow" in contiguous_strides).
    const std::string file = safetensors_bytes(
        R"({"a": {"dtype": "F32", "shape": [0, 1099511627776, 1099511627776], "data_offsets": [0, 0]}})");
    CHECK_THROWS_WITH_ALL(nn::parse_safetensors(file, "huge.safetensors"), "huge.safetensors", "tensor 'a'",
                          "too large");
    // A shape that fits still loads.
    auto ok = nn::parse_safetensors(
        safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [0, 1099511627776], "data_offsets": [0, 0]}})"));
    CHECK(ok.find("a").shape() == Shape{0, int64_t(1) << 40});
  }

  TEST_CASE("safetensors: a data checksum alone loads (files before 2026-12-05); beside a damaged header key, refused") {
    // FNV-1a 64 of no bytes: the data checksum of a file without tensors
    const std::string old_style = R"({"__metadata__": {"skipgrad.checksum": "cbf29ce484222325", "step": "3"}})";
    CHECK(nn::parse_safetensors(safetensors_bytes(old_style), "old.st").metadata.at("step") == "3");
    // one flipped byte in the header checksum's name would otherwise leave the header unchecked ("step" edited)
    const std::string damaged = R"({"__metadata__": {"skipgrad.checksum": "cbf29ce484222325", "step": "9", )"
                                R"("skipgrad.headeR_checksum": "0123456789abcdef"}})";
    CHECK_THROWS_WITH_ALL(nn::parse_safetensors(safetensors_bytes(damaged), "damaged.st"), "damaged.st",
                          "corrupted", "skipgrad.headeR_checksum", "damaged byte");
    // also where the damaged byte is a backslash that JSON reads as an escape with the next byte (skip\rad: 23 bytes)
    const std::string escaped = R"({"__metadata__": {"skipgrad.checksum": "cbf29ce484222325", "step": "9", )"
                                R"("skip\rad.header_checksum": "0123456789abcdef"}})";
    CHECK_THROWS_WITH_ALL(nn::parse_safetensors(safetensors_bytes(escaped), "escaped.st"), "corrupted",
                          "damaged byte");
    // a value that merely mentions a near spelling is not a key: such an old file loads
    const std::string mention = R"({"__metadata__": {"skipgrad.checksum": "cbf29ce484222325", )"
                                R"("note": "renamed -> skipgrad.header_checksuM"}})";
    CHECK(nn::parse_safetensors(safetensors_bytes(mention), "mention.st").metadata.count("note") == 1);
  }

  TEST_CASE("Tensor::empty: shapes whose strides or byte count would overflow are an Error") {
    const int64_t big = int64_t(1) << 40;
    CHECK_THROWS_WITH_ALL(Tensor::empty({0, big, big}), "empty", "too large");
    CHECK_THROWS_WITH_ALL(Tensor::empty({int64_t(1) << 62}, DType::F64), "empty", "too large");
    CHECK(Tensor::empty({0, big}).numel() == 0);
  }

  TEST_CASE("graph json seed corpus: every file parses or throws Error") {
    auto files = corpus("graph_json");
    REQUIRE(files.size() >= 3);
    for (const fs::path& p : files) {
      INFO(p.filename().string());
      throws_error([&] { Graph::from_json(read_bytes(p)); });
    }
  }

  TEST_CASE("Graph::to_dot: a node whose scope is not a prefix of its name is drawn, not std::out_of_range") {
    // Found by fuzz_graph_json: scope "nullenc.0" is longer than the name "enc.0.mul", and node_decl took
    // name.substr(scope.size() + 1).
    Graph g;
    GraphNode n;
    n.id = 0;
    n.kind = "input";
    n.op = "input";
    n.family = "leaf";
    n.name = "enc.0.mul";
    n.scope = "nullenc.0";
    n.shape = {2, 3};
    n.dtype = "float32";
    g.nodes.push_back(n);
    std::string dot;
    REQUIRE_NOTHROW(dot = g.to_dot());
    CHECK(dot.find("enc.0.mul") != std::string::npos);
    // The same through JSON, as the fuzzer found it.
    Graph back = Graph::from_json(read_bytes(fs::path(SKIPGRAD_SOURCE_DIR) / "fuzz/corpus/graph_json/scope_not_prefix.json"));
    CHECK_NOTHROW(back.to_dot());
  }

#ifdef SKIPGRAD_TEST_TRANSLATE
  TEST_CASE("tsv and config seed corpora: every file reads or throws Error") {
    for (const fs::path& p : corpus("tsv")) {
      INFO(p.filename().string());
      std::vector<std::string> problems;
      CHECK_NOTHROW(translate::read_tsv(p.string(), /*strict=*/false, &problems));
      CHECK(throws_error([&] { translate::read_tsv(p.string(), /*strict=*/true); }) == !problems.empty());
    }
    for (const fs::path& p : corpus("config_json")) {
      INFO(p.filename().string());
      throws_error([&] { translate::config_from_json(read_bytes(p)); });
    }
  }

  TEST_CASE("config_from_json: a float too large for an integer field is an Error, not undefined behaviour") {
    // nlohmann's conversion of 1e300 to int64_t is undefined behaviour (UBSan: "outside the range of
    // representable values"); integer fields must now be JSON integers.
    const std::string good = translate::config_to_json(
        [] { nn::TransformerConfig c; c.vocab = 64; c.d_model = 16; c.heads = 2; c.d_ff = 32; c.pad_id = 0; return c; }());
    CHECK_NOTHROW(translate::config_from_json(good));
    nlohmann::json lm = nlohmann::json::parse(good);
    lm["enc_layers"] = 0;  // a decoder-only model's config: valid, but not a translation model
    CHECK_THROWS_WITH_ALL(translate::config_from_json(lm.dump()), "config_from_json", "decoder-only",
                          "translation needs an encoder");
    for (const char* field : {"vocab", "d_model", "heads", "max_positions", "pad_id", "mixln_post_layers"}) {
      nlohmann::json j = nlohmann::json::parse(good);
      for (double bad : {1e300, -1e300, 9.3e18, 2.5}) {
        j[field] = bad;
        INFO(field << " = " << bad);
        CHECK_THROWS_WITH_ALL(translate::config_from_json(j.dump()), "config_from_json", field, "must be an integer");
      }
      j[field] = 18446744073709551615ull;  // above int64's range
      CHECK_THROWS_WITH_ALL(translate::config_from_json(j.dump()), "must be an integer");
    }
  }
#endif
}
