// The translation example's data pipeline and BLEU (examples/translate/).
#include <cstdio>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "batches.h"
#include "bleu.h"
#include "config_json.h"
#include "data.h"
#include "test_util.h"

using namespace sgtest;
using namespace translate;

TEST_SUITE("translate") {
  TEST_CASE("corpus BLEU matches sacreBLEU on the committed reference cases") {
    std::ifstream in(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/bleu_reference.json");
    REQUIRE(in.good());
    nlohmann::json j = nlohmann::json::parse(in);
    int n = 0;
    for (auto& c : j["cases"]) {
      std::vector<std::string> hyp = c["hyp"], ref = c["ref"];
      BleuScore b = corpus_bleu(hyp, ref);
      INFO("case " << n << ": " << b.str() << " vs sacreBLEU " << c["score"].get<double>());
      CHECK(b.score == doctest::Approx(c["score"].get<double>()).epsilon(1e-9));
      CHECK(b.sys_len == c["sys_len"].get<long long>());
      CHECK(b.ref_len == c["ref_len"].get<long long>());
      for (int k = 0; k < 4; k++) CHECK(b.precisions[k] == doctest::Approx(c["precisions"][k].get<double>()).epsilon(1e-9));
      n++;
    }
    CHECK(n >= 10);
  }

  TEST_CASE("13a tokenisation splits punctuation but keeps numbers and apostrophes") {
    auto t = tokenize_13a("Hello, world! It's 3.5 km.");
    std::vector<std::string> want = {"Hello", ",", "world", "!", "It's", "3.5", "km", "."};  // as sacreBLEU 2.6
    CHECK(t == want);
  }

  TEST_CASE("number corpus: ICU spell-out with morpheme spaces, deterministic, disjoint splits") {
    Splits a = make_number_corpus(500, 3), b = make_number_corpus(500, 3);
    REQUIRE(a.train.size() == b.train.size());
    CHECK(a.train[0].src == b.train[0].src);
    CHECK(a.train.size() + a.valid.size() + a.test.size() == 500);
    bool found = false;
    for (auto& p : a.train)
      if (p.tgt == "twenty-one") { CHECK(p.src == "ein und zwanzig"); found = true; }
    (void)found;
    for (auto& p : a.train) {
      CHECK(valid_utf8(p.src));
      CHECK(p.src.find("\xC2\xAD") == std::string::npos);  // no soft hyphen left
    }
  }

  TEST_CASE("Ding dictionary extraction (when trans-de-en is installed)") {
    std::ifstream probe("/usr/share/trans/de-en");
    if (!probe.good()) {
      MESSAGE("skipped: /usr/share/trans/de-en missing (scripts/setup.sh installs trans-de-en)");
      return;
    }
    Splits s = extract_ding();
    CHECK(s.train.size() > 30000);
    CHECK(s.valid.size() > 300);
    CHECK(s.test.size() > 300);
    for (auto& p : s.valid) {
      CHECK(p.src.find('{') == std::string::npos);
      CHECK(p.tgt.find('[') == std::string::npos);
    }
    // no valid or test source was trained on, and no test source validated on
    std::set<std::string> sources;
    for (auto& p : s.train) sources.insert(p.src);
    size_t seen = 0;
    for (auto& p : s.valid) seen += sources.count(p.src);
    for (auto& p : s.valid) sources.insert(p.src);
    for (auto& p : s.test) seen += sources.count(p.src);
    CHECK(seen == 0);
  }

  TEST_CASE("TSV loader reports malformed lines with file and line, strict mode throws") {
    const std::string path = "/tmp/skipgrad_test_corpus.tsv";
    {
      std::ofstream out(path, std::ios::binary);
      out << "Hallo Welt\thello world\n"
          << "no tab here\n"
          << "\tempty source\n"
          << "bad \xff utf8\tx\n"
          << "gut\tgood\n"
          << "eins zwei\tone two\t0.93\n";  // a third column is not glued onto the target
    }
    std::vector<std::string> problems;
    auto pairs = read_tsv(path, false, &problems);
    CHECK(pairs.size() == 2);
    REQUIRE(problems.size() == 4);
    CHECK(problems[0].find(path + ":2: no tab") != std::string::npos);
    CHECK(problems[1].find(":3: empty source") != std::string::npos);
    CHECK(problems[2].find(":4: invalid UTF-8") != std::string::npos);
    CHECK(problems[3].find(":6: more than one tab") != std::string::npos);
    CHECK_THROWS_WITH_ALL(read_tsv(path, true), "read_tsv", ":2: no tab");
    // RFC 3629: the longest forms of each length pass; overlong forms, surrogates and code points past U+10FFFF fail
    for (const char* ok : {"a", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xef\xbf\xbf",
                           "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "Gr\xc3\xbc\xc3\x9f" "e"})
      CHECK(valid_utf8(ok));
    for (const char* bad : {"\xc0\xaf", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf0\x8f\xbf\xbf",
                            "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xc3"})
      CHECK_FALSE(valid_utf8(bad));
    write_tsv(path, pairs);
    CHECK(read_tsv(path, true).size() == 2);
    std::remove(path.c_str());
  }

  TEST_CASE("token-budget batches cover every example once and respect the budget") {
    std::vector<Example> ex;
    for (int i = 0; i < 200; i++) ex.push_back({std::vector<int>(1 + i % 17, 5), std::vector<int>(1 + (i * 7) % 13, 6)});
    auto batches = make_batches(ex, 64, 1, true);
    std::vector<int> seen(ex.size(), 0);
    for (auto& b : batches) {
      int64_t mx = 0;
      for (int64_t i : b) { seen[i]++; mx = std::max<int64_t>(mx, std::max(ex[i].src.size(), ex[i].tgt.size() + 1)); }
      CHECK(mx * (int64_t)b.size() <= 64);
    }
    for (int s : seen) CHECK(s == 1);
    CHECK(make_batches(ex, 64, 1, true) == batches);  // same seed, same batches
    Batch b = collate(ex, batches[0]);
    CHECK(b.src.dtype() == DType::I64);
    CHECK(b.tgt_in.shape() == b.tgt_out.shape());
    auto tin = b.tgt_in.to_vector<int64_t>();
    CHECK(tin[0] == Vocab::kBos);
  }

  TEST_CASE("config JSON: the position encoding round-trips; a file from before it reads as sinusoidal") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    c.positions = nn::PositionEncoding::Rope;
    c.rope_theta = 500000;
    c.rope_dims = 8;
    const nn::TransformerConfig back = config_from_json(config_to_json(c));
    CHECK(back.positions == nn::PositionEncoding::Rope);
    CHECK(back.rope_theta == 500000);
    CHECK(back.rope_dims == 8);
    CHECK(config_differences(c, back).empty());
    nlohmann::json old = nlohmann::json::parse(config_to_json(tiny_transformer("pre_ln")));
    old.erase("positions");
    old.erase("rope_theta");
    old.erase("rope_dims");
    const nn::TransformerConfig sinusoidal = config_from_json(old.dump());
    CHECK(sinusoidal.positions == nn::PositionEncoding::Sinusoidal);
    CHECK(sinusoidal.rope_theta == 10000);
    old["positions"] = "alibi";
    CHECK(config_from_json(old.dump()).positions == nn::PositionEncoding::Alibi);
    old["positions"] = "t5";  // (without relative_buckets and relative_max_distance: T5's 32 and 128)
    const nn::TransformerConfig t5 = config_from_json(old.dump());
    CHECK(t5.positions == nn::PositionEncoding::T5);
    CHECK((t5.relative_buckets == 32 && t5.relative_max_distance == 128));
    old["relative_buckets"] = 8;
    old["relative_max_distance"] = 20;
    CHECK(config_from_json(config_to_json(config_from_json(old.dump()))).relative_max_distance == 20);
    old["positions"] = "xpos";
    CHECK_THROWS_WITH_ALL(config_from_json(old.dump()), "unknown position encoding 'xpos'");
    old["positions"] = "alibi";  // t5's options with another encoding: refused
    CHECK_THROWS_WITH_ALL(config_from_json(old.dump()), "relative_buckets 8 and relative_max_distance 20 are for "
                          "positions t5");
    old.erase("relative_buckets");
    old.erase("relative_max_distance");
    old["positions"] = "learned";
    old["rope_theta"] = 500000;  // another encoding's option: refused, as validate() refuses it
    CHECK_THROWS_WITH_ALL(config_from_json(old.dump()), "rope_theta 500000 is for positions rope");
  }

  TEST_CASE("config JSON: the topologies' own options round-trip; files from before them read as the defaults") {
    nn::TransformerConfig c = tiny_transformer("b2t");
    c.b2t_rescale = false;
    CHECK(!config_from_json(config_to_json(c)).b2t_rescale);
    nlohmann::json old = nlohmann::json::parse(config_to_json(c));
    old.erase("b2t_rescale");
    CHECK(config_from_json(old.dump()).b2t_rescale);
    old["b2t_rescale"] = "no";
    CHECK_THROWS_WITH_ALL(config_from_json(old.dump()), "config_from_json", "mistyped");
    old["b2t_rescale"] = false;
    old["topology"] = "post_ln";  // another topology's: read as the default (with_topology), as the others' options
    CHECK(config_from_json(old.dump()).b2t_rescale);
    c = tiny_transformer("layer_scale");  // and LayerScale's init
    c.layer_scale_init = 1e-4;
    CHECK(config_from_json(config_to_json(c)).layer_scale_init == 1e-4);
    old = nlohmann::json::parse(config_to_json(c));
    old.erase("layer_scale_init");
    CHECK(config_from_json(old.dump()).layer_scale_init == -1);
    c = tiny_transformer("normformer");  // and NormFormer's residual scaling
    c.normformer_scale_resids = true;
    CHECK(config_from_json(config_to_json(c)).normformer_scale_resids);
    old = nlohmann::json::parse(config_to_json(c));
    old.erase("normformer_scale_resids");
    CHECK(!config_from_json(old.dump()).normformer_scale_resids);
    c.normformer_fairseq_head_scale = true;  // and its fairseq HeadScale
    CHECK(config_from_json(config_to_json(c)).normformer_fairseq_head_scale);
    old = nlohmann::json::parse(config_to_json(c));
    old.erase("normformer_fairseq_head_scale");
    CHECK(!config_from_json(old.dump()).normformer_fairseq_head_scale);
  }
}
