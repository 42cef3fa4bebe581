// The decoder-only language model: nn::Transformer with enc_layers = 0 (no encoder, no cross-attention), for every
// topology. Its numbers against an independent PyTorch reference are in test_transformer_reference.cpp
// (tests/reference/lm_*.safetensors); here: its structure, causality, incremental decoding, a float64 gradient
// check, the errors of calls meant for the other kind of model, and the analysis tools on it.
#include <cmath>
#include <map>
#include <set>

#include "analysis/graph.h"
#include "analysis/measure.h"
#include "analysis/paths.h"
#include "nn/checkpoint.h"
#include "nn/generate.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// The tests' tiny model (d 16, 2 heads, vocab 13, pad id 1) as a decoder-only model of `layers` layers.
nn::TransformerConfig tiny_lm(const std::string& topology, int64_t layers = 2) {
  nn::TransformerConfig c = tiny_transformer(topology);
  c.enc_layers = 0;
  c.dec_layers = layers;
  if (topology == "mix_ln") c.mixln_post_layers = 1;  // one Post-LN layer, then Pre-LN
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector<int64_t>(v, {B, T}); }

// "W = x + D(SA(N(x)))" written with the encoder-decoder idiom of before 2026-12-06: CA under is_decoder().
class OldIdiomLayer : public nn::Layer {
 public:
  OldIdiomLayer(const nn::TransformerConfig& cfg, nn::Side side, int64_t index) : Layer(cfg, side, index) {
    norm = add_norm("norm");
  }

 protected:
  nn::Stream apply(const nn::Stream& in, const nn::LayerInputs& ctx) override {
    Tensor x = residual_add("self_attn", in.x, D("self_attn", SA(norm->forward(in.x), ctx)));
    if (is_decoder()) x = residual_add("cross_attn", x, D("cross_attn", CA(x, ctx)));
    return {residual_add("ffn", x, D("ffn", F(x))), Tensor()};
  }

 private:
  std::shared_ptr<nn::Norm> norm;
};

}  // namespace

TEST_SUITE("decoder_only") {
  TEST_CASE("every topology: the parameters are the encoder-decoder model's without enc.* and cross-attention") {
    for (const std::string& topo : nn::topology_names()) {
      INFO("topology " << std::string(topo));
      manual_seed(3);
      nn::Transformer lm(tiny_lm(topo));
      nn::TransformerConfig ed_cfg = tiny_lm(topo);
      ed_cfg.enc_layers = 2;
      nn::Transformer ed(ed_cfg);
      std::set<std::string> expected, got;
      std::map<std::string, Shape> shapes;
      for (auto& [name, p] : ed.named_parameters())
        if (name.rfind("enc.", 0) != 0 && name.find("cross_attn") == std::string::npos) {
          expected.insert(name);
          shapes[name] = p.shape();
        }
      for (auto& [name, p] : lm.named_parameters()) {
        got.insert(name);
        CHECK(shapes[name] == p.shape());
      }
      CHECK(got == expected);
      CHECK(lm.layer_names() == std::vector<std::string>{"dec.0", "dec.1"});
      for (const auto& named : lm.named_modules()) CHECK(named.first.rfind("enc", 0) != 0);
      for (const auto& layer : lm.decoder->layers) {
        CHECK(layer->is_decoder());
        CHECK(!layer->has_cross_attention());
      }
      CHECK(ed.decoder->layers[0]->has_cross_attention());
      CHECK(!ed.encoder->layers[0]->has_cross_attention());
    }
    // tables not shared: one target table (no source table that nothing reads), and an output projection when
    // not tied; every parameter takes part
    for (bool tie : {true, false}) {
      nn::TransformerConfig c = tiny_lm("pre_ln");
      c.share_embeddings = false;
      c.tie_output = tie;
      nn::Transformer lm(c);
      std::set<std::string> names;
      for (const auto& named : lm.named_parameters()) names.insert(named.first);
      CHECK(names.count("tgt_embed.weight") == 1);
      CHECK(names.count("src_embed.weight") == 0);
      CHECK(names.count("output_projection.weight") == (tie ? 0 : 1));
      CHECK(lm.src_embed == lm.tgt_embed);
      Tensor in = ids({2, 4, 5, 6}, 1, 4);
      nn::label_smoothed_nll(lm.forward(in), ids({4, 5, 6, 2}, 1, 4), 1, 0.1).loss.backward();
      for (const auto& named : lm.named_parameters()) {
        INFO(named.first);
        CHECK(named.second.grad().defined());
      }
    }
  }

  TEST_CASE("every topology: [B, T, V] logits, a finite loss, a gradient for every parameter; causal and pad-safe") {
    for (const std::string& topo : nn::topology_names()) {
      INFO("topology " << std::string(topo));
      manual_seed(4);
      nn::Transformer lm(tiny_lm(topo));
      Tensor in = ids({2, 4, 5, 6, 7, 2, 8, 9, 1, 1}, 2, 5), out = ids({4, 5, 6, 7, 2, 8, 9, 2, 1, 1}, 2, 5);
      lm.init_from_batch(Tensor(), in);  // Admin's ω; nothing for the others
      Tensor logits = lm.forward(in);
      CHECK(logits.shape() == Shape{2, 5, 13});
      Tensor loss = nn::label_smoothed_nll(logits, out, 1, 0.1).loss;
      CHECK(std::isfinite(loss.item()));
      lm.zero_grad();
      loss.backward();
      for (const auto& named : lm.named_parameters()) {  // not a structured binding: clang 14 cannot capture it
        INFO(named.first);
        CHECK(named.second.grad().defined());
      }
      // the same numbers through the two-argument call code written for both kinds uses (src undefined)
      CHECK(max_abs_diff(lm.forward(Tensor(), in), logits) == 0);

      lm.eval();
      NoGradGuard no_grad;
      Tensor a = lm.forward(ids({2, 4, 5, 6, 7}, 1, 5)), b = lm.forward(ids({2, 4, 5, 9, 7}, 1, 5));
      CHECK(max_abs_diff(a.slice(1, 0, 3), b.slice(1, 0, 3)) < 1e-6);  // position t sees tokens 0..t only
      CHECK(max_abs_diff(a.slice(1, 3, 5), b.slice(1, 3, 5)) > 1e-4);
      // a pad inside the sequence: masked as a key and given no position, so the real tokens after it see what
      // they would see without it
      Tensor padded = lm.forward(ids({2, 4, 1, 5, 6, 7}, 1, 6));
      CHECK(max_abs_diff(padded.slice(1, 0, 2), a.slice(1, 0, 2)) < 1e-6);
      CHECK(max_abs_diff(padded.slice(1, 3, 6), a.slice(1, 2, 5)) < 1e-6);
    }
  }

  TEST_CASE("incremental decoding: decode_step equals forward's last position, every topology and position "
            "encoding, with reorder") {
    for (const std::string& topo : nn::topology_names())
      for (nn::PositionEncoding p : {nn::PositionEncoding::Sinusoidal, nn::PositionEncoding::Learned,
                                     nn::PositionEncoding::Rope, nn::PositionEncoding::Alibi,
                                     nn::PositionEncoding::T5, nn::PositionEncoding::None}) {
        INFO("topology " << std::string(topo) << ", " << nn::position_encoding_name(p) << " positions");
        nn::TransformerConfig c = tiny_lm(topo, 3);
        c.positions = p;
        manual_seed(5);
        nn::Transformer lm(c);
        lm.to(DType::F64);
        lm.eval();
        const std::vector<std::vector<int64_t>> rows = {{2, 4, 5, 6, 7}, {2, 8, 1, 9, 10}};  // a pad fed mid-way
        nn::DecoderState st = lm.start_decoding(2);
        for (int64_t t = 0; t < 5; t++) {
          Tensor step = lm.decode_step(st, Tensor::from_vector<int64_t>({rows[0][t], rows[1][t]}, {2}));
          std::vector<int64_t> prefix;
          for (const auto& r : rows) prefix.insert(prefix.end(), r.begin(), r.begin() + t + 1);
          Tensor full = lm.forward(ids(prefix, 2, t + 1)).slice(1, t, t + 1).reshape({2, 13});
          INFO("step " << t);
          CHECK(max_abs_diff(step, full) < 1e-12);
        }
        st.reorder({1, 1});  // both rows continue the second prefix
        Tensor next = lm.decode_step(st, Tensor::from_vector<int64_t>({3, 4}, {2}));
        Tensor ref = lm.forward(ids({2, 8, 1, 9, 10, 3, 2, 8, 1, 9, 10, 4}, 2, 6)).slice(1, 5, 6).reshape({2, 13});
        CHECK(max_abs_diff(next, ref) < 1e-12);
      }
  }

  TEST_CASE("decode_step of [R, T] tokens (a prefill) equals T single steps; left-padded rows; then steps go on") {
    for (const char* topo : {"pre_ln", "post_ln", "resi_dual", "hybrid_norm"})
      for (nn::PositionEncoding p :
           {nn::PositionEncoding::Sinusoidal, nn::PositionEncoding::Rope, nn::PositionEncoding::Alibi,
            nn::PositionEncoding::T5}) {
        INFO(std::string(topo) << " " << nn::position_encoding_name(p));
        nn::TransformerConfig c = tiny_lm(topo, 2);
        c.positions = p;
        manual_seed(8);
        nn::Transformer lm(c);
        lm.to(DType::F64);
        lm.eval();
        const std::vector<int64_t> block = {1, 1, 2, 4, 5, 2, 8, 9, 10, 11};  // row 0 left-padded
        nn::DecoderState one = lm.start_decoding(2), all = lm.start_decoding(2);
        Tensor step;
        for (int64_t t = 0; t < 5; t++)
          step = lm.decode_step(one, Tensor::from_vector<int64_t>({block[t], block[5 + t]}, {2}));
        const Tensor prefill = lm.decode_step(all, ids(block, 2, 5));
        CHECK(prefill.shape() == Shape{2, 13});
        CHECK(max_abs_diff(prefill, step) < 1e-12);
        CHECK(all.fed == one.fed);
        // the left pads change nothing: row 0 reads as its prompt alone
        const Tensor alone = lm.forward(ids({2, 4, 5}, 1, 3)).slice(1, 2, 3).reshape({1, 13});
        CHECK(max_abs_diff(prefill.slice(0, 0, 1), alone) < 1e-12);
        // a second block after the first, then a single step: as the whole sequence's forward
        lm.decode_step(all, ids({6, 7, 3, 4}, 2, 2));
        const Tensor next = lm.decode_step(all, Tensor::from_vector<int64_t>({9, 5}, {2}));
        const Tensor row0 = lm.forward(ids({2, 4, 5, 6, 7, 9}, 1, 6)).slice(1, 5, 6).reshape({1, 13});
        const Tensor row1 = lm.forward(ids({2, 8, 9, 10, 11, 3, 4, 5}, 1, 8)).slice(1, 7, 8).reshape({1, 13});
        CHECK(max_abs_diff(next.slice(0, 0, 1), row0) < 1e-12);
        CHECK(max_abs_diff(next.slice(0, 1, 2), row1) < 1e-12);
      }
  }

  TEST_CASE("GPT-2's init: an untrained decoder-only model's loss is about ln V, every topology") {
    // small logits (features · Eᵀ with E ~ N(0, 0.02)): the next-token distribution starts near uniform
    for (const std::string& topo : nn::topology_names()) {
      INFO("topology " << std::string(topo));
      nn::TransformerConfig c = tiny_lm(topo, 4);
      c.vocab = 50;
      c.d_model = 64;
      c.heads = 4;
      c.d_ff = 128;
      c.init = nn::InitScheme::GPT2;
      manual_seed(9);
      nn::Transformer lm(c);
      std::vector<int64_t> in(64), out(64);
      for (int64_t i = 0; i < 64; i++) in[i] = 2 + (i * 7) % 48, out[i] = 2 + (i * 11 + 3) % 48;
      NoGradGuard no_grad;
      lm.init_from_batch(Tensor(), ids(in, 4, 16));
      const double loss = nn::label_smoothed_nll(lm.forward(ids(in, 4, 16)), ids(out, 4, 16), 1, 0.0).loss.item();
      CHECK(std::abs(loss - std::log(50.0)) < 0.15);
    }
  }

  TEST_CASE("float64 gradcheck of a decoder-only model's loss: post_ln, pre_ln, resi_dual, deep_norm") {
    for (const char* topo : {"post_ln", "pre_ln", "resi_dual", "deep_norm"}) {
      INFO("topology " << std::string(topo));
      manual_seed(7);
      nn::TransformerConfig c = tiny_lm(topo, 2);
      c.d_model = 8;
      c.d_ff = 8;
      nn::Transformer lm(c);
      lm.to(DType::F64);
      Tensor in = ids({2, 5, 6, 2, 7, 1}, 2, 3), out = ids({5, 6, 2, 7, 2, 1}, 2, 3);
      std::vector<Tensor> params = {lm.parameter("dec.0.self_attn.q_proj.weight"), lm.parameter("dec.0.ffn.fc2.bias"),
                                    lm.parameter("dec.1.self_attn.v_proj.bias"), lm.parameter("embed.weight")};
      auto res = gradcheck(
          [&](const std::vector<Tensor>&) {
            return cross_entropy(lm.forward(in).reshape({-1, 13}), out.reshape({-1}), 1);
          },
          params, 1e-6, 1e-6, 1e-4);
      CHECK_MESSAGE(res.ok, res.message);
    }
  }

  TEST_CASE("DeepNorm's decoder-only constants: α = (2M)^{1/4}, β = (8M)^{-1/4}") {
    const auto c = nn::deepnorm_coefficients(0, 6, nn::Side::Decoder);
    CHECK(c.alpha == doctest::Approx(std::pow(12.0, 0.25)).epsilon(1e-15));
    CHECK(c.beta == doctest::Approx(std::pow(48.0, -0.25)).epsilon(1e-15));
    CHECK_THROWS_WITH_ALL(nn::deepnorm_coefficients(0, 6, nn::Side::Encoder), "deepnorm_coefficients", "N = 0");
    CHECK_THROWS_WITH_ALL(nn::deepnorm_coefficients(-1, 6, nn::Side::Decoder), "deepnorm_coefficients", "N -1");
  }

  TEST_CASE("calls meant for the other kind of model are refused by name") {
    nn::Transformer lm(tiny_lm("pre_ln"));
    nn::TransformerConfig ed_cfg = tiny_lm("pre_ln");
    ed_cfg.enc_layers = 1;
    nn::Transformer ed(ed_cfg);
    Tensor x = ids({2, 4, 5}, 1, 3);
    CHECK_THROWS_WITH_ALL(lm.forward(x, x), "Transformer::forward", "decoder-only", "takes no src_ids", "int64");
    CHECK_THROWS_WITH_ALL(ed.forward(x), "Transformer::forward", "forward(src_ids, tgt_in_ids)", "1 encoder layers");
    CHECK_THROWS_WITH_ALL(ed.forward(Tensor(), x), "Transformer", "src_ids is an undefined tensor");
    CHECK_THROWS_WITH_ALL(lm.encode(x), "Transformer::encode", "no encoder");
    Tensor memory = ed.encode(x);
    CHECK_THROWS_WITH_ALL(lm.decode(memory, Tensor(), x), "Transformer::decode", "takes no encoder output");
    CHECK_THROWS_WITH_ALL(lm.start_decoding(memory, Tensor()), "start_decoding", "start_decoding(rows)");
    CHECK_THROWS_WITH_ALL(ed.start_decoding(2), "start_decoding", "has an encoder");
    CHECK_THROWS_WITH_ALL(lm.start_decoding(0), "start_decoding", "rows must be positive");
    CHECK_THROWS_WITH_ALL(lm.remove_layers({"enc.0"}), "remove_layers", "'enc.0'", "decoder-only");
    CHECK_THROWS_WITH_ALL(lm.init_from_batch(x, x), "Transformer::init_from_batch", "takes no src_ids");
    CHECK_THROWS_WITH_ALL(lm.forward(Tensor::from_vector<int32_t>({2, 4}, {1, 2})), "Transformer", "ids must be int64");
    {  // an encoder-decoder model's decoding state (cross-attention keys/values) in a decoder-only model
      ed.eval();
      lm.eval();
      nn::DecoderState st = ed.start_decoding(memory, ed.padding_mask(x));
      ed.decode_step(st, Tensor::from_vector<int64_t>({2}, {1}));
      CHECK_THROWS_WITH_ALL(lm.decode_step(st, Tensor::from_vector<int64_t>({4}, {1})), "dec.0",
                            "holds cross-attention keys/values", "encoder-decoder");
    }
    nn::TransformerConfig bad = tiny_lm("pre_ln");
    bad.enc_layers = -1;
    CHECK_THROWS_WITH_ALL(bad.validate(), "TransformerConfig", "enc_layers >= 0", "-1 encoder");
    bad.enc_layers = 0;
    bad.dec_layers = 0;
    CHECK_THROWS_WITH_ALL(bad.validate(), "TransformerConfig", "at least one decoder layer");
    // a state of one kind is refused by the other (its parameter names differ)
    CHECK_THROWS_WITH(nn::load_state_dict(ed, nn::state_dict(lm)), doctest::Contains("enc.0"));
  }

  TEST_CASE("a program's topology that calls CA without has_cross_attention() fails by name in a decoder-only model") {
    const nn::TopologyRegistration old_idiom("old_idiom", [] {
      return std::make_unique<nn::LayerTopology<OldIdiomLayer, nn::FinalNormTopology>>("old_idiom");
    });
    nn::Transformer lm(tiny_lm("old_idiom"));
    CHECK_THROWS_WITH_ALL(lm.forward(ids({2, 4, 5}, 1, 3)), "dec.0", "CA called in a layer without cross-attention",
                          "decoder-only", "has_cross_attention()");
  }

  TEST_CASE("the graph of a decoder-only step: named nodes, paths from the loss to every layer, no encoder") {
    manual_seed(6);
    nn::Transformer lm(tiny_lm("resi_dual", 3));
    Tensor in = ids({2, 4, 5, 6, 2, 8, 9, 1}, 2, 4), out = ids({4, 5, 6, 2, 8, 9, 2, 1}, 2, 4);
    current_tape().clear();
    Tensor loss = nn::label_smoothed_nll(lm.forward(in), out, 1, 0.1).loss;
    GraphOptions go;
    go.value_norms = false;
    const Graph g = Graph::from_tape(current_tape(), go);
    int residual_adds = 0;
    for (const auto& n : g.nodes) {
      CHECK(n.name.find("enc.") == std::string::npos);
      CHECK(n.name.find("cross_attn") == std::string::npos);
      residual_adds += n.name.size() > 13 && n.name.compare(n.name.size() - 13, 13, ".residual_add") == 0;
    }
    CHECK(residual_adds == 3 * 2);  // [SA, F] per layer
    const PathStats s = analyze_paths(g, g.id_of(loss));
    const std::string table = paths_markdown(g, s);
    current_tape().clear();
    for (const char* layer : {"dec.0", "dec.1", "dec.2"}) CHECK(table.find(layer) != std::string::npos);
    CHECK(table.find("enc.") == std::string::npos);
  }

  TEST_CASE("analysis/measure.h on a decoder-only model: the task's x, 2, y sequences; measures after training") {
    nn::TransformerConfig c = tiny_lm("pre_ln", 2);
    c.vocab = 12;
    const MeasureBatch b = task_batch(c, "reverse", 3, 9, 5);
    CHECK(!b.src.defined());
    REQUIRE(b.tgt_in.shape() == Shape{3, 9});
    const std::vector<int64_t> in = b.tgt_in.to_vector<int64_t>(), out = b.tgt_out.to_vector<int64_t>();
    for (int64_t r = 0; r < 3; r++) {
      // tgt_in = [2, s_0, ..., s_{m-2}]; s = x, 2, reversed x; tgt_out = s with x and the separator padded
      int64_t m = 0;
      while (m < 9 && in[r * 9 + m] != c.pad_id) m++;
      std::vector<int64_t> seq(in.begin() + r * 9 + 1, in.begin() + r * 9 + m);
      seq.push_back(out[r * 9 + m - 1]);
      const size_t n = (seq.size() - 1) / 2;
      REQUIRE(seq.size() == 2 * n + 1);
      CHECK(in[r * 9] == 2);
      CHECK(seq[n] == 2);
      for (size_t t = 0; t < n; t++) CHECK(seq[n + 1 + t] == seq[n - 1 - t]);
      for (size_t t = 0; t < 9; t++) CHECK(out[r * 9 + t] == (t > n && t < seq.size() ? seq[t] : c.pad_id));
    }
    CHECK_THROWS_WITH_ALL(task_batch(c, "copy", 2, 2, 1), "task_batch", "len >= 3");

    MeasureOptions opt;
    opt.task = "copy";
    opt.steps = {0, 60};
    opt.batch = 16;
    opt.len = 9;
    opt.lr = 3e-3;
    opt.warmup = 5;
    opt.graph = true;
    opt.removal = true;
    const std::vector<LayerMeasures> m = measure_steps(c, opt);
    REQUIRE(m.size() == 2);
    for (const LayerMeasures& at : m) {
      REQUIRE(at.layers.size() == 2);
      CHECK(at.layers[0].layer == "dec.0");
      for (const LayerMeasure& l : at.layers) {
        INFO(l.layer);
        CHECK(l.layer_grad_norm > 0);
        CHECK(std::isfinite(l.token_cos));
        CHECK(std::isfinite(l.removal_delta));
        CHECK(l.cross_logit_max < 0);  // no cross-attention: not measured
      }
    }
    CHECK(m[1].loss < m[0].loss - 0.3);  // it learns to copy
    CHECK(m[0].paths.layers.size() == 2);
  }

  TEST_CASE("generate: greedy equals argmax over full forwards, prompts of different lengths; eos; sampling") {
    manual_seed(11);
    nn::TransformerConfig c = tiny_lm("hybrid_norm", 2);
    nn::Transformer lm(c);
    lm.to(DType::F64);
    lm.eval();
    const std::vector<std::vector<int64_t>> prompts = {{2, 4, 5}, {7}, {3, 8, 9, 10, 4}};
    nn::GenerateOptions opt;
    opt.max_new_tokens = 6;
    const auto out = nn::generate(lm, prompts, opt);
    REQUIRE(out.size() == 3);
    for (size_t r = 0; r < prompts.size(); r++) {  // the reference: the whole prefix again for every token
      INFO("row " << r);
      std::vector<int64_t> seq = prompts[r];
      for (int k = 0; k < 6; k++) {
        const Tensor logits = lm.forward(ids(seq, 1, (int64_t)seq.size())).select(1, (int64_t)seq.size() - 1);
        std::vector<double> v = logits.reshape({13}).to_vector<double>();
        v[1] = -INFINITY;  // the pad id is never emitted
        seq.push_back(std::max_element(v.begin(), v.end()) - v.begin());
      }
      CHECK(out[r] == std::vector<int64_t>(seq.begin() + (int64_t)prompts[r].size(), seq.end()));
    }
    // eos: a row stops after emitting it (its eos included); the others go on
    opt.eos = out[1][1];
    const auto stopped = nn::generate(lm, prompts, opt);
    for (size_t r = 0; r < prompts.size(); r++) {
      const auto eos_at = std::find(out[r].begin(), out[r].end(), opt.eos);
      CHECK(stopped[r] == std::vector<int64_t>(out[r].begin(), eos_at == out[r].end() ? eos_at : eos_at + 1));
    }
    CHECK(stopped[1].size() <= 2);
    // sampling: top_k 1 is greedy; a seed repeats its draws; another seed draws others
    opt.eos = -1;
    opt.sampling = true;
    opt.draw.top_k = 1;
    CHECK(nn::generate(lm, prompts, opt) == out);
    opt.draw.top_k = 0;
    opt.draw.temperature = 2.0;
    Generator g1(5), g2(5), g3(6);
    opt.draw.gen = &g1;
    const auto a = nn::generate(lm, prompts, opt);
    opt.draw.gen = &g2;
    CHECK(nn::generate(lm, prompts, opt) == a);
    opt.draw.gen = &g3;
    CHECK(nn::generate(lm, prompts, opt) != a);
    for (const auto& row : a)
      for (int64_t id : row) CHECK((id >= 0 && id < 13 && id != 1));
    // keyed prompts: each continuation is the same alone or beside the others; without keys the generator's next
    // counters key them, so a second call draws afresh
    opt.keys = {30, 31, 32};
    const auto keyed = nn::generate(lm, prompts, opt);
    for (size_t r = 0; r < prompts.size(); r++) {
      opt.keys = {30 + r};
      CHECK(nn::generate(lm, {prompts[r]}, opt)[0] == keyed[r]);
    }
    opt.keys = {32, 30};
    CHECK(nn::generate(lm, {prompts[2], prompts[0]}, opt) == std::vector<std::vector<int64_t>>{keyed[2], keyed[0]});
    opt.keys = {1};
    CHECK_THROWS_WITH_ALL(nn::generate(lm, prompts, opt), "generate", "1 keys for 3 prompts");
    opt.keys.clear();
    CHECK(nn::generate(lm, prompts, opt) != nn::generate(lm, prompts, opt));
    opt.max_new_tokens = 0;
    CHECK(nn::generate(lm, prompts, opt) == std::vector<std::vector<int64_t>>(3));
  }

  TEST_CASE("generate refuses what it cannot do, naming it") {
    nn::TransformerConfig c = tiny_lm("pre_ln", 1);
    c.max_positions = 8;
    nn::Transformer lm(c);
    nn::GenerateOptions opt;
    opt.max_new_tokens = 4;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 3}}, opt), "generate", "training mode");
    lm.eval();
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {}, opt), "generate", "no prompts");
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}, {}}, opt), "generate", "prompt 1 is empty");
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 13}}, opt), "generate", "prompt 0 holds id 13");
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 1}}, opt), "generate", "the pad id 1");
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 3, 4, 5, 6, 7}}, opt), "generate", "feed 9 positions",
                          "more than max_positions 8");
    CHECK(nn::generate(lm, {{2, 3, 4, 5, 6}}, opt)[0].size() == 4);  // 5 + 3 fed: the 4th new token is not
    opt.max_new_tokens = 1;
    CHECK(nn::generate(lm, {{2, 3, 4, 5, 6, 7, 8, 9}}, opt)[0].size() == 1);  // a prompt of max_positions tokens
    opt.max_new_tokens = -1;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "max_new_tokens must be >= 0");
    opt.max_new_tokens = 2;
    opt.eos = 13;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "eos 13 outside");
    opt.eos = 1;  // the pad id: never emitted, so it would never stop a row
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "eos 1", "the pad id 1");
    opt.eos = -1;
    opt.sampling = true;
    opt.draw.temperature = 0;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "temperature must be > 0");
    opt.draw.temperature = 1;
    opt.draw.top_p = 0;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "top_p must be in (0, 1]");
    opt.draw.top_p = 1.0000001;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2}}, opt), "generate", "got 1.0000001");
    // sample_tokens checks its options too: a negative temperature would make an excluded token the likeliest
    nn::SamplingOptions neg;
    neg.temperature = -1;
    CHECK_THROWS_WITH_ALL(nn::sample_tokens(Tensor::zeros({1, 13}), Tensor::zeros({13}, DType::I64), neg),
                          "sample_tokens", "temperature must be > 0");
    nn::SamplingOptions keyed;
    keyed.row_counters = {1, 2};  // one counter per row
    CHECK_THROWS_WITH_ALL(nn::sample_tokens(Tensor::zeros({1, 13}), Tensor::zeros({13}, DType::I64), keyed),
                          "sample_tokens", "2 row counters for 1 rows", "float32[1,13]");
    {  // a row with no token to draw gets -1 (every lookup refuses it), for any top-k / top-p; the others draw
      std::vector<double> lp(2 * 13, -1.0);
      for (int64_t v = 0; v < 13; v++) lp[13 + v] = v == 4 ? -1.0 : -INFINITY;  // row 1: only token 4 has mass
      const Tensor rows = Tensor::from_vector(lp, {2, 13});
      std::vector<int64_t> ex(13, 0);
      ex[4] = 1;  // ... and it is excluded
      for (int64_t k : {0, 3})
        for (double p : {1.0, 0.5}) {
          nn::SamplingOptions so;
          so.top_k = k;
          so.top_p = p;
          const Tensor drawn = nn::sample_tokens(rows, Tensor::from_vector(ex, {13}), so);
          const std::vector<int64_t> t = drawn.to_vector<int64_t>();
          INFO("top_k " << k << ", top_p " << p);
          CHECK(t[0] >= 0);
          CHECK(t[0] != 4);
          CHECK(t[1] == -1);
        }
    }
    // a model whose logits are NaN: an error naming the row and position, not token 0 every step
    opt.sampling = false;
    opt.draw = {};
    Tensor w = lm.parameter("dec.0.ffn.fc1.weight");
    w.copy_(Tensor::full(w.shape(), NAN));
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 3}}, opt), "generate", "row 0", "position 1", "not finite");
    opt.sampling = true;
    CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 3}}, opt), "generate", "not finite");
    nn::TransformerConfig ed_cfg = tiny_lm("pre_ln", 1);
    ed_cfg.enc_layers = 1;
    nn::Transformer ed(ed_cfg);
    ed.eval();
    CHECK_THROWS_WITH_ALL(nn::generate(ed, {{2}}, nn::GenerateOptions{}), "generate", "decoder-only", "1 encoder");
  }

  TEST_CASE("on a GPU: a decoder-only model's logits, gradients and generated tokens equal the CPU's (rope, alibi, "
            "t5)") {
    if (!cuda_available()) {
      MESSAGE("skipped: no CUDA device");
      return;
    }
    using P = nn::PositionEncoding;
    const std::vector<std::pair<std::string, P>> models = {
        {"pre_ln", P::Sinusoidal}, {"resi_dual", P::Sinusoidal}, {"hybrid_norm", P::Sinusoidal},
        {"hybrid_norm", P::Rope}, {"pre_ln", P::Learned}, {"post_ln", P::Alibi}, {"pre_ln", P::T5}};
    for (size_t m = 0; m < models.size(); m++) {
      INFO("topology " << models[m].first << ", " << nn::position_encoding_name(models[m].second) << " positions");
      nn::TransformerConfig c = tiny_lm(models[m].first, 2);
      c.positions = models[m].second;
      manual_seed(12);
      nn::Transformer cpu(c), gpu(c);
      nn::load_state_dict(gpu, nn::state_dict(cpu));
      gpu.to(Device::cuda());
      Tensor in = ids({2, 4, 5, 6, 2, 8, 1, 1}, 2, 4), out = ids({4, 5, 6, 2, 8, 9, 1, 1}, 2, 4);
      Tensor lc = nn::label_smoothed_nll(cpu.forward(in), out, 1, 0.1).loss;
      lc.backward();  // (before the GPU's forward: a backward clears the thread's tape)
      Tensor lg = nn::label_smoothed_nll(gpu.forward(in.to(Device::cuda())), out.to(Device::cuda()), 1, 0.1).loss;
      lg.backward();
      CHECK(std::abs(lc.item() - lg.item()) < 1e-5);
      const auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      for (size_t i = 0; i < pc.size(); i++) {
        INFO(pc[i].first);
        CHECK(max_abs_diff(pc[i].second.grad(), pg[i].second.grad().to(Device::cpu())) < 1e-4);
      }
      cpu.eval();
      gpu.eval();
      nn::GenerateOptions g;
      g.max_new_tokens = 5;
      CHECK(nn::generate(cpu, {{2, 4}, {7}}, g) == nn::generate(gpu, {{2, 4}, {7}}, g));
    }
  }
}
