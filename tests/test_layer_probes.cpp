// The analyses of TOPOLOGIES.md §7 that hook into the model: layer removal (§7.5, Transformer::remove_layers,
// layer_removal_deltas), the attention logit range and entropy (§7.7, MultiHeadAttention::logit_rows, the measured
// self/cross_logit_max and _entropy) and the relative update per sublayer (§7.4, Transformer::residual_updates).
#include <algorithm>
#include <cmath>
#include <limits>

#include "analysis/graph.h"
#include "analysis/measure.h"
#include "nn/loss.h"
#include "cuda_test_util.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// src [2, 5] with one padded sentence, tgt_in/tgt_out [2, 4] likewise (pad id 1, bos 2)
MeasureBatch padded_batch() {
  return {Tensor::from_vector<int64_t>({5, 6, 7, 8, 9, 4, 10, 3, 1, 1}, {2, 5}),
          Tensor::from_vector<int64_t>({2, 5, 6, 7, 2, 9, 1, 1}, {2, 4}),
          Tensor::from_vector<int64_t>({5, 6, 7, 8, 9, 3, 1, 1}, {2, 4})};
}

// Copies every parameter and buffer of a 2+2-layer `from` into the 1+1-layer `to` by name: "enc.1." and "dec.0."
// are dropped and "dec.1." becomes "dec.0." (the model without enc.1 and dec.0).
void copy_without_enc1_dec0(nn::Transformer& from, nn::Transformer& to) {
  auto rename = [](std::string n) {
    if (n.rfind("dec.1.", 0) == 0) n = "dec.0." + n.substr(6);
    return n;
  };
  auto dst = to.named_parameters("", false);
  auto dst_buffers = to.named_buffers();
  dst.insert(dst.end(), dst_buffers.begin(), dst_buffers.end());
  int64_t copied = 0;
  for (const auto& param : from.named_parameters("", false)) {  // (no structured binding: clang 14's lambdas)
    const std::string& name = param.first;
    const Tensor& t = param.second;
    if (name.rfind("enc.1.", 0) == 0 || name.rfind("dec.0.", 0) == 0) continue;
    auto it = std::find_if(dst.begin(), dst.end(), [&](auto& p) { return p.first == rename(name); });
    REQUIRE_MESSAGE(it != dst.end(), name);
    NoGradGuard no_grad;
    it->second.copy_(t);
    ++copied;
  }
  for (const auto& buffer : from.named_buffers()) {
    const std::string& name = buffer.first;
    const Tensor& t = buffer.second;
    auto it = std::find_if(dst.begin(), dst.end(), [&](auto& p) { return p.first == name; });
    REQUIRE_MESSAGE(it != dst.end(), name);
    it->second.copy_(t);
    ++copied;
  }
  CHECK(copied == (int64_t)dst.size());
}

double loss_of(nn::Transformer& m, const MeasureBatch& b) {
  NoGradGuard no_grad;
  return nn::label_smoothed_nll(m.forward(b.src, b.tgt_in), b.tgt_out, m.config().pad_id, 0.1).loss.item();
}

}  // namespace

TEST_SUITE("measure") {
  TEST_CASE("remove_layers: the model without enc.1 and dec.0 is the 1+1-layer model with the other weights") {
    // topologies whose layers do not depend on the depth (DeepNorm's α and β and HybridNorm*'s first block do)
    for (const char* topo : {"post_ln", "pre_ln", "resi_dual", "peri_ln"}) {
      INFO("topology " << topo);
      nn::TransformerConfig c2 = tiny_transformer(topo), c1 = c2;
      c1.enc_layers = c1.dec_layers = 1;
      manual_seed(3);
      nn::Transformer two(c2);
      nn::Transformer one(c1);
      two.eval(), one.eval();
      copy_without_enc1_dec0(two, one);
      const MeasureBatch b = padded_batch();
      NoGradGuard no_grad;
      const Tensor whole = two.forward(b.src, b.tgt_in);
      two.remove_layers({"enc.1", "dec.0", "enc.1"});  // a repeat counts once
      CHECK(two.removed_layers() == std::vector<std::string>{"enc.1", "dec.0"});
      CHECK(max_abs_diff(two.forward(b.src, b.tgt_in), one.forward(b.src, b.tgt_in)) == 0.0);
      CHECK(max_abs_diff(two.forward(b.src, b.tgt_in), whole) > 1e-3);

      // the layer_outputs hook still has an entry per layer: a removed layer's is its input
      std::vector<Tensor> outs;
      two.layer_outputs = &outs;
      two.forward(b.src, b.tgt_in);
      two.layer_outputs = nullptr;
      REQUIRE(outs.size() == 4);
      CHECK(max_abs_diff(outs[0], outs[1]) == 0.0);

      // incremental decoding skips it too: each step's logits are the last position of the full forward
      const Tensor full = two.forward(b.src, b.tgt_in);  // [2, 4, V]
      nn::DecoderState st = two.start_decoding(two.encode(b.src), two.padding_mask(b.src));
      for (int64_t t = 0; t < 4; ++t) {
        const Tensor step = two.decode_step(st, b.tgt_in.slice(1, t, t + 1).reshape({2}));
        CHECK(max_abs_diff(step, full.slice(1, t, t + 1).reshape({2, c2.vocab})) < 1e-5);
      }
      two.remove_layers({});
      CHECK(max_abs_diff(two.forward(b.src, b.tgt_in), whole) == 0.0);
    }
  }

  TEST_CASE("remove_layers: the graph has no node of a removed layer; a bad name changes nothing") {
    nn::Transformer m(tiny_transformer("pre_ln"));
    const MeasureBatch b = padded_batch();
    m.remove_layers({"dec.1"});
    current_tape().clear();
    m.forward(b.src, b.tgt_in).sum().backward(Tensor(), /*retain_graph=*/true);
    const Graph g = Graph::from_tape(current_tape());
    current_tape().clear();
    int64_t dec0 = 0, dec1 = 0;
    for (const auto& n : g.nodes) dec0 += in_scope(n.name, "dec.0"), dec1 += in_scope(n.name, "dec.1");
    CHECK(dec0 > 0);
    CHECK(dec1 == 0);
    CHECK(!m.parameter("dec.1.ffn.fc2.weight").grad().defined());  // its parameters take no part

    CHECK_THROWS_WITH_ALL(m.remove_layers({"enc.0", "dec.2"}), "Transformer::remove_layers", "'dec.2'",
                          "dec.0 .. dec.1");
    CHECK_THROWS_WITH_ALL(m.remove_layers({"enc"}), "'enc'", "enc.0 .. enc.1");
    CHECK(m.removed_layers() == std::vector<std::string>{"dec.1"});

    // incremental decoding keeps the removals it started with: a layer restored half-way has no cache
    m.eval();
    NoGradGuard no_grad;
    nn::DecoderState st = m.start_decoding(m.encode(b.src), m.padding_mask(b.src));
    const Tensor bos = Tensor::from_vector<int64_t>({2, 2}, {2});
    m.decode_step(st, bos);
    m.remove_layers({"enc.0", "dec.1"});  // the encoder's output is already made: only decoder layers matter
    m.decode_step(st, bos);
    m.remove_layers({});
    CHECK_THROWS_WITH_ALL(m.decode_step(st, bos), "Transformer::decode_step", "removed decoder layers changed",
                          "(dec.1 then, none now)");
    CHECK(st.steps() == 2);  // refused before the state changed
  }

  TEST_CASE("a removed layer is measured as the identity: no logits, no updates, Δ shown as '–'") {
    nn::Transformer m(tiny_transformer("post_ln"));
    m.remove_layers({"enc.1"});
    const LayerMeasures lm = measure_batch(m, padded_batch());
    const LayerMeasure& l = lm.layer("enc.1");
    CHECK(l.self_logit_max == -1.0);
    CHECK(l.self_logit_max_heads.empty());
    CHECK(std::isnan(l.self_attn_update));
    CHECK(std::isnan(l.ffn_update));
    CHECK(l.fc2_grad_norm == 0.0);
    CHECK(l.cos_prev == doctest::Approx(1.0));
    CHECK(layer_measures_markdown(lm).find("| enc.1 | 0 | 0 | 1.0000 |") != std::string::npos);
    const std::string md = layer_measures_markdown(lm);
    const std::string row = md.substr(md.find("| enc.1 |"), md.find("| dec.0 |") - md.find("| enc.1 |"));
    CHECK(row.find("| – / – / – | – / – | – / – |") != std::string::npos);
  }

  TEST_CASE("layer_removal_deltas: each layer's loss without it minus the whole model's; mode and removals kept") {
    nn::TransformerConfig c = tiny_transformer("post_ln");
    c.dropout = 0.3;  // measured in eval mode all the same
    manual_seed(5);
    nn::Transformer m(c);
    m.remove_layers({"enc.0"});
    const MeasureBatch b = padded_batch();
    const std::vector<double> d = layer_removal_deltas(m, b, 0.1);
    CHECK(m.is_training());
    CHECK(m.removed_layers() == std::vector<std::string>{"enc.0"});
    REQUIRE(d.size() == 4);
    m.eval();
    const double base = loss_of(m, b);
    CHECK(d[0] == 0.0);  // already removed
    const char* names[] = {"enc.0", "enc.1", "dec.0", "dec.1"};
    for (int i = 1; i < 4; ++i) {
      INFO(names[i]);
      m.remove_layers({"enc.0", names[i]});
      CHECK(d[i] == doctest::Approx(loss_of(m, b) - base).epsilon(1e-12));
      CHECK(d[i] != 0.0);
    }
  }

  TEST_CASE("measure_steps with removal: the deltas are measured and printed; without it they are NaN") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    MeasureOptions opt;
    opt.batch = 3;
    opt.len = 6;
    opt.steps = {0, 3};
    std::vector<LayerMeasures> plain = measure_steps(c, opt);
    for (const auto& l : plain[0].layers) CHECK(std::isnan(l.removal_delta));
    CHECK(layer_measures_markdown(plain[1]).find("Δloss") == std::string::npos);
    opt.removal = true;
    std::vector<LayerMeasures> with = measure_steps(c, opt);
    REQUIRE(with.size() == 2);
    for (const auto& m : with)
      for (const auto& l : m.layers) {
        INFO(l.layer << " at step " << m.step);
        CHECK(std::isfinite(l.removal_delta));
        CHECK(l.removal_delta != 0.0);
        CHECK(l.fc2_grad_norm == plain[m.step ? 1 : 0].layer(l.layer).fc2_grad_norm);  // nothing else changed
      }
    const std::string md = layer_measures_markdown(with[1]);
    CHECK(md.find("Δloss w/o layer") != std::string::npos);
    CHECK(md.find("max logit (self / cross)") != std::string::npos);
    CHECK(md.find("entropy (self / cross)") != std::string::npos);
  }

  TEST_CASE("logit_rows: the largest |q·k|/√d_h over the keys a query sees, by plain loops") {
    nn::AttentionConfig ac;
    ac.d_model = 8;
    ac.heads = 2;
    manual_seed(7);
    nn::MultiHeadAttention attn(ac);
    attn.eval();
    const int64_t B = 2, Tq = 3, Tk = 4, H = 2, dh = 4;
    const Tensor query = Tensor::randn({B, Tq, 8}), kv = Tensor::randn({B, Tk, 8});
    const Tensor pad = Tensor::from_vector<int64_t>({0, 0, 0, 0, 0, 1, 1, 1}, {B, Tk});
    for (bool causal : {false, true}) {
      INFO("causal " << causal);
      std::vector<nn::AttentionLogitRows> rows;
      attn.logit_rows = &rows;
      {
        Scope s("dec.4");
        attn.forward(query, kv, pad, causal);
      }
      attn.logit_rows = nullptr;
      REQUIRE(rows.size() == 1);
      CHECK(rows[0].attention == "dec.4");  // the scope it ran in (a Transformer's: "dec.4.cross_attn")
      REQUIRE(rows[0].max_abs.shape() == Shape{B, H, Tq});
      CHECK(rows[0].max_abs.dtype() == DType::F64);
      // q = x W_qᵀ + b_q, k = kv W_kᵀ + b_k, in float64 on the host
      auto project = [](const Tensor& x, nn::Linear& l) {
        NoGradGuard no_grad;
        return linear(x.to(DType::F64), l.weight.to(DType::F64), l.bias.to(DType::F64)).to_vector<double>();
      };
      const std::vector<double> q = project(query, *attn.q_proj), k = project(kv, *attn.k_proj);
      const std::vector<int64_t> p = pad.to_vector<int64_t>();
      const std::vector<double> got = rows[0].max_abs.to_vector<double>(), ent = rows[0].entropy.to_vector<double>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < Tq; ++i) {
            double want = -1;
            std::vector<double> s;  // the logits this row sees
            for (int64_t j = 0; j < Tk; ++j) {
              if (p[b * Tk + j] || (causal && j > i + Tk - Tq)) continue;
              double dot = 0;
              for (int64_t e = 0; e < dh; ++e)
                dot += q[(b * Tq + i) * 8 + h * dh + e] * k[(b * Tk + j) * 8 + h * dh + e];
              s.push_back(dot / std::sqrt((double)dh));
              want = std::max(want, std::fabs(s.back()));
            }
            CHECK(got[(b * H + h) * Tq + i] == doctest::Approx(want).epsilon(1e-5));  // q, k in float32
            // H(p) = -sum p log p, p = softmax(s)
            double z = 0, top = *std::max_element(s.begin(), s.end()), entropy = 0;
            for (double x : s) z += std::exp(x - top);
            for (double x : s) entropy -= std::exp(x - top) / z * (x - top - std::log(z));
            CHECK(ent[(b * H + h) * Tq + i] == doctest::Approx(entropy).epsilon(1e-5));
            CHECK(entropy <= std::log((double)s.size()) + 1e-12);
          }
    }
    // a row that sees no key: -1
    std::vector<nn::AttentionLogitRows> rows;
    attn.logit_rows = &rows;
    attn.forward(query, kv, Tensor::from_vector<int64_t>({0, 0, 0, 0, 1, 1, 1, 1}, {B, Tk}), false);
    attn.logit_rows = nullptr;
    CHECK(rows[0].max_abs.slice(0, 1, 2).to_vector<double>() == std::vector<double>(H * Tq, -1.0));
    for (double e : rows[0].entropy.slice(0, 1, 2).to_vector<double>()) CHECK(std::isnan(e));
    // causal with one key and three queries: the key is after queries 0 and 1 (j > i + Tk - Tq), which see none
    rows.clear();
    attn.logit_rows = &rows;
    attn.forward(query, kv.slice(1, 0, 1), Tensor(), true);
    attn.logit_rows = nullptr;
    const std::vector<double> one_key = rows[0].max_abs.to_vector<double>();
    for (int64_t r = 0; r < B * H; ++r) {
      CHECK(one_key[r * Tq] == -1.0);
      CHECK(one_key[r * Tq + 1] == -1.0);
      CHECK(one_key[r * Tq + 2] > 0.0);
    }
    // zero queries: every logit 0, the attention uniform over the keys seen (4 in sentence 0): entropy log 4
    NoGradGuard no_grad;
    attn.q_proj->weight.copy_(Tensor::zeros(attn.q_proj->weight.shape()));
    attn.q_proj->bias.copy_(Tensor::zeros(attn.q_proj->bias.shape()));
    rows.clear();
    attn.logit_rows = &rows;
    attn.forward(query, kv, pad, false);
    attn.logit_rows = nullptr;
    for (double e : rows[0].entropy.slice(0, 0, 1).to_vector<double>()) CHECK(e == doctest::Approx(std::log(4.0)));
    for (double e : rows[0].entropy.slice(0, 1, 2).to_vector<double>()) {  // 1 key: 0, printed "0" not "-0"
      CHECK(e == 0.0);
      CHECK_FALSE(std::signbit(e));
    }
  }

  TEST_CASE("hybrid_norm refuses a qk_norm setting: its QKV norms are its own") {
    nn::TransformerConfig c = tiny_transformer("hybrid_norm");
    c.qk_norm = nn::HeadNormTargets::QK;
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "hybrid_norm", "qk_norm must be none, got qk");
    c.topology = "hybrid_norm_star";
    CHECK_THROWS_WITH_ALL(c.validate(), "hybrid_norm_star: has per-head norms");  // named, and before any model
    CHECK_THROWS_WITH_ALL(nn::make_topology("hybrid_norm_star")->check_config(c), "hybrid_norm_star");
    c.qk_norm = nn::HeadNormTargets::None;
    c.qk_norm_kind = nn::HeadNormKind::L2;  // a kind of norm for no norm: refused rather than ignored
    CHECK_THROWS_WITH_ALL(c.validate(), "qk_norm_kind l2 needs qk_norm qk or qkv");
    c.qk_norm = nn::HeadNormTargets::QK;
    c.topology = "res_post_norm";  // any other topology takes it
    nn::Transformer m(c);
    CHECK(m.encoder->layers[0]->self_attn->q_norm != nullptr);
    CHECK(m.encoder->layers[0]->self_attn->v_norm == nullptr);
  }

  TEST_CASE("a hook set on one attention by hand survives the Transformer's; measure_batch inside a scope") {
    nn::Transformer m(tiny_transformer("pre_ln"));
    const MeasureBatch b = padded_batch();
    std::vector<nn::AttentionLogitRows> mine, all;
    m.decoder->layers[1]->cross_attn->logit_rows = &mine;
    m.attention_logits = &all;
    {
      NoGradGuard no_grad;
      m.forward(b.src, b.tgt_in);
    }
    CHECK(all.size() == 6);
    CHECK(mine.empty());  // during the forward the Transformer's hook wins
    CHECK(m.decoder->layers[1]->cross_attn->logit_rows == &mine);  // and is put back after it
    m.attention_logits = nullptr;
    {
      NoGradGuard no_grad;
      m.forward(b.src, b.tgt_in);
    }
    REQUIRE(mine.size() == 1);
    CHECK(mine[0].attention == "dec.1.cross_attn");
    m.decoder->layers[1]->cross_attn->logit_rows = nullptr;

    const LayerMeasures plain = measure_batch(m, b);
    LayerMeasures scoped;
    {
      Scope s("outer.run");  // the hooks' names are "outer.run.enc.0.self_attn", ...
      scoped = measure_batch(m, b);
    }
    for (size_t i = 0; i < plain.layers.size(); ++i) {
      CHECK(scoped.layers[i].self_logit_max == plain.layers[i].self_logit_max);
      CHECK(scoped.layers[i].ffn_update == plain.layers[i].ffn_update);
    }
  }

  TEST_CASE("logit_rows under L2 QK-norm: every logit is at most 1/√d_h; cached steps give the full rows") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    c.qk_norm = nn::HeadNormTargets::QK;
    c.qk_norm_kind = nn::HeadNormKind::L2;
    nn::Transformer m(c);
    m.eval();
    const MeasureBatch b = padded_batch();
    std::vector<nn::AttentionLogitRows> rows;
    m.attention_logits = &rows;
    NoGradGuard no_grad;
    m.forward(b.src, b.tgt_in);
    REQUIRE(rows.size() == 6);  // enc.0/1 self, then dec.0/1 self and cross
    CHECK(rows[0].attention == "enc.0.self_attn");
    CHECK(rows[3].attention == "dec.0.cross_attn");
    for (auto& r : rows) CHECK(max(r.max_abs).item() <= 1 / std::sqrt(8.0) + 1e-12);

    // decode_step's rows are the full forward's, one query position at a time
    const Tensor full_self = rows[2].max_abs, full_cross = rows[3].max_abs;  // dec.0 self_attn, cross_attn
    nn::DecoderState st = m.start_decoding(m.encode(b.src), m.padding_mask(b.src));
    for (int64_t t = 0; t < 4; ++t) {
      rows.clear();
      m.decode_step(st, b.tgt_in.slice(1, t, t + 1).reshape({2}));
      REQUIRE(rows.size() == 4);
      CHECK(rows[0].attention == "dec.0.self_attn");
      CHECK(max_abs_diff(rows[0].max_abs, full_self.slice(2, t, t + 1)) < 1e-6);
      CHECK(max_abs_diff(rows[1].max_abs, full_cross.slice(2, t, t + 1)) < 1e-6);
    }
    m.attention_logits = nullptr;
    rows.clear();
    m.forward(b.src, b.tgt_in);
    CHECK(rows.empty());  // unhooked: the attentions no longer point at it
  }

  TEST_CASE("measure_batch: the logit maxima over non-pad queries, per head and per layer") {
    nn::TransformerConfig c = tiny_transformer("post_ln");
    manual_seed(2);
    nn::Transformer m(c);
    const MeasureBatch b = padded_batch();
    std::vector<nn::AttentionLogitRows> rows;
    m.attention_logits = &rows;
    {
      NoGradGuard no_grad;
      m.forward(b.src, b.tgt_in);
    }
    m.attention_logits = nullptr;
    const LayerMeasures lm = measure_batch(m, b);
    const std::vector<int64_t> src = b.src.to_vector<int64_t>(), tgt = b.tgt_in.to_vector<int64_t>();
    for (const auto& r : rows) {
      INFO(r.attention);
      const bool enc = r.attention.rfind("enc.", 0) == 0, self = r.attention.find("self_attn") != std::string::npos;
      const LayerMeasure& l = lm.layer(r.attention.substr(0, 5));
      const std::vector<double>& heads = self ? l.self_logit_max_heads : l.cross_logit_max_heads;
      REQUIRE(heads.size() == 2);
      const std::vector<double> v = r.max_abs.to_vector<double>();
      const int64_t T = r.max_abs.size(2);
      for (int64_t h = 0; h < 2; ++h) {
        double want = -1;
        for (int64_t bi = 0; bi < 2; ++bi)
          for (int64_t t = 0; t < T; ++t)
            if ((enc ? src : tgt)[bi * T + t] != c.pad_id) want = std::max(want, v[(bi * 2 + h) * T + t]);
        CHECK(heads[h] == doctest::Approx(want).epsilon(1e-12));
        CHECK(want > 0);
      }
      CHECK((self ? l.self_logit_max : l.cross_logit_max) == std::max(heads[0], heads[1]));
      // the entropy: the mean over heads and non-pad query rows
      const std::vector<double> e = r.entropy.to_vector<double>();
      double sum = 0;
      int n = 0;
      for (int64_t bi = 0; bi < 2; ++bi)
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t t = 0; t < T; ++t)
            if ((enc ? src : tgt)[bi * T + t] != c.pad_id) sum += e[(bi * 2 + h) * T + t], ++n;
      CHECK((self ? l.self_attn_entropy : l.cross_attn_entropy) == doctest::Approx(sum / n).epsilon(1e-12));
    }
    CHECK(std::isnan(lm.layer("enc.0").cross_attn_entropy));
    // a batch that is all padding on one side has nothing to measure: refused, not averaged in as NaN or -1
    MeasureBatch empty = b;
    empty.src = Tensor::full({2, 5}, 1.0, DType::I64);
    CHECK_THROWS_WITH_ALL(measure_batch(m, empty), "measure: src [2,5] is all padding (pad id 1)");
    CHECK(current_tape().nodes().empty());
    CHECK(lm.layer("enc.1").cross_logit_max == -1.0);
    CHECK(lm.layer("enc.1").cross_logit_max_heads.empty());
  }
}

TEST_SUITE("measure") {
  TEST_CASE("residual_updates: each add's stream and branch; the relative update ‖o‖/‖x‖ over non-pad tokens") {
    const MeasureBatch b = padded_batch();
    for (const char* topo : {"pre_ln", "resi_dual", "post_ln"}) {
      INFO("topology " << topo);
      manual_seed(4);
      nn::Transformer m(tiny_transformer(topo));
      std::vector<nn::ResidualUpdate> adds;
      std::vector<Tensor> outs, ins;
      m.residual_updates = &adds;
      m.layer_outputs = &outs;
      m.stack_inputs = &ins;
      {
        NoGradGuard no_grad;
        m.forward(b.src, b.tgt_in);
      }
      m.residual_updates = nullptr;
      m.layer_outputs = m.stack_inputs = nullptr;
      REQUIRE(adds.size() == 10);  // 2 encoder layers x 2 sublayers, 2 decoder layers x 3
      CHECK(adds[0].sublayer == "enc.0.self_attn");
      CHECK(adds[3].sublayer == "enc.1.ffn");
      CHECK(adds[5].sublayer == "dec.0.cross_attn");
      // the first add's stream is what enters the stack (ResiDual: x_a), not the sublayer's output
      CHECK(max_abs_diff(adds[0].stream, ins[0]) == 0.0);
      CHECK(max_abs_diff(adds[4].stream, ins[1]) == 0.0);
      if (std::string(topo) == "pre_ln") CHECK(max_abs_diff(add(adds[1].stream, adds[1].branch), outs[0]) == 0.0);

      const LayerMeasures lm = measure_batch(m, b);
      const std::vector<int64_t> src = b.src.to_vector<int64_t>(), tgt = b.tgt_in.to_vector<int64_t>();
      for (const nn::ResidualUpdate& r : adds) {
        INFO(r.sublayer);
        const bool enc = r.sublayer.rfind("enc.", 0) == 0;
        const std::vector<double> x = r.stream.to(DType::F64).to_vector<double>(),
                                  o = r.branch.to(DType::F64).to_vector<double>();
        double sum = 0;
        int n = 0;
        for (size_t t = 0; t < x.size() / 16; ++t) {
          if ((enc ? src : tgt)[t] == 1) continue;
          double xx = 0, oo = 0;
          for (int j = 0; j < 16; ++j) xx += x[t * 16 + j] * x[t * 16 + j], oo += o[t * 16 + j] * o[t * 16 + j];
          sum += std::sqrt(oo / xx), ++n;
        }
        const LayerMeasure& l = lm.layer(r.sublayer.substr(0, 5));
        const std::string sub = r.sublayer.substr(6);
        const double got = sub == "self_attn" ? l.self_attn_update : sub == "ffn" ? l.ffn_update : l.cross_attn_update;
        CHECK(got == doctest::Approx(sum / n).epsilon(1e-9));
        CHECK(got > 0);
      }
      CHECK(std::isnan(lm.layer("enc.0").cross_attn_update));
      CHECK(layer_measures_markdown(lm).find("‖o‖/‖x‖") != std::string::npos);
    }
    // ReZero starts with α = 0: every branch adds nothing
    const LayerMeasures rz = measure_batch(*std::make_unique<nn::Transformer>(tiny_transformer("rezero")), b);
    for (const LayerMeasure& l : rz.layers) {
      INFO(l.layer);
      CHECK(l.self_attn_update == 0.0);
      CHECK(l.ffn_update == 0.0);
    }
  }
}

TEST_SUITE("cuda") {
  TEST_CASE("logit maxima and layer removal measured on the GPU are the CPU's") {
    if (!have_cuda()) return;
    nn::TransformerConfig c = tiny_transformer("resi_dual");
    MeasureOptions opt;
    opt.batch = 3;
    opt.len = 6;
    opt.steps = {0, 2};
    opt.removal = true;
    const std::vector<LayerMeasures> cpu = measure_steps(c, opt);
    opt.device = Device::cuda();
    const std::vector<LayerMeasures> gpu = measure_steps(c, opt);
    REQUIRE(gpu.size() == cpu.size());
    for (size_t s = 0; s < cpu.size(); ++s)
      for (size_t i = 0; i < cpu[s].layers.size(); ++i) {
        const LayerMeasure &a = cpu[s].layers[i], &b = gpu[s].layers[i];
        INFO(a.layer << " at step " << cpu[s].step);
        CHECK(b.self_logit_max == doctest::Approx(a.self_logit_max).epsilon(1e-4));
        CHECK(b.cross_logit_max == doctest::Approx(a.cross_logit_max).epsilon(1e-4));
        REQUIRE(b.self_logit_max_heads.size() == a.self_logit_max_heads.size());
        for (size_t h = 0; h < a.self_logit_max_heads.size(); ++h)
          CHECK(b.self_logit_max_heads[h] == doctest::Approx(a.self_logit_max_heads[h]).epsilon(1e-4));
        REQUIRE(b.cross_logit_max_heads.size() == a.cross_logit_max_heads.size());
        for (size_t h = 0; h < a.cross_logit_max_heads.size(); ++h)
          CHECK(b.cross_logit_max_heads[h] == doctest::Approx(a.cross_logit_max_heads[h]).epsilon(1e-4));
        CHECK(std::fabs(b.removal_delta - a.removal_delta) <= 1e-4 + 1e-3 * std::fabs(a.removal_delta));
        CHECK(b.ffn_update == doctest::Approx(a.ffn_update).epsilon(1e-4));
        CHECK(b.self_attn_entropy == doctest::Approx(a.self_attn_entropy).epsilon(1e-4));
      }
  }
}
