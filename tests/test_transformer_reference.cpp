// The whole encoder-decoder Transformer against an independent PyTorch reference, one file per topology:
// tests/reference/transformer_<case>.safetensors, written by scripts/make_transformer_reference.py (float64, the
// layer equations written from TOPOLOGIES.md, not from our C++). Each file holds random weights under our
// parameter names, a fixed padded batch, the expected logits, the label-smoothed loss (eps 0.1) and the gradient
// of that loss with respect to every parameter ("grad.<name>"); its metadata holds the config. We build the same
// model in float64, copy the weights in, run forward + loss + backward and compare everything to 1e-9 relative.
// tests/reference/lm_<case>.safetensors are the decoder-only language models of the same script (enc_layers 0, no
// "src_ids"), compared the same way through Transformer::forward(ids); positions_<case>.safetensors learned
// positions, RoPE (partial rotary too), ALiBi, T5's relative bias and none.
// Agreement is ~1e-15 on logits and loss. The test is sharp: leaving the positions table unrounded to float32 moves
// the logits by ~1e-8, ResiDual's final-norm ε 1e-5 instead of 1e-7 by ~1e-6 — both fail.
#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>

#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/topologies/admin.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

constexpr double kTolerance = 1e-9;  // relative, per tensor: see rel_error

std::string meta(const nn::SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata.find(key);
  check(it != f.metadata.end(), "transformer_reference", ": file has no metadata '", key, "'");
  return it->second;
}

Tensor need(const nn::SafetensorsFile& f, const std::string& name) {
  Tensor t = f.find(name);
  check(t.defined(), "transformer_reference", ": file has no tensor '", name, "'");
  return t;
}

nn::TransformerConfig config_of(const nn::SafetensorsFile& f) {
  nn::TransformerConfig c;
  c.topology = meta(f, "topology");
  c.norm = nn::parse_norm_kind(meta(f, "norm"));
  c.vocab = std::stoll(meta(f, "vocab"));
  c.d_model = std::stoll(meta(f, "d_model"));
  c.heads = std::stoll(meta(f, "heads"));
  c.d_ff = std::stoll(meta(f, "d_ff"));
  c.enc_layers = std::stoll(meta(f, "enc_layers"));
  c.dec_layers = std::stoll(meta(f, "dec_layers"));
  c.pad_id = std::stoll(meta(f, "pad_id"));
  c.norm_eps = std::stod(meta(f, "norm_eps"));
  c.mixln_post_layers = std::stoll(meta(f, "mixln_post_layers"));
  c = c.with_topology(c.topology);  // (the files give Mix-LN's option to every topology)
  if (f.metadata.count("normformer_scale_resids"))  // case normformer_resids
    c.normformer_scale_resids = meta(f, "normformer_scale_resids") == "True";
  if (f.metadata.count("normformer_fairseq_head_scale"))  // case normformer_fairseq
    c.normformer_fairseq_head_scale = meta(f, "normformer_fairseq_head_scale") == "True";
  c.dropout = c.attn_dropout = c.act_dropout = 0.0;
  c.share_embeddings = true;
  c.max_positions = 64;
  // positions_<case> files (C17) name their encoding; the others are sinusoidal
  if (f.metadata.count("positions")) {
    c.positions = nn::parse_position_encoding(meta(f, "positions"));
    c.rope_theta = std::stod(meta(f, "rope_theta"));
    if (f.metadata.count("rope_dims")) c.rope_dims = std::stoll(meta(f, "rope_dims"));
    if (f.metadata.count("relative_buckets")) c.relative_buckets = std::stoll(meta(f, "relative_buckets"));
    if (f.metadata.count("relative_max_distance"))
      c.relative_max_distance = std::stoll(meta(f, "relative_max_distance"));
    CHECK(std::stoll(meta(f, "max_positions")) == c.max_positions);  // the learned table's size
  }
  return c;
}

// max|got − expected| / max(max|expected|, 1e-6). The floor is for gradients that are zero in exact arithmetic and
// rounding noise (~1e-17) in both implementations: k_proj.bias (and a LayerNorm k_norm's bias) shifts all scores of
// a query by the same amount, which softmax ignores.
double rel_error(const Tensor& got, const Tensor& expected) {
  check(got.shape() == expected.shape(), "transformer_reference", ": shape ", got.shape(),
        " differs from the reference's ", expected.shape());
  auto x = got.to_vector<double>(), y = expected.to_vector<double>();
  double diff = 0, scale = 1e-6;
  for (size_t i = 0; i < x.size(); i++) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  return diff / scale;
}

struct Worst {
  double error = 0, logits = 0, loss = 0;
  std::string what;
  void update(double e, const std::string& name) {
    if (!(e <= error)) error = e, what = name;  // NaN counts as worst
  }
};

// `prefix` "transformer" (encoder-decoder) or "lm" (decoder-only).
Worst compare_case(const std::string& prefix, const std::string& case_name) {
  const std::string path =
      std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/" + prefix + "_" + case_name + ".safetensors";
  nn::SafetensorsFile file = nn::load_safetensors(path);
  nn::TransformerConfig cfg = config_of(file);
  manual_seed(1);
  nn::Transformer model(cfg);
  model.to(DType::F64);

  // Weights: every model parameter must be in the file, and every "grad.<name>" of the file a model parameter.
  std::set<std::string> model_names;
  for (auto& [name, p] : model.named_parameters()) {
    model_names.insert(name);
    Tensor w = file.find(name);
    check(w.defined(), case_name, ": the reference has no parameter '", name, "'");
    check(w.shape() == p.shape(), case_name, ": '", name, "' is ", w.shape(), " in the reference, ", p.shape(),
          " in the model");
    p.copy_(w.to(DType::F64));
  }
  for (auto& [name, t] : file.tensors)
    if (name.rfind("grad.", 0) == 0)
      check(model_names.count(name.substr(5)) == 1, case_name, ": the reference has a parameter '", name.substr(5),
            "' the model does not");

  Tensor tgt_in = need(file, "tgt_in_ids"), tgt_out = need(file, "tgt_out_ids");
  Tensor logits = cfg.decoder_only() ? model.forward(tgt_in) : model.forward(need(file, "src_ids"), tgt_in);
  const double eps = std::stod(meta(file, "label_smoothing"));
  nn::LabelSmoothedLoss loss = nn::label_smoothed_nll(logits, tgt_out, cfg.pad_id, eps);
  model.zero_grad();
  loss.loss.backward();

  Worst worst;
  worst.logits = rel_error(logits, need(file, "logits"));
  worst.loss = rel_error(loss.loss, need(file, "loss"));
  worst.update(worst.logits, "logits");
  worst.update(worst.loss, "loss");
  for (auto& [name, p] : model.named_parameters()) {
    Tensor g = p.grad();
    Tensor expected = need(file, "grad." + name);
    worst.update(g.defined() ? rel_error(g, expected) : rel_error(Tensor::zeros(expected.shape(), DType::F64),
                                                                   expected),
                 "grad." + name);
  }
  return worst;
}

const char* const kCases[] = {"post_ln",     "pre_ln",  "pre_ln_rms", "resi_dual",     "hybrid_norm",
                              "hybrid_norm_rms", "hybrid_norm_star", "deep_norm", "sandwich_ln", "peri_ln",
                              "mix_ln",      "res_post_norm", "rezero", "admin", "b2t",
                              "layer_scale", "sub_ln", "normformer", "normformer_resids",
                              "t_fixup",     "normformer_fairseq", "pre_ln_dyt", "post_ln_dyt"};

void compare_all(const std::string& prefix) {
  std::ostringstream summary;
  for (std::string c : kCases) {
    INFO("case " << prefix << "_" << c);
    Worst w;
    try {
      w = compare_case(prefix, c);
    } catch (const skipgrad::Error& e) {
      FAIL_CHECK(c << ": " << std::string(e.what()));
      continue;
    }
    summary << "  " << c << ": logits " << w.logits << ", loss " << w.loss << ", worst " << w.error << " (" << w.what
            << ")\n";
    CHECK_MESSAGE(w.error <= kTolerance, c, ": worst relative error ", w.error, " in ", w.what, " (tolerance ",
                  kTolerance, ")");
  }
  MESSAGE(prefix << " reference:\n" << summary.str());
}

}  // namespace

TEST_SUITE("transformer_reference") {
  TEST_CASE("every topology: logits, loss and all gradients match the PyTorch reference (float64)") {
    compare_all("transformer");
  }

  TEST_CASE("decoder-only language model, every topology: logits, loss and all gradients match the reference") {
    compare_all("lm");
  }

  TEST_CASE("learned positions, RoPE, ALiBi, T5 and none (decoder-only, encoder-decoder): logits, loss, gradients "
            "match") {
    std::ostringstream summary;
    for (const char* c :
         {"lm_rope_pre_ln", "lm_rope_hybrid_norm", "lm_learned_post_ln", "transformer_rope_resi_dual",
          "lm_nope_peri_ln", "lm_alibi_post_ln", "transformer_alibi_hybrid_norm", "lm_rope_partial_pre_ln",
          "lm_t5_pre_ln", "transformer_t5_post_ln"}) {
      INFO("case positions_" << std::string(c));
      const Worst w = compare_case("positions", c);
      summary << "  " << c << ": logits " << w.logits << ", loss " << w.loss << ", worst " << w.error << " ("
              << w.what << ")\n";
      CHECK_MESSAGE(w.error <= kTolerance, c, ": worst relative error ", w.error, " in ", w.what);
    }
    MESSAGE("positions reference:\n" << summary.str());
  }

  TEST_CASE("admin_profile_init: the profiled ω and ratios match the reference's profiling pass") {
    nn::SafetensorsFile file =
        nn::load_safetensors(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/transformer_admin.safetensors");
    nn::TransformerConfig cfg = config_of(file);
    manual_seed(1);
    nn::Transformer model(cfg);
    model.to(DType::F64);
    for (auto& [name, p] : model.named_parameters()) p.copy_(need(file, name).to(DType::F64));  // ω: not yet 1
    model.train();
    const auto [enc_ratio, dec_ratio] = nn::admin_profile_init(model, need(file, "src_ids"), need(file, "tgt_in_ids"));
    CHECK(model.is_training());  // the mode comes back
    CHECK(enc_ratio == doctest::Approx(need(file, "profiled_ratio.enc").item()).epsilon(1e-12));
    CHECK(dec_ratio == doctest::Approx(need(file, "profiled_ratio.dec").item()).epsilon(1e-12));
    int omegas = 0;
    for (const auto& named : model.named_parameters())  // not a structured binding: clang 14 cannot capture it
      if (const std::string& name = named.first; name.size() > 6 && name.compare(name.size() - 6, 6, "_omega") == 0) {
        INFO(name);
        CHECK(rel_error(named.second, need(file, "profiled." + name)) < 1e-12);
        omegas++;
      }
    CHECK(omegas == 2 * 2 + 2 * 3);
    // the first sublayer of each stack gets r = 1; the ratios grow along a stack
    for (double v : need(file, "profiled.enc.0.self_attn_omega").to_vector<double>()) CHECK(v == 1.0);
    CHECK(enc_ratio > 1.0);
    // Transformer::init_from_batch, as training code calls it for any topology: the same ω for Admin, nothing
    // for the others
    manual_seed(1);
    nn::Transformer again(cfg);
    again.to(DType::F64);
    for (auto& [name, p] : again.named_parameters()) p.copy_(need(file, name).to(DType::F64));
    CHECK(again.init_from_batch(need(file, "src_ids"), need(file, "tgt_in_ids")).find("admin: omega") == 0);
    const std::vector<std::pair<std::string, Tensor>> profiled = model.named_parameters(),
                                                      via_hook = again.named_parameters();
    REQUIRE(profiled.size() == via_hook.size());
    for (size_t i = 0; i < profiled.size(); i++) {
      CHECK(profiled[i].first == via_hook[i].first);
      CHECK(rel_error(via_hook[i].second, profiled[i].second) == 0);
    }
    cfg.topology = "post_ln";
    nn::Transformer post(cfg);
    CHECK_THROWS_WITH_ALL(nn::admin_profile_init(post, need(file, "src_ids"), need(file, "tgt_in_ids")),
                          "admin_profile_init", "'post_ln', not 'admin'");
    const std::vector<Tensor> before = post.parameters();
    std::vector<std::vector<float>> values;
    for (const Tensor& p : before) values.push_back(p.to_vector<float>());
    CHECK(post.init_from_batch(need(file, "src_ids"), need(file, "tgt_in_ids")).empty());
    for (size_t i = 0; i < before.size(); i++) CHECK(before[i].to_vector<float>() == values[i]);
  }

  TEST_CASE("decoder-only Admin: the profiled ω match the reference's profiling pass of the language model") {
    nn::SafetensorsFile file =
        nn::load_safetensors(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/lm_admin.safetensors");
    nn::TransformerConfig cfg = config_of(file);
    REQUIRE(cfg.decoder_only());
    manual_seed(1);
    nn::Transformer model(cfg);
    model.to(DType::F64);
    for (auto& [name, p] : model.named_parameters()) p.copy_(need(file, name).to(DType::F64));
    const std::string line = model.init_from_batch(Tensor(), need(file, "tgt_in_ids"));
    CHECK(line.find("admin: omega profiled on the first batch; last ratio ") == 0);
    CHECK(line.find("encoder") == std::string::npos);
    int omegas = 0;
    for (const auto& named : model.named_parameters())
      if (const std::string& name = named.first; name.size() > 6 && name.compare(name.size() - 6, 6, "_omega") == 0) {
        INFO(name);
        CHECK(rel_error(named.second, need(file, "profiled." + name)) < 1e-12);
        omegas++;
      }
    CHECK(omegas == 3 * 2);  // three layers of [SA, F]
    const auto [enc_ratio, dec_ratio] = nn::admin_profile_init(model, Tensor(), need(file, "tgt_in_ids"));
    CHECK(enc_ratio == 1.0);  // no encoder: its ratio stays where it starts
    CHECK(dec_ratio == doctest::Approx(need(file, "profiled_ratio.dec").item()).epsilon(1e-12));
    CHECK_THROWS_WITH_ALL(nn::admin_profile_init(model, need(file, "tgt_in_ids"), need(file, "tgt_in_ids")),
                          "Transformer::forward", "decoder-only", "takes no src_ids");
  }
}
