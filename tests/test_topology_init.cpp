// The init of the topologies whose init is their own (B2T, LayerScale, Sub-LN, NormFormer, T-Fixup) and their own
// options: each against its source's rule, mostly as the same draws as a base topology's times the scale it gives.
// Their equations are checked against PyTorch (test_transformer_reference.cpp) and their graphs' paths in
// test_topology_paths.cpp.
#include <cmath>
#include <functional>
#include <optional>
#include <tuple>

#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// A topology whose init scales another's (B2T's of Post-LN, Sub-LN's of Pre-LN): c's model of each topology from one
// seed (the same draws), and every parameter of `scaled` is `base`'s times factor(name), to float32 rounding;
// factor gives nullopt for a parameter that `base` lacks (Sub-LN's inner norms). Every one of base's is compared.
void check_scaled_init(const nn::TransformerConfig& c, const std::string& base, const std::string& scaled,
                       const std::function<std::optional<double>(const std::string&)>& factor) {
  manual_seed(7);
  nn::Transformer b(c.with_topology(base));
  manual_seed(7);
  nn::Transformer s(c.with_topology(scaled));
  size_t compared = 0;
  for (const auto& entry : s.named_parameters()) {
    const std::string& name = entry.first;
    CAPTURE(name);
    const std::optional<double> f = factor(name);
    if (!f) continue;
    const std::vector<float> x = b.parameter(name).to_vector<float>(), y = entry.second.to_vector<float>();
    REQUIRE(x.size() == y.size());
    for (size_t j = 0; j < x.size(); j++) CHECK(y[j] == doctest::Approx(x[j] * *f).epsilon(1e-6));
    compared++;
  }
  CHECK(compared == b.named_parameters().size());
}

}  // namespace

TEST_SUITE("topology_init") {
  TEST_CASE("B2T: every linear weight of a layer L^-1/2 of Post-LN's from the same seed; b2t_rescale's refusals") {
    // the same seed draws the same weights; B2T scales every linear map of a layer by (its stack's layers)^-1/2,
    // unless b2t_rescale is false (Post-LN's init)
    for (auto [N, M, rescale] : {std::tuple<int64_t, int64_t, bool>{3, 2, true}, {0, 4, true}, {3, 2, false}}) {
      nn::TransformerConfig c;
      c.vocab = 11, c.d_model = 8, c.heads = 2, c.d_ff = 16, c.enc_layers = N, c.dec_layers = M;
      c.topology = "b2t";
      c.b2t_rescale = rescale;
      const int64_t n = N, m = M;  // (clang 14's lambdas cannot capture structured bindings)
      const bool on = rescale;
      check_scaled_init(c, "post_ln", "b2t", [n, m, on](const std::string& name) -> std::optional<double> {
        const bool linear_weight = name.find("_proj.weight") != std::string::npos ||
                                   name.find(".fc1.weight") != std::string::npos ||
                                   name.find(".fc2.weight") != std::string::npos;
        return !linear_weight || !on ? 1.0 : 1.0 / std::sqrt((double)(name.rfind("enc.", 0) == 0 ? n : m));
      });
    }
    nn::TransformerConfig other;
    other.vocab = 11;
    other.topology = "post_ln";
    other.b2t_rescale = false;  // B2T's own option, given to another topology: refused, as the others' are
    CHECK_THROWS_WITH_ALL(other.validate(), "b2t_rescale false is B2T's; topology post_ln does not use it");
    CHECK(other.with_topology("pre_ln").b2t_rescale);
    CHECK(!other.with_topology("b2t").b2t_rescale);
  }

  TEST_CASE("LayerScale: λ starts at CaiT's ε for the stack's depth, or at layer_scale_init; the option's refusals") {
    CHECK(nn::layer_scale_epsilon(-1, 6) == 0.1);
    CHECK(nn::layer_scale_epsilon(-1, 18) == 0.1);
    CHECK(nn::layer_scale_epsilon(-1, 19) == 1e-5);
    CHECK(nn::layer_scale_epsilon(-1, 24) == 1e-5);
    CHECK(nn::layer_scale_epsilon(-1, 25) == 1e-6);
    CHECK(nn::layer_scale_epsilon(0.3, 100) == 0.3);
    nn::TransformerConfig c;
    c.vocab = 11, c.d_model = 8, c.heads = 2, c.d_ff = 16, c.enc_layers = 2, c.dec_layers = 20;
    c.topology = "layer_scale";
    for (double init : {-1.0, 1e-3}) {
      CAPTURE(init);
      c.layer_scale_init = init;
      nn::Transformer model(c);
      int64_t lambdas = 0;
      for (const auto& entry : model.named_parameters()) {
        if (entry.first.find("_layer_scale") == std::string::npos) continue;
        CAPTURE(entry.first);
        lambdas++;
        CHECK(entry.second.shape() == Shape{8});
        const float want = init > 0 ? 1e-3f : entry.first.rfind("enc.", 0) == 0 ? 0.1f : 1e-5f;  // 2 and 20 layers
        for (float v : entry.second.to_vector<float>()) CHECK(v == want);
      }
      CHECK(lambdas == 2 * 2 + 20 * 3);  // one per sublayer
    }
    c.layer_scale_init = 0;
    CHECK_THROWS_WITH_ALL(c.validate(), "layer_scale_init must be finite and > 0 (or -1", "got 0");
    c.layer_scale_init = 0.5;
    c.topology = "pre_ln";
    CHECK_THROWS_WITH_ALL(c.validate(), "layer_scale_init 0.5 is LayerScale's; topology pre_ln does not use it");
    CHECK(c.with_topology("pre_ln").layer_scale_init == -1);
    CHECK(c.with_topology("layer_scale").layer_scale_init == 0.5);
    // run logs and report labels name a topology's own option when it is away from its default
    CHECK(c.with_topology("layer_scale").topology_summary() == "layer_scale (layer_scale_init 0.5)");
    CHECK(c.with_topology("pre_ln").topology_summary() == "pre_ln");
    c.b2t_rescale = false;
    CHECK(c.with_topology("b2t").topology_summary() == "b2t (b2t_rescale false)");
    CHECK(c.with_topology("layer_scale").topology_summary() == "layer_scale (layer_scale_init 0.5)");
  }

  TEST_CASE("Sub-LN: torchscale's γ on v_proj, out_proj, fc1, fc2 of self-attention and FFN; cross-attention as is") {
    for (auto [N, M] : {std::pair<int64_t, int64_t>{3, 2}, {0, 4}}) {
      nn::TransformerConfig c;
      c.vocab = 11, c.d_model = 8, c.heads = 2, c.d_ff = 16, c.enc_layers = N, c.dec_layers = M;
      const double enc = std::sqrt(std::log(3.0 * M) * std::log(2.0 * N) / 3), dec = std::sqrt(std::log(3.0 * M)),
                   lm = std::sqrt(std::log(2.0 * M));
      const bool decoder_only = N == 0;
      // (the same draws: Sub-LN's inner norms are ones and zeros, and Pre-LN has none)
      check_scaled_init(c, "pre_ln", "sub_ln", [=](const std::string& name) -> std::optional<double> {
        if (name.find("inner_norm") != std::string::npos) return std::nullopt;
        bool scaled = false;
        for (const char* lin : {".v_proj.", ".out_proj.", ".fc1.", ".fc2."})
          scaled = scaled || name.find(lin) != std::string::npos;
        scaled = scaled && name.find("cross_attn") == std::string::npos;
        return !scaled ? 1.0 : decoder_only ? lm : name.rfind("enc.", 0) == 0 ? enc : dec;
      });
      c.topology = "sub_ln";
      const nn::Transformer sub(c);
      // the inner norms: one over d_model in each self-attention, one over d_ff in each FFN, none in cross-attention
      CHECK(sub.parameter("dec.0.self_attn.inner_norm.weight").shape() == Shape{8});
      CHECK(sub.parameter("dec.0.ffn.inner_norm.weight").shape() == Shape{16});
      for (const auto& entry : sub.named_parameters())
        CHECK(entry.first.find("cross_attn.inner_norm") == std::string::npos);
    }
  }

  TEST_CASE("NormFormer: Pre-LN's init, its head scales ones, a norm on each self-attention output and in each FFN") {
    for (auto [N, M] : {std::pair<int64_t, int64_t>{3, 2}, {0, 4}}) {
      nn::TransformerConfig c;
      c.vocab = 11, c.d_model = 8, c.heads = 2, c.d_ff = 16, c.enc_layers = N, c.dec_layers = M;
      // every parameter Pre-LN has is drawn as Pre-LN draws it (the additions are ones and zeros)
      check_scaled_init(c, "pre_ln", "normformer", [](const std::string& name) -> std::optional<double> {
        for (const char* added : {".head_scale", "self_attn_out_norm.", ".inner_norm."})
          if (name.find(added) != std::string::npos) return std::nullopt;
        return 1.0;
      });
      c.topology = "normformer";
      const nn::Transformer nf(c);
      int64_t head_scales = 0, out_norms = 0, mid_norms = 0;
      for (const auto& entry : nf.named_parameters()) {
        const std::string& name = entry.first;
        CAPTURE(name);
        CHECK(name.find("cross_attn.head_scale") == std::string::npos);  // cross-attention is Pre-LN's
        CHECK(name.find("cross_attn_out_norm") == std::string::npos);
        if (name.find(".self_attn.head_scale") != std::string::npos) {
          head_scales++;
          CHECK(entry.second.shape() == Shape{2});
          for (float v : entry.second.to_vector<float>()) CHECK(v == 1.0f);
        }
        if (name.find(".self_attn_out_norm.weight") != std::string::npos) {
          out_norms++;
          CHECK(entry.second.shape() == Shape{8});
        }
        if (name.find(".ffn.inner_norm.weight") != std::string::npos) {
          mid_norms++;
          CHECK(entry.second.shape() == Shape{16});  // over d_ff
        }
      }
      CHECK(head_scales == N + M);
      CHECK(out_norms == N + M);
      CHECK(mid_norms == N + M);
      // ResScale (normformer_scale_resids): one more parameter per layer, λ [d] of ones on the FFN's skip
      c.normformer_scale_resids = true;
      manual_seed(7);
      nn::Transformer scaled(c);
      CHECK(scaled.named_parameters().size() == nf.named_parameters().size() + (size_t)(N + M));
      for (const std::string side : {"enc", "dec"})
        for (int64_t l = 0; l < (side == "enc" ? N : M); l++) {
          const Tensor lambda = scaled.parameter(side + "." + std::to_string(l) + ".ffn_resid_scale");
          CHECK(lambda.shape() == Shape{8});
          for (float v : lambda.to_vector<float>()) CHECK(v == 1.0f);
        }
      CHECK(c.topology_summary() == "normformer (normformer_scale_resids true)");
      nn::TransformerConfig other = c;
      other.topology = "sub_ln";  // another topology's option is refused, and with_topology drops it
      CHECK_THROWS_WITH_ALL(other.validate(), "normformer_scale_resids true is NormFormer's; topology sub_ln does not");
      CHECK(!c.with_topology("sub_ln").normformer_scale_resids);

      // fairseq's HeadScale (normformer_fairseq_head_scale): the same parameters, the attention's own scale unused
      // (the layer applies γ after out_proj), and another kind(), so a file of one variant is refused by the other
      nn::TransformerConfig fs = c;
      fs.normformer_scale_resids = false;  // (nf's settings)
      fs.normformer_fairseq_head_scale = true;
      manual_seed(7);
      nn::Transformer fairseq(fs);
      CHECK(fairseq.named_parameters().size() == nf.named_parameters().size());
      CHECK(fairseq.parameter("dec.0.self_attn.head_scale").shape() == Shape{2});
      CHECK(fairseq.kind() != nf.kind());
      CHECK(fairseq.kind().find(", normformer_fairseq_head_scale true") != std::string::npos);
      CHECK(nf.kind().find("fairseq") == std::string::npos);  // (files of the paper's variant read as before)
      CHECK_FALSE(fairseq.reads_kind(nf.kind()));
      CHECK_FALSE(nf.reads_kind(fairseq.kind()));
      CHECK(fs.topology_summary() == "normformer (normformer_fairseq_head_scale true)");
      other = fs;
      other.topology = "pre_ln";
      CHECK_THROWS_WITH_ALL(other.validate(), "normformer_fairseq_head_scale true is NormFormer's");
    }
  }

  TEST_CASE("T-Fixup: no norm; its code's scales on v/out/fc1/fc2 and on the token embeddings") {
    auto max_abs = [](const Tensor& t) {
      double m = 0;
      for (float v : t.to_vector<float>()) m = std::max(m, (double)std::abs(v));
      return m;
    };
    for (const auto& sizes : {std::tuple<int64_t, int64_t, bool>{3, 2, true}, {3, 2, false}, {0, 4, true}}) {
      const int64_t N = std::get<0>(sizes), M = std::get<1>(sizes);  // (no structured binding: CAPTURE under clang 14)
      const bool shared = std::get<2>(sizes);
      CAPTURE(N);
      CAPTURE(M);
      CAPTURE(shared);
      nn::TransformerConfig c;
      c.vocab = 11, c.d_model = 8, c.heads = 2, c.d_ff = 16, c.enc_layers = N, c.dec_layers = M;
      c.share_embeddings = shared;
      c.topology = "pre_ln";
      manual_seed(7);
      const nn::Transformer pre(c);  // the embeddings and the first layer's attention are drawn first, as T-Fixup's
      c.topology = "t_fixup";
      manual_seed(7);
      const nn::Transformer tf(c);
      const double enc = 0.67 * std::pow((double)N, -0.25), dec = std::pow(9.0 * M, -0.25);
      const double enc_embed = std::pow(9.0 * N, -0.25);
      // the token embeddings: Pre-LN's draws times (9L)^-1/4, the shared table by the encoder's depth
      auto embed_check = [&](const std::string& name, double factor) {
        CAPTURE(name);
        const std::vector<float> a = pre.parameter(name).to_vector<float>(), b = tf.parameter(name).to_vector<float>();
        for (size_t j = 0; j < a.size(); j++) CHECK(b[j] == doctest::Approx(a[j] * factor).epsilon(1e-6));
      };
      if (shared) embed_check("embed.weight", N == 0 ? dec : enc_embed);
      else embed_check("src_embed.weight", enc_embed), embed_check("tgt_embed.weight", dec);
      // the first layer's attention is drawn as Pre-LN's: q as it is, v × √2·s, out × s
      const std::string first = N > 0 ? "enc.0.self_attn." : "dec.0.self_attn.";
      const double s0 = N > 0 ? enc : dec;
      CHECK(tf.parameter(first + "q_proj.weight").to_vector<float>() ==
            pre.parameter(first + "q_proj.weight").to_vector<float>());
      CHECK(max_abs(sub(tf.parameter(first + "v_proj.weight"),
                        mul(pre.parameter(first + "v_proj.weight"), std::sqrt(2.0) * s0))) < 1e-6);
      CHECK(max_abs(sub(tf.parameter(first + "out_proj.weight"), mul(pre.parameter(first + "out_proj.weight"), s0))) <
            1e-6);
      // every layer: FFN xavier_uniform × s with zero biases, v and out within their scaled xavier bounds
      for (const auto& entry : tf.named_parameters()) {
        const std::string& name = entry.first;
        CAPTURE(name);
        CHECK(name.find("norm") == std::string::npos);  // no norm anywhere
        if (name.find("embed") != std::string::npos) continue;
        const double sc = name.rfind("enc.", 0) == 0 ? enc : dec;
        const double ffn_bound = sc * std::sqrt(6.0 / (8 + 16)), attn_bound = sc * std::sqrt(6.0 / 16);
        if (name.find(".fc1.weight") != std::string::npos || name.find(".fc2.weight") != std::string::npos) {
          CHECK(max_abs(entry.second) <= ffn_bound * (1 + 1e-6));
          CHECK(max_abs(entry.second) > 0.8 * ffn_bound);
        }
        if (name.find(".fc1.bias") != std::string::npos || name.find(".fc2.bias") != std::string::npos)
          CHECK(max_abs(entry.second) == 0.0);
        if (name.find("v_proj.weight") != std::string::npos || name.find("out_proj.weight") != std::string::npos) {
          CHECK(max_abs(entry.second) <= attn_bound * (1 + 1e-6));  // v: (1/√2)·√2·s, out: 1·s
          CHECK(max_abs(entry.second) > 0.7 * attn_bound);
        }
      }
    }
  }
}
