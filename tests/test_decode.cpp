// Incremental decoding (nn::Transformer::decode_step, cached keys/values) and the translation example's greedy,
// sampling and beam search on top of it (examples/translate/decode.*).
#include <algorithm>
#include <cmath>
#include <map>

#include "decode.h"
#include "test_util.h"

using namespace sgtest;
using namespace translate;

namespace {

// A small float64 model of any topology: 3 decoder layers (Mix-LN: the first Post-LN, the rest Pre-LN), dropout
// on (the model is put in eval mode), pad id 1 as fairseq.
std::unique_ptr<nn::Transformer> small_model(const std::string& topology, uint64_t seed = 5) {
  nn::TransformerConfig c;
  c.vocab = 13;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 24;
  c.enc_layers = 2;
  c.dec_layers = 3;
  c.dropout = 0.1;
  c.attn_dropout = 0.1;
  c.topology = topology;
  c.norm = topology == "hybrid_norm" || topology == "peri_ln" ? nn::NormKind::RMSNorm : nn::NormKind::LayerNorm;
  if (topology == "mix_ln") c.mixln_post_layers = 1;
  if (topology == "resi_dual") c.resi_dual_scale = 0.5;
  manual_seed(seed);
  auto m = std::make_unique<nn::Transformer>(c);
  m->to(DType::F64);
  m->eval();
  return m;
}

Tensor id_tensor(const std::vector<int64_t>& v, int64_t rows) {
  return Tensor::from_vector(v, {rows, (int64_t)v.size() / rows});
}

// Source with padding (pad id 1): lengths 6, 4, 2.
const std::vector<int64_t> kSrc = {4, 5, 6, 7, 8, 9,  //
                                   3, 10, 11, 12, 1, 1,
                                   5, 6, 1, 1, 1, 1};

// Σ_t log p(y_t | y_<t, x) by one full forward over bos + ids (+ eos when the hypothesis ended with it).
double forced_score(nn::Transformer& m, const std::vector<int64_t>& src_row, const std::vector<int>& ids,
                    bool ended_with_eos, const DecodeOptions& opt) {
  std::vector<int64_t> in{opt.bos}, out;
  for (int v : ids) in.push_back(v), out.push_back(v);
  if (ended_with_eos) out.push_back(opt.eos);
  in.resize(out.size());
  Tensor lp = log_softmax(m.forward(id_tensor(src_row, 1), id_tensor(in, 1)), -1);  // [1, T, V]
  auto v = lp.to_vector<double>();
  double s = 0;
  for (size_t t = 0; t < out.size(); t++) s += v[t * m.config().vocab + out[t]];
  return s;
}

// A bigram model for the search: p(v | previous token) from a table (unlisted tokens share what is left; an
// unlisted previous token means eos with p 0.9).
struct Bigram : Stepper {
  std::map<int64_t, std::vector<std::pair<int64_t, double>>> table;
  explicit Bigram(std::map<int64_t, std::vector<std::pair<int64_t, double>>> t) : table(std::move(t)) {}
  int64_t vocab() const override { return 16; }
  std::vector<double> step(const std::vector<int64_t>&, const std::vector<int64_t>& tokens) override {
    std::vector<double> lp;
    for (int64_t prev : tokens) {
      auto row = table.count(prev) ? table.at(prev) : std::vector<std::pair<int64_t, double>>{{3, 0.9}};
      double left = 1;
      for (auto [v, p] : row) left -= p;
      std::vector<double> p(16, std::max(left, 1e-9) / (16 - (double)row.size()));
      for (auto [v, q] : row) p[v] = q;
      for (double x : p) lp.push_back(std::log(x));
    }
    return lp;
  }
};

}  // namespace

TEST_SUITE("decode") {
  TEST_CASE("every topology: decode_step logits == the full forward at every position (float64)") {
    NoGradGuard ng;
    // Row 2 feeds pads after its fourth token: they must be masked and get the pad position, as in forward().
    const std::vector<int64_t> tgt = {2, 4, 5, 6, 7, 8, 9,  //
                                      2, 9, 8, 7, 6, 5, 4,
                                      2, 3, 4, 5, 1, 1, 7};
    const int64_t B = 3, T = 7;
    for (const auto& topo : nn::topology_names()) {
      INFO("topology " << topo);
      auto m = small_model(topo);
      Tensor src = id_tensor(kSrc, B);
      Tensor full = m->forward(src, id_tensor(tgt, B));  // [B, T, V]
      nn::DecoderState st = m->start_decoding(m->encode(src), m->padding_mask(src));
      for (int64_t t = 0; t < T; t++) {
        Tensor logits = m->decode_step(st, Tensor::from_vector<int64_t>({tgt[t], tgt[T + t], tgt[2 * T + t]}, {B}));
        REQUIRE(logits.shape() == Shape{B, 13});
        CHECK(max_abs_diff(logits, full.select(1, t).contiguous()) < 1e-12);
      }
      CHECK(st.steps() == T);
      CHECK(st.layers[0].self_attn.length() == T);
    }
  }

  TEST_CASE("reorder: gathered caches continue as the full forward on the gathered prefixes") {
    NoGradGuard ng;
    for (const char* topo : {"resi_dual", "hybrid_norm", "pre_ln"}) {
      INFO("topology " << topo);
      auto m = small_model(topo);
      Tensor src = id_tensor(kSrc, 3);
      nn::DecoderState st = m->start_decoding(m->encode(src), m->padding_mask(src));
      const std::vector<std::vector<int64_t>> prefix = {{2, 4, 5}, {2, 6, 7}, {2, 8, 9}};
      for (int t = 0; t < 3; t++)
        m->decode_step(st, Tensor::from_vector<int64_t>({prefix[0][t], prefix[1][t], prefix[2][t]}, {3}));
      // beams: row 2 first, row 0 twice, row 1 dropped; each continues with its own suffix
      const std::vector<int64_t> index = {2, 0, 0};
      st.reorder(index);
      CHECK(st.memory_rows == index);
      const std::vector<std::vector<int64_t>> suffix = {{10, 11}, {12, 3}, {4, 4}};
      Tensor last;
      for (int t = 0; t < 2; t++)
        last = m->decode_step(st, Tensor::from_vector<int64_t>({suffix[0][t], suffix[1][t], suffix[2][t]}, {3}));
      std::vector<int64_t> src_rows, tgt_rows;
      for (int r = 0; r < 3; r++) {
        src_rows.insert(src_rows.end(), kSrc.begin() + index[r] * 6, kSrc.begin() + index[r] * 6 + 6);
        tgt_rows.insert(tgt_rows.end(), prefix[index[r]].begin(), prefix[index[r]].end());
        tgt_rows.insert(tgt_rows.end(), suffix[r].begin(), suffix[r].end());
      }
      Tensor full = m->forward(id_tensor(src_rows, 3), id_tensor(tgt_rows, 3));
      CHECK(max_abs_diff(last, full.select(1, 4).contiguous()) < 1e-12);
      // a permutation within the same memory rows keeps the cross-attention cache as it is
      const Tensor cross_k = st.layers[0].cross_attn.k;
      st.reorder({0, 2, 1});
      CHECK(st.layers[0].cross_attn.k.shares_storage(cross_k));
    }
  }

  TEST_CASE("cached decoding == re-running the decoder (greedy and beam), every topology") {
    Tensor src = id_tensor(kSrc, 3);
    for (const auto& topo : nn::topology_names()) {
      INFO("topology " << topo);
      auto m = small_model(topo, 11);
      for (int beam : {1, 3}) {
        INFO("beam " << beam);
        DecodeOptions opt;
        opt.beam = beam;
        opt.bos = 2, opt.eos = 3, opt.pad = 1;
        opt.max_len_b = 4;
        auto cached = decode_batch(*m, src, opt);
        opt.device_pick = false;  // greedy: pick on the host from downloaded log-probabilities, the same
        auto host_pick = decode_batch(*m, src, opt);
        opt.use_cache = false;
        auto full = decode_batch(*m, src, opt);
        REQUIRE(cached.size() == 3);
        for (size_t b = 0; b < 3; b++) {
          CHECK(cached[b].ids == full[b].ids);
          CHECK(std::abs(cached[b].score - full[b].score) < 1e-10);
          CHECK(host_pick[b].ids == cached[b].ids);
          CHECK(host_pick[b].score == cached[b].score);
        }
      }
    }
  }

  TEST_CASE("decode_batch: a hypothesis stops at max_positions with a table's encoding; ALiBi has none to stop at") {
    for (nn::PositionEncoding p : {nn::PositionEncoding::Sinusoidal, nn::PositionEncoding::Alibi}) {
      INFO(nn::position_encoding_name(p));
      nn::TransformerConfig c;
      c.vocab = 13;
      c.d_model = 16;
      c.heads = 2;
      c.d_ff = 24;
      c.enc_layers = c.dec_layers = 2;
      c.dropout = c.attn_dropout = c.act_dropout = 0;
      c.max_positions = 4;
      c.positions = p;
      manual_seed(21);
      nn::Transformer m(c);
      m.to(DType::F64);
      m.eval();
      {  // eos's logit is y·E[eos] = 0, below the best of the other 12 at every step: no hypothesis ends early
        NoGradGuard no_grad;
        m.src_embed->weight.select(0, 3).copy_(Tensor::zeros({16}, DType::F64));
      }
      DecodeOptions opt;
      opt.beam = 1;
      opt.bos = 2, opt.eos = 3, opt.pad = 1;
      opt.max_len_a = 0;
      opt.max_len_b = 8;
      const std::vector<Hypothesis> h = decode_batch(m, id_tensor({4, 5, 6}, 1), opt);
      REQUIRE(h.size() == 1);
      // max_len = min(a·|src| + b, the positions): 4 tokens with the table (the last is never fed), 8 with ALiBi
      CHECK(h[0].ids.size() == (p == nn::PositionEncoding::Alibi ? 8u : 4u));
    }
  }

  TEST_CASE("beam 1 == greedy; reported scores are the model's forced-decoding scores") {
    Tensor src = id_tensor(kSrc, 3);
    for (const char* topo : {"post_ln", "resi_dual", "deep_norm"}) {
      INFO("topology " << topo);
      auto m = small_model(topo, 12);
      DecodeOptions opt;
      opt.bos = 2, opt.eos = 3, opt.pad = 1;
      opt.max_len_b = 6;
      opt.beam = 0;  // greedy
      auto greedy = decode_batch(*m, src, opt);
      opt.beam = 1;
      auto beam1 = decode_batch(*m, src, opt);
      opt.beam = 4;
      auto beam4 = decode_batch(*m, src, opt);
      NoGradGuard ng;
      for (size_t b = 0; b < 3; b++) {
        CHECK(greedy[b].ids == beam1[b].ids);
        CHECK(greedy[b].score == beam1[b].score);
        const std::vector<int64_t> row(kSrc.begin() + b * 6, kSrc.begin() + b * 6 + 6);
        const int64_t max_len = (int64_t)(1.2 * (6 - 2 * (int64_t)b)) + opt.max_len_b;
        for (const Hypothesis* h : {&greedy[b], &beam4[b]}) {
          const bool eos = (int64_t)h->ids.size() < max_len;  // shorter than the limit: it stopped at eos
          CHECK(std::abs(forced_score(*m, row, h->ids, eos, opt) - h->score) < 1e-10);
        }
      }
    }
  }

  TEST_CASE("beam search finds a better sequence than greedy on a constructed model") {
    // A bigram model over 16 tokens (0 pad, 2 bos, 3 eos): after bos, A=4 has p 0.5 and B=5 p 0.4; after A the
    // mass spreads over ten fillers (0.099 each) and eos (0.01); after B or a filler, eos has p 0.9.
    // Greedy: A, filler, eos: 0.5·0.099·0.9 = 0.045. Best: B, eos: 0.4·0.9 = 0.36.
    Bigram model({{2, {{4, 0.5}, {5, 0.4}, {6, 0.01}, {7, 0.01}}},
                  {4, {{3, 0.01}, {6, 0.099}, {7, 0.099}, {8, 0.099}}},
                  {5, {{3, 0.9}}},
                  {6, {{3, 0.9}}}});
    DecodeOptions opt;
    opt.pad = 0, opt.bos = 2, opt.eos = 3;
    const std::vector<int64_t> max_len = {10, 10};
    auto greedy = search(model, max_len, opt);
    CHECK(greedy[0].ids == std::vector<int>{4, 6});
    CHECK(greedy[0].score == doctest::Approx(std::log(0.5 * 0.099 * 0.9)));
    opt.beam = 2;
    auto beam = search(model, max_len, opt);
    for (const Hypothesis& h : beam) {
      CHECK(h.ids == std::vector<int>{5});
      CHECK(h.score == doctest::Approx(std::log(0.4 * 0.9)));
      CHECK(h.score > greedy[0].score);
    }
  }

  TEST_CASE("beam search goes on while a live hypothesis ranks above the finished ones") {
    // After bos: eos 0.35, A=4 0.33, B=5 0.32; after A or B: eos 0.45, C=6 0.55; after C: eos 0.95. With beam 2,
    // step 2 finishes "A eos" (0.1485, per token ln(0.1485)/2 = -0.95) as the second finished hypothesis (after
    // "eos", -1.05), where fairseq would stop; "A C" (0.1815, -0.85 at its length) still leads and ends as
    // "A C eos" (0.172, -0.59).
    Bigram model({{2, {{3, 0.35}, {4, 0.33}, {5, 0.32}}}, {4, {{3, 0.45}, {6, 0.55}}}, {5, {{3, 0.45}, {6, 0.55}}},
                  {6, {{3, 0.95}}}});
    DecodeOptions opt;
    opt.pad = 0, opt.bos = 2, opt.eos = 3, opt.beam = 2;
    auto beam = search(model, {10}, opt);
    CHECK(beam[0].ids == std::vector<int>{4, 6});
    CHECK(beam[0].score == doctest::Approx(std::log(0.33 * 0.55 * 0.95)));
    opt.beam = 1;  // greedy: eos first
    CHECK(search(model, {10}, opt)[0].ids.empty());
  }

  TEST_CASE("sampling: a bigram model's first tokens follow the tempered distribution, cut by top-k and top-p") {
    // After bos: A=4 0.5, B=5 0.3, C=6 0.1, D=7 0.05; the 12 other tokens share 0.05, pad (0) and bos (2) among
    // them, which are never drawn: the distribution is renormalised over the 14 candidates.
    Bigram model({{2, {{4, 0.5}, {5, 0.3}, {6, 0.1}, {7, 0.05}}}});
    const int64_t n = 20000;
    const std::vector<int64_t> one_token(n, 1);  // each sentence emits one token
    auto frequencies = [&](DecodeOptions opt, uint64_t seed) {
      Generator gen(seed);
      opt.pad = 0, opt.bos = 2, opt.eos = 3, opt.sampling = true, opt.gen = &gen;
      std::vector<double> f(16, 0.0);
      int64_t bad_scores = 0;
      const std::vector<Hypothesis> drawn = search(model, one_token, opt);
      REQUIRE(std::all_of(drawn.begin(), drawn.end(), [](const Hypothesis& h) { return h.ids.size() <= 1; }));
      for (const Hypothesis& h : drawn) {
        const int v = h.ids.empty() ? 3 : h.ids[0];  // an empty hypothesis drew eos
        f[v] += 1.0 / n;
        const double p = v == 4 ? 0.5 : v == 5 ? 0.3 : v == 6 ? 0.1 : v == 7 ? 0.05 : 0.05 / 12;
        bad_scores += std::abs(h.score - std::log(p)) > 1e-12;  // the model's own log p, whatever the cut
      }
      CHECK(bad_scores == 0);
      return f;
    };
    // p_v ∝ q_v^(1/T) over the kept tokens
    auto expected = [](double inv_t, std::vector<int> kept) {
      std::vector<double> q(16, 0.05 / 12), e(16, 0.0);
      q[4] = 0.5, q[5] = 0.3, q[6] = 0.1, q[7] = 0.05;
      double total = 0;
      for (int v : kept) total += std::pow(q[v], inv_t);
      for (int v : kept) e[v] = std::pow(q[v], inv_t) / total;
      return e;
    };
    auto check_close = [&](const std::vector<double>& f, const std::vector<double>& e) {
      for (int v = 0; v < 16; v++) {
        CAPTURE(v);
        CHECK(std::abs(f[v] - e[v]) <= 4 * std::sqrt(e[v] * (1 - e[v]) / n) + 1e-12);  // 4 sigma; 0 stays 0
      }
    };
    const std::vector<int> candidates = {1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    DecodeOptions opt;
    check_close(frequencies(opt, 1), expected(1, candidates));
    opt.temperature = 0.5;
    check_close(frequencies(opt, 2), expected(2, candidates));
    opt.temperature = 1;
    opt.sampling_topk = 2;
    check_close(frequencies(opt, 3), expected(1, {4, 5}));
    opt.sampling_topk = 0;
    opt.sampling_topp = 0.7;  // A (0.504) and B (0.302) reach it; C would start past it
    check_close(frequencies(opt, 4), expected(1, {4, 5}));
    opt.sampling_topp = 0.85;  // the top 3 at temperature 2: 0.45, 0.35, 0.20; C starts at 0.80, under 0.85
    opt.sampling_topk = 3;
    opt.temperature = 2;
    check_close(frequencies(opt, 5), expected(0.5, {4, 5, 6}));
    // top-p measures what top-k leaves, renormalised: of A and B (0.625, 0.375), B starts at 0.625 >= 0.6 and is
    // cut; measured in the whole distribution it would start at 0.504 and stay
    opt.temperature = 1;
    opt.sampling_topk = 2;
    opt.sampling_topp = 0.6;
    check_close(frequencies(opt, 6), expected(1, {4}));
    // a seed repeats the draw, sentence by sentence
    Generator g1(5), g2(5);
    DecodeOptions o1 = opt, o2 = opt;
    o1.pad = o2.pad = 0, o1.bos = o2.bos = 2, o1.eos = o2.eos = 3, o1.sampling = o2.sampling = true;
    o1.sampling_topk = o2.sampling_topk = 0, o1.sampling_topp = o2.sampling_topp = 1;
    o1.gen = &g1, o2.gen = &g2;
    const auto first = search(model, one_token, o1), second = search(model, one_token, o2);
    bool same = true;
    for (int64_t b = 0; b < n; b++) same &= first[b].ids == second[b].ids;
    CHECK(same);
  }

  // A stepper whose first step gives exact probabilities (the rest of the vocabulary 0: log p = -inf) and eos after.
  struct Exact : Stepper {
    std::vector<double> first;  // p over the vocabulary at the first step
    int64_t vocab() const override { return (int64_t)first.size(); }
    std::vector<double> step(const std::vector<int64_t>&, const std::vector<int64_t>& tokens) override {
      std::vector<double> lp;
      for (int64_t prev : tokens)
        for (int64_t v = 0; v < vocab(); v++)
          lp.push_back(prev == 2 ? std::log(first[v]) : (v == 3 ? 0.0 : -INFINITY));
      return lp;
    }
  };

  TEST_CASE("sampling: the top-p boundary is exact; a flat vocabulary past 1024 tokens gets its whole nucleus") {
    const int64_t n = 20000;
    auto draw = [&](Stepper& model, double topp, uint64_t seed) {
      Generator gen(seed);
      DecodeOptions opt;
      opt.pad = 0, opt.bos = 2, opt.eos = 3, opt.sampling = true, opt.sampling_topp = topp, opt.gen = &gen;
      std::map<int, int64_t> count;
      for (const Hypothesis& h : search(model, std::vector<int64_t>(n, 1), opt)) count[h.ids.empty() ? 3 : h.ids[0]]++;
      return count;
    };
    // A 0.5, B 0.25, C 0.25: with p = 0.75, C starts exactly at 0.75 and is cut; A and B keep 2/3 and 1/3
    Exact exact;
    exact.first = std::vector<double>(8, 0.0);
    exact.first[4] = 0.5, exact.first[5] = 0.25, exact.first[6] = 0.25;
    auto c = draw(exact, 0.75, 1);
    CHECK(c.size() == 2);
    CHECK(std::abs(c[4] / double(n) - 2.0 / 3) < 4 * std::sqrt(2.0 / 9 / n));
    // 3000 tokens, the 2998 candidates equally likely: the nucleus of p = 0.9 is the first 2699 in index order
    // (ties sort by index), found past the first 1024 sorted columns
    Exact flat;
    flat.first = std::vector<double>(3000, 1.0 / 2998);
    flat.first[0] = flat.first[2] = 0;
    c = draw(flat, 0.9, 2);
    CHECK(c.rbegin()->first == 2700);  // the last column kept: token 2700 (0 and 2 are not candidates)
    int64_t past_first = 0;
    for (auto [token, k] : c) past_first += token > 1024 ? k : 0;
    CHECK(std::abs(past_first / double(n) - 1676.0 / 2699) < 0.02);
    // one token with 0.95 of the mass: its nucleus is found in the first columns, and it is the only draw
    flat.first = std::vector<double>(3000, 0.05 / 2997);
    flat.first[0] = flat.first[2] = 0;
    flat.first[1500] = 0.95;
    c = draw(flat, 0.9, 3);
    CHECK(c.size() == 1);
    CHECK(c.count(1500) == 1);
  }

  TEST_CASE("sampling a model: seeded, on the device or the host alike, top-k 1 is greedy, model scores") {
    Tensor src = id_tensor(kSrc, 3);
    for (const char* topo : {"pre_ln", "hybrid_norm"}) {
      INFO("topology " << topo);
      auto m = small_model(topo, 13);
      DecodeOptions opt;
      opt.bos = 2, opt.eos = 3, opt.pad = 1;
      opt.max_len_b = 6;
      const auto greedy = decode_batch(*m, src, opt);
      opt.sampling = true;
      auto sample = [&](uint64_t seed, bool device_pick, bool use_cache) {
        Generator gen(seed);
        DecodeOptions o = opt;
        o.gen = &gen, o.device_pick = device_pick, o.use_cache = use_cache;
        return decode_batch(*m, src, o);
      };
      opt.temperature = 1.5;
      const auto drawn = sample(7, true, true);
      const auto again = sample(7, true, true), host = sample(7, false, true), full = sample(7, true, false);
      bool differs_from_greedy = false;
      NoGradGuard ng;
      for (size_t b = 0; b < 3; b++) {
        CHECK(again[b].ids == drawn[b].ids);
        CHECK(host[b].ids == drawn[b].ids);
        CHECK(host[b].score == drawn[b].score);
        CHECK(full[b].ids == drawn[b].ids);
        differs_from_greedy |= drawn[b].ids != greedy[b].ids;
        const std::vector<int64_t> row(kSrc.begin() + b * 6, kSrc.begin() + b * 6 + 6);
        const int64_t max_len = (int64_t)(1.2 * (6 - 2 * (int64_t)b)) + opt.max_len_b;
        const bool eos = (int64_t)drawn[b].ids.size() < max_len;
        CHECK(std::abs(forced_score(*m, row, drawn[b].ids, eos, opt) - drawn[b].score) < 1e-10);
      }
      CHECK(differs_from_greedy);  // (a small random model at temperature 1.5: far from deterministic)
      opt.sampling_topk = 1;  // only the best is left to draw
      const auto top1 = sample(8, true, true);
      for (size_t b = 0; b < 3; b++) {
        CHECK(top1[b].ids == greedy[b].ids);
        CHECK(top1[b].score == greedy[b].score);
      }
      opt.sampling_topk = 0;
      opt.sampling_topp = 1e-9;  // only the first of the sorted list
      const auto topp = sample(9, true, true);
      for (size_t b = 0; b < 3; b++) CHECK(topp[b].ids == greedy[b].ids);
    }
  }

  TEST_CASE("sampling: a sentence keyed by its number draws the same alone, in any batch and in any order") {
    auto m = small_model("pre_ln", 13);
    DecodeOptions opt;
    opt.bos = 2, opt.eos = 3, opt.pad = 1, opt.max_len_b = 6, opt.sampling = true, opt.temperature = 2.0;
    Generator gen(4);
    opt.gen = &gen;
    auto rows = [&](const std::vector<int64_t>& order) {  // kSrc's sentences in this order, as one batch
      std::vector<int64_t> ids;
      for (int64_t b : order) ids.insert(ids.end(), kSrc.begin() + b * 6, kSrc.begin() + b * 6 + 6);
      return id_tensor(ids, (int64_t)order.size());
    };
    for (const bool device_pick : {true, false}) {
      for (const bool use_cache : {true, false}) {
        CAPTURE(device_pick);
        CAPTURE(use_cache);
        opt.device_pick = device_pick, opt.use_cache = use_cache;
        opt.sentence_keys = {100, 101, 102};
        const auto batch = decode_batch(*m, rows({0, 1, 2}), opt);
        opt.sentence_keys = {102, 100, 101};
        const auto reordered = decode_batch(*m, rows({2, 0, 1}), opt);
        CHECK(reordered[0].ids == batch[2].ids);
        CHECK(reordered[1].ids == batch[0].ids);
        CHECK(reordered[2].ids == batch[1].ids);
        for (int64_t b = 0; b < 3; b++) {
          opt.sentence_keys = {100 + (uint64_t)b};
          CHECK(decode_batch(*m, rows({b}), opt)[0].ids == batch[b].ids);
        }
        opt.sentence_keys = {200, 101, 202};  // other keys, other draws (sentence 1 keeps its own)
        const auto other = decode_batch(*m, rows({0, 1, 2}), opt);
        CHECK(other[1].ids == batch[1].ids);
        CHECK((other[0].ids != batch[0].ids || other[2].ids != batch[2].ids));
      }
    }
    // without keys: the generator's next counters, so a second decode draws afresh and a seed repeats the first
    opt.sentence_keys.clear();
    Generator g1(8), g2(8);
    opt.gen = &g1;
    const auto first = decode_batch(*m, rows({0, 1, 2}), opt), second = decode_batch(*m, rows({0, 1, 2}), opt);
    opt.gen = &g2;
    const auto again = decode_batch(*m, rows({0, 1, 2}), opt);
    bool differs = false;
    for (int64_t b = 0; b < 3; b++) {
      CHECK(again[b].ids == first[b].ids);
      differs |= second[b].ids != first[b].ids;
    }
    CHECK(differs);
    CHECK(g1.offset() == 6);  // three sentences' keys per decode
    // a key per sentence, or none
    opt.sentence_keys = {1, 2};
    CHECK_THROWS_WITH_ALL(decode_batch(*m, rows({0, 1, 2}), opt), "decode", "2 sentence keys for 3 sentences");
  }

  TEST_CASE("sampling on the GPU: the same draws as the CPU from the same log-probabilities and seed") {
    if (!cuda_available()) {
      MESSAGE("skipped: no CUDA device");
      return;
    }
    manual_seed(21);
    const Tensor lp = log_softmax(mul(Tensor::randn({64, 1500}), 2.0), -1);
    std::vector<int64_t> excluded(1500, 0);
    excluded[0] = excluded[2] = 1;
    const Tensor ex = Tensor::from_vector(excluded, {1500});
    struct Cut {
      int64_t topk;
      double topp, temperature;
    };
    for (const Cut& cut : {Cut{0, 1.0, 1.0}, Cut{50, 1.0, 0.7}, Cut{0, 0.9, 1.3}, Cut{40, 0.5, 1.0}}) {
      CAPTURE(cut.topk);
      CAPTURE(cut.topp);
      DecodeOptions opt;
      opt.sampling = true, opt.sampling_topk = cut.topk, opt.sampling_topp = cut.topp;
      opt.temperature = cut.temperature;
      Generator g_cpu(9), g_gpu(9);
      opt.gen = &g_cpu;
      const std::vector<int64_t> cpu = sample_tokens(lp, ex, opt).to_vector<int64_t>();
      opt.gen = &g_gpu;
      const std::vector<int64_t> gpu =
          sample_tokens(lp.to(Device::cuda()), ex.to(Device::cuda()), opt).to(Device::cpu()).to_vector<int64_t>();
      CHECK(gpu == cpu);
      std::vector<uint64_t> counters;  // keyed rows (a sentence's draws)
      for (uint64_t r = 0; r < 64; r++) counters.push_back(nn::sampling_counter(r % 5, r));
      const std::vector<int64_t> keyed_cpu = sample_tokens(lp, ex, opt, counters).to_vector<int64_t>();
      CHECK(sample_tokens(lp.to(Device::cuda()), ex.to(Device::cuda()), opt, counters)
                .to(Device::cpu())
                .to_vector<int64_t>() == keyed_cpu);
    }
  }

  TEST_CASE("sampling: bad options are refused, naming them") {
    auto m = small_model("post_ln");
    Tensor src = id_tensor(kSrc, 3);
    DecodeOptions opt;
    opt.bos = 2, opt.eos = 3, opt.pad = 1, opt.sampling = true;
    opt.beam = 4;
    CHECK_THROWS_WITH_ALL(decode_batch(*m, src, opt), "sampling", "beam must be 1", "4");
    opt.beam = 1;
    opt.temperature = 0;
    CHECK_THROWS_WITH_ALL(decode_batch(*m, src, opt), "temperature must be > 0");
    opt.temperature = 1;
    opt.sampling_topp = 0;
    CHECK_THROWS_WITH_ALL(decode_batch(*m, src, opt), "sampling_topp must be in (0, 1]");
    opt.sampling_topp = 1;
    opt.sampling_topk = -2;
    CHECK_THROWS_WITH_ALL(decode_batch(*m, src, opt), "sampling_topk must be >= 0");
  }

  TEST_CASE("incremental decoding: errors") {
    auto m = small_model("pre_ln");
    Tensor src = id_tensor(kSrc, 3);
    {
      NoGradGuard ng;
      nn::DecoderState st = m->start_decoding(m->encode(src), m->padding_mask(src));
      CHECK_THROWS_WITH_ALL(m->decode_step(st, Tensor::from_vector<int64_t>({2, 2}, {2})), "decode_step",
                            "int64 [3]");
      CHECK_THROWS_WITH_ALL(m->decode_step(st, Tensor::from_vector<int64_t>({2, 2, 99}, {3})), "token 99");
      CHECK_THROWS_WITH_ALL(st.reorder({0, 3}), "row 3 outside [0, 3)");
      m->train();
      CHECK_THROWS_WITH_ALL(m->decode_step(st, Tensor::from_vector<int64_t>({2, 2, 2}, {3})), "eval()");
      m->eval();
    }
    {
      // a step past max_positions is refused and leaves the state as it was: the same step fails the same way again
      nn::TransformerConfig c = m->config();
      c.max_positions = 2;
      manual_seed(3);
      nn::Transformer two(c);
      two.eval();
      NoGradGuard ng;
      const Tensor short_src = Tensor::from_vector<int64_t>({4, 5}, {1, 2});
      nn::DecoderState st = two.start_decoding(two.encode(short_src), two.padding_mask(short_src));
      const Tensor bos = Tensor::from_vector<int64_t>({2}, {1});
      two.decode_step(st, bos);
      two.decode_step(st, bos);
      for (int again = 0; again < 2; again++) {
        CHECK_THROWS_WITH_ALL(two.decode_step(st, bos), "a prefix of 3 tokens exceeds max_positions 2");
        CHECK(st.steps() == 2);
      }
    }
    nn::KVCache cache;
    auto& attn = *m->decoder->layers[0]->self_attn;
    CHECK_THROWS_WITH_ALL(attn.forward_cached(Tensor::zeros({3, 1, 16}, DType::F64), cache), "NoGradGuard");
  }
}
