// DyT, Zhu et al. 2025's tanh in a norm's place: the `dyt` op (forward against the formula, float64
// finite-difference gradients, which the cuda suite also runs on the GPU; refusals; bfloat16), the module
// nn::DynamicTanh, and DyT as a Transformer's norm kind (config, refusals, the graph, checkpoints). PyTorch's values
// are in ops_reference.json (the op) and the transformer reference (pre_ln_dyt, post_ln_dyt); the golden path
// counts with DyT are in the topology_paths suite.
#include <bit>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "backends/cpu/vec_math.h"
#include "backends/in_float32.h"
#include "nn/checkpoint.h"
#include "test_util.h"

#if __has_include("config_json.h")  // (the translation example's reader, when the examples are built)
#include <nlohmann/json.hpp>

#include "config_json.h"
#endif

using namespace sgtest;

namespace {
Tensor f64(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector<double>(v, s); }
}  // namespace

REGISTER_GRAD_CASES {
  auto f = [](const std::vector<Tensor>& x) { return dyt(x[0], x[1], x[2], x[3]); };
  auto plain = [](const std::vector<Tensor>& x) { return dyt(x[0], x[1], Tensor(), Tensor()); };
  return std::vector<GradCase>{
      gc("dyt", "affine, 2-D", f, {leaf({3, 5}, 1), leaf({1}, 2), leaf({5}, 3), leaf({5}, 4)}),
      gc("dyt", "affine, 3-D input, 0-d alpha", f, {leaf({2, 3, 4}, 5), leaf({}, 6), leaf({4}, 7), leaf({4}, 8)}),
      gc("dyt", "no weight or bias", plain, {leaf({4, 6}, 9), leaf({1}, 10)}),
      gc("dyt", "transposed input", f, {leaf_transposed({5, 4}, 11), leaf({1}, 12), leaf({4}, 13), leaf({4}, 14)}),
      // |alpha x| up to ~10: tanh near ±1, where 1 − t² is small
      gc("dyt", "saturated", f, {leaf({3, 4}, 15, 5.0), f64({2.0}, {1}).requires_grad_(), leaf({4}, 16),
                                 leaf({4}, 17)}),
      // x also read after the dyt: its gradient is there when the walk reaches the dyt, which adds into it
      gc("dyt", "input used twice (the kernel accumulates)",
         [](const std::vector<Tensor>& x) { return dyt(x[0], x[1], x[2], x[3]) + x[0] * 3.0; },
         {leaf({3, 4}, 18), leaf({1}, 19), leaf({4}, 20), leaf({4}, 21)}),
      // x needs no gradient: the backward writes none (the CPU kernel's third mode), the parameters' are as before
      gc("dyt", "input needs no gradient", f, {constant({3, 5}, 22), leaf({1}, 23), leaf({5}, 24), leaf({5}, 25)}),
  };
}

TEST_SUITE("dyt") {
  TEST_CASE("forward: weight * tanh(alpha x) + bias over the last dim, and the gradients by hand") {
    const std::vector<double> xs{0.5, -1, 2, 0, 3, -0.25}, ws{1, 2, -0.5}, bs{0.1, -0.1, 0}, gs{1, -2, 0.5, 3, 1, -1};
    const double a = 0.7;
    Tensor x = f64(xs, {2, 3}).requires_grad_(), alpha = f64({a}, {1}).requires_grad_();
    Tensor w = f64(ws, {3}).requires_grad_(), b = f64(bs, {3}).requires_grad_();
    Tensor y = dyt(x, alpha, w, b);
    std::vector<double> want, gx(6), gw(3, 0), gb(3, 0);
    double galpha = 0;
    for (int i = 0; i < 6; i++) {
      const int c = i % 3;
      const double t = std::tanh(a * xs[i]), gu = gs[i] * ws[c] * (1 - t * t);
      want.push_back(ws[c] * t + bs[c]);
      gx[i] = a * gu, galpha += gu * xs[i], gw[c] += gs[i] * t, gb[c] += gs[i];
    }
    check_close(y, want, 1e-15, 1e-14);
    (y * f64(gs, {2, 3})).sum().backward();
    check_close(x.grad(), gx, 1e-15, 1e-13);
    check_close(alpha.grad(), {galpha}, 1e-15, 1e-13);
    check_close(w.grad(), gw, 1e-15, 1e-13);
    check_close(b.grad(), gb, 1e-15, 1e-13);
    CHECK(std::string(op_info("dyt").name) == "dyt");
    CHECK(op_info("dyt").family == OpFamily::Norm);  // counted as a norm by path analysis
  }

  TEST_CASE("float32 tanh of the CPU's DyT kernels (tanh_vec) is within 2 ulp of libm (1 measured); inf, NaN, 0 kept") {
    CHECK(max_ulp_distance(-12.0f, 12.0f, 6e-6f, cpu::tanh_vec, [](double x) { return std::tanh(x); }) <= 2);
    for (float tiny : {1e-30f, 1e-10f, 3e-5f}) CHECK(cpu::tanh_vec(tiny) == tiny);  // tanh x = x to float's precision
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(std::bit_cast<uint32_t>(cpu::tanh_vec(0.0f)) == 0u);
    CHECK(std::bit_cast<uint32_t>(cpu::tanh_vec(-0.0f)) == 0x80000000u);
    CHECK(cpu::tanh_vec(inf) == 1.0f);
    CHECK(cpu::tanh_vec(-inf) == -1.0f);
    CHECK(cpu::tanh_vec(100.0f) == 1.0f);
    CHECK(std::isnan(cpu::tanh_vec(std::numeric_limits<float>::quiet_NaN())));
  }

  TEST_CASE("on the GPU: bf16 x with float32 parameters runs the native kernels and gives the CPU's numbers") {
    if (!cuda_available()) return;  // (the cuda suite runs every gradcheck case above on the GPU as well)
    Generator g(9);
    Tensor x = Tensor::randn({64, 96}, 0, 3, DType::F32, Device::cpu(), &g).to(DType::BF16);
    Tensor a = Tensor::full({1}, 0.7), w = Tensor::randn({96}, 1, 0.3, DType::F32, Device::cpu(), &g);
    Tensor b = Tensor::randn({96}, 0, 0.1, DType::F32, Device::cpu(), &g);
    auto run = [&](Device d) {
      std::vector<Tensor> in;
      for (const Tensor& t : {x, a, w, b}) in.push_back(t.to(d).detach().requires_grad_());
      Tensor y = dyt(in[0], in[1], in[2], in[3]);
      (y.to(DType::F32) * Tensor::full(y.shape(), 0.5).to(d)).sum().backward();
      std::vector<Tensor> r{y.to(Device::cpu()).to(DType::F32)};
      for (const Tensor& t : in) r.push_back(t.grad().to(Device::cpu()).to(DType::F32));
      return r;
    };
    const std::vector<Tensor> cpu = run(Device::cpu());
    const int64_t widened = in_float32_calls();
    const std::vector<Tensor> gpu = run(Device::cuda());
    CHECK(in_float32_calls() == widened);  // no float32 copies on the GPU
    const char* what[] = {"y", "gx", "galpha", "gweight", "gbias"};
    for (size_t i = 0; i < cpu.size(); i++) {
      CAPTURE(what[i]);
      const double scale = std::max(1.0, max_abs_diff(cpu[i], Tensor::zeros(cpu[i].shape())));
      CHECK(max_abs_diff(gpu[i], cpu[i]) <= (i < 2 ? 1e-2 : 1e-4) * scale);  // bf16 outputs: one rounding apart
    }
  }

  TEST_CASE("empty inputs: empty outputs, zero parameter gradients") {
    for (const Shape& shape : {Shape{2, 0}, Shape{0, 4}}) {
      CAPTURE(shape);
      const int64_t d = shape[1];
      Tensor x = Tensor::zeros(shape, DType::F64).requires_grad_(), a = f64({0.5}, {}).requires_grad_();
      Tensor w = Tensor::ones({d}, DType::F64).requires_grad_(), b = Tensor::zeros({d}, DType::F64).requires_grad_();
      Tensor y = dyt(x, a, w, b);
      CHECK(y.shape() == shape);
      y.sum().backward();
      CHECK(a.grad().shape() == Shape{});
      CHECK(a.grad().item() == 0);
      CHECK(w.grad().shape() == Shape{d});
      for (double v : w.grad().to_vector<double>()) CHECK(v == 0);
      for (double v : b.grad().to_vector<double>()) CHECK(v == 0);
    }
  }

  TEST_CASE("refusals name the op, the tensors and what was expected") {
    Tensor x = leaf({2, 4}, 1), a = leaf({1}, 2), w = leaf({4}, 3), b = leaf({4}, 4);
    CHECK_THROWS_WITH_ALL(dyt(x, leaf({2}, 5), w, b), "dyt", "alpha must be one number", "[2]");
    CHECK_THROWS_WITH_ALL(dyt(x, leaf({1, 1}, 5), w, b), "dyt", "alpha", "[1,1]");
    CHECK_THROWS_WITH_ALL(dyt(x, Tensor(), w, b), "dyt", "alpha");
    CHECK_THROWS_WITH_ALL(dyt(x, a, leaf({3}, 6), b), "dyt", "weight", "[4]", "[3]");
    CHECK_THROWS_WITH_ALL(dyt(x, a, w, leaf({2, 4}, 6)), "dyt", "bias", "[4]");
    CHECK_THROWS_WITH_ALL(dyt(x, Tensor::ones({1}), w, b), "dyt", "alpha", "float32", "float64");
    CHECK_THROWS_WITH_ALL(dyt(Tensor::zeros({2, 4}, DType::I64), a, w, b), "dyt", "int64");
    CHECK_THROWS_WITH_ALL(dyt(Tensor::zeros({}, DType::F64), a, Tensor(), Tensor()), "dyt", "at least 1 dim");
    // bf16 x: float32 parameters, all of one dtype
    Tensor xh = Tensor::zeros({2, 4}).to(DType::BF16);
    CHECK_THROWS_WITH_ALL(dyt(xh, Tensor::ones({1}), Tensor::ones({4}), Tensor::zeros({4}).to(DType::BF16)), "dyt",
                          "differ in dtype");
  }

  TEST_CASE("a bfloat16 input with float32 parameters (autocast's stream) is computed in float32, returned in bf16") {
    Generator g(7);
    Tensor x32 = Tensor::randn({3, 8}, 0, 2, DType::F32, Device::cpu(), &g);
    Tensor xh = x32.to(DType::BF16).requires_grad_();
    Tensor xr = xh.detach().to(DType::F32).requires_grad_();  // the same values in float32
    Tensor a = Tensor::full({1}, 0.6).requires_grad_(), w = Tensor::randn({8}, 1, 0.2, DType::F32, Device::cpu(), &g);
    w.requires_grad_();
    Tensor b = Tensor::zeros({8}).requires_grad_();
    Tensor yh = dyt(xh, a, w, b);
    CHECK(yh.dtype() == DType::BF16);
    yh.to(DType::F32).sum().backward();
    const Tensor ga = a.grad().clone(), gw = w.grad().clone();
    a.zero_grad(), w.zero_grad(), b.zero_grad();
    Tensor yr = dyt(xr, a, w, b);
    CHECK(same_bits(yh, yr.detach().to(DType::BF16)));  // the float32 result, rounded once
    yr.sum().backward();
    CHECK(xh.grad().dtype() == DType::BF16);
    CHECK(a.grad().dtype() == DType::F32);
    CHECK(max_abs_diff(ga, a.grad()) < 1e-5);
    CHECK(max_abs_diff(gw, w.grad()) < 1e-5);
    CHECK(same_bits(xh.grad(), xr.grad().to(DType::BF16)));
  }

  TEST_CASE("nn::DynamicTanh: alpha [1] = alpha0, weight 1, bias 0; the module's forward is the op; refusals") {
    nn::DynamicTanh m(4, 0.8);
    std::vector<std::string> names;
    for (const auto& [name, p] : m.named_parameters()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"alpha", "weight", "bias"});
    CHECK(m.alpha.shape() == Shape{1});
    CHECK(m.alpha.item() == doctest::Approx(0.8));
    check_close(m.weight, {1, 1, 1, 1});
    check_close(m.bias, {0, 0, 0, 0});
    Tensor x = Tensor::randn({2, 3, 4});
    check_close(m.forward(x), [&] {
      std::vector<double> v;
      for (double e : x.to_vector<double>()) v.push_back(std::tanh((double)0.8f * e));
      return v;
    }(), 1e-6, 1e-6);
    CHECK_THROWS_WITH_ALL(m.forward(Tensor::zeros({2, 5})), "DynamicTanh", "[..., 4]", "[2,5]");
    CHECK_THROWS_WITH_ALL(nn::DynamicTanh(4, 0), "DynamicTanh", "alpha0");
    CHECK_THROWS_WITH_ALL(nn::DynamicTanh(0), "DynamicTanh", "dim");
    CHECK(nn::parse_norm_kind("dyt") == nn::NormKind::DynamicTanh);
    CHECK(std::string(nn::norm_kind_name(nn::NormKind::DynamicTanh)) == "dyt");
    CHECK_THROWS_WITH_ALL(nn::parse_norm_kind("dyn"), "parse_norm_kind", "dyt");
  }

  TEST_CASE("a Transformer with norm dyt: a dyt node wherever a norm stood, alpha0 from the config, trained") {
    nn::TransformerConfig c = tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh);
    c.dyt_alpha = 0.8;
    manual_seed(5);
    nn::Transformer model(c);
    int alphas = 0;
    for (const auto& [name, p] : model.named_parameters())
      if (name.size() > 6 && name.compare(name.size() - 6, 6, ".alpha") == 0) {
        alphas++;
        CHECK(p.item() == doctest::Approx(0.8));
      }
    CHECK(alphas == 2 * 2 + 1 + 2 * 3 + 1);  // Pre-LN 2+2: two norms per encoder layer, three per decoder layer, finals
    const Tensor src = Tensor::from_vector<int64_t>({4, 5, 6, 7, 3, 8, 1, 1}, {2, 4});
    const Tensor tgt_in = Tensor::from_vector<int64_t>({2, 9, 4, 2, 10, 5}, {2, 3});
    const Tensor tgt_out = Tensor::from_vector<int64_t>({9, 4, 6, 10, 5, 1}, {2, 3});
    current_tape().clear();
    Tensor loss = nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, c.pad_id, 0.1).loss;
    std::map<std::string, int> ops;
    for (const auto& n : current_tape().nodes()) ops[n->op->name]++;
    CHECK(ops["dyt"] == alphas);
    CHECK(ops["layer_norm"] == 0);
    CHECK(ops["rms_norm"] == 0);
    bool named = false;
    for (const auto& n : current_tape().nodes()) named |= n->name == "dec.1.ffn_norm.dyt";
    CHECK(named);
    nn::AdamW opt(model.named_parameters(), {.lr = 1e-2});
    double first = 0, last = 0;
    for (int step = 0; step < 20; step++) {
      if (step) loss = nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, c.pad_id, 0.1).loss;
      opt.zero_grad();
      loss.backward();
      opt.step();
      (step ? last : first) = loss.item();
    }
    CHECK(std::isfinite(last));
    CHECK(last < first);  // it learns (the 9 targets of one batch)
    for (const auto& [name, p] : model.named_parameters())
      if (name == "dec.1.ffn_norm.alpha") CHECK(p.item() != doctest::Approx(0.8));  // alpha is learned
  }

  TEST_CASE("config: dyt_alpha checked and only with norm dyt; HybridNorm refuses dyt; a checkpoint's kind names it") {
    nn::TransformerConfig c = tiny_transformer("post_ln", 13, nn::NormKind::DynamicTanh);
    c.dyt_alpha = -1;
    CHECK_THROWS_WITH_ALL(c.validate(), "dyt_alpha", "> 0");
    c.dyt_alpha = 2, c.norm = nn::NormKind::LayerNorm;
    CHECK_THROWS_WITH_ALL(c.validate(), "dyt_alpha 2", "norm dyt", "layer_norm");
    c = tiny_transformer("hybrid_norm", 13, nn::NormKind::DynamicTanh);
    CHECK_THROWS_WITH_ALL(c.validate(), "hybrid_norm", "dyt");
    // a DyT model's checkpoint is refused by a LayerNorm model of the same shape, naming both kinds
    const std::string path = (std::filesystem::temp_directory_path() / "skipgrad_test_dyt.safetensors").string();
    nn::Transformer d(tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh));
    nn::save_checkpoint(path, d);
    nn::Transformer d2(tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh));
    CHECK_NOTHROW(nn::load_checkpoint(path, d2));
    nn::Transformer ln(tiny_transformer("pre_ln"));
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, ln), "dyt", "layer_norm");
    std::filesystem::remove(path);
#if __has_include("config_json.h")
    c = tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh);
    c.dyt_alpha = 0.25;
    c.dyt_alpha_at = {{"*attn_norm", 0.8}, {"enc.final_norm", 0.125}};
    const nn::TransformerConfig back = translate::config_from_json(translate::config_to_json(c));
    CHECK(back.norm == nn::NormKind::DynamicTanh);
    CHECK(back.dyt_alpha == 0.25);
    CHECK(back.dyt_alpha_at == c.dyt_alpha_at);
    nlohmann::json old = nlohmann::json::parse(translate::config_to_json(tiny_transformer("pre_ln")));
    old.erase("dyt_alpha");  // a file from before DyT: the default
    old.erase("dyt_alpha_at");
    CHECK(translate::config_from_json(old.dump()).dyt_alpha == 0.5);
    CHECK(translate::config_from_json(old.dump()).dyt_alpha_at.empty());
#endif
  }

  TEST_CASE("dyt_alpha_at: another alpha0 for the DyTs whose names match a pattern, a later pattern winning") {
    nn::TransformerConfig c = tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh);  // 2+2 layers
    c.dyt_alpha_at = nn::parse_dyt_alpha_at("*attn_norm=0.8,enc.final_norm=0.2,dec.1.*=0.3");
    REQUIRE(c.dyt_alpha_at.size() == 3);
    CHECK(nn::dyt_alpha_at_text(c.dyt_alpha_at) == "*attn_norm=0.8,enc.final_norm=0.2,dec.1.*=0.3");
    CHECK(c.norm_summary() == "dyt (alpha0 0.5; *attn_norm 0.8; enc.final_norm 0.2; dec.1.* 0.3)");
    nn::Transformer model(c);
    auto alpha = [&](const std::string& norm) { return model.parameter(norm + ".alpha").item(); };
    CHECK(alpha("enc.0.self_attn_norm") == doctest::Approx(0.8));
    CHECK(alpha("dec.0.cross_attn_norm") == doctest::Approx(0.8));
    CHECK(alpha("enc.0.ffn_norm") == doctest::Approx(0.5));  // dyt_alpha where no pattern matches
    CHECK(alpha("dec.final_norm") == doctest::Approx(0.5));
    CHECK(alpha("enc.final_norm") == doctest::Approx(0.2));
    CHECK(alpha("dec.1.self_attn_norm") == doctest::Approx(0.3));  // both matched: the later pattern
    CHECK(alpha("dec.1.ffn_norm") == doctest::Approx(0.3));
    // the init only: the model trains them as before, and a checkpoint keeps what they became
    CHECK(model.parameter("enc.0.self_attn_norm.alpha").requires_grad());
    // a pattern that matches no DyT is refused, naming it and the DyTs there are
    c.dyt_alpha_at = {{"*.attn_norm", 0.8}};
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "'*.attn_norm' matches no DyT", "enc.0.self_attn_norm",
                          "dec.final_norm");
    // the same check for a program about to run several models (compare, sweep, the graph report)
    CHECK_THROWS_WITH_ALL(nn::check_name_patterns(c), "'*.attn_norm' matches no DyT");
    c.vocab = 0;  // (a placeholder vocabulary, as compare's and sweep's before the data is read)
    c.dyt_alpha_at = {{"*attn_norm", 0.8}};
    CHECK_NOTHROW(nn::check_name_patterns(c));
    c.vocab = 13;
    c.dyt_alpha_at = {{"*", 0.0}};
    CHECK_THROWS_WITH_ALL(c.validate(), "dyt_alpha_at", "'*' = 0");
    c.dyt_alpha_at = {{"*", 0.8}}, c.norm = nn::NormKind::LayerNorm;
    CHECK_THROWS_WITH_ALL(c.validate(), "dyt_alpha_at (*=0.8) is for norm dyt", "layer_norm");
    // the command line's form
    CHECK(nn::parse_dyt_alpha_at("").empty());
    CHECK(nn::parse_dyt_alpha_at("a=1e-1")[0].second == 0.1);
    for (const char* bad : {"*", "=0.5", "*=", "*=0.5x", "*=0.5,", "*=abc"})
      CHECK_THROWS_WITH_ALL(nn::parse_dyt_alpha_at(bad), "dyt_alpha_at", "PATTERN=ALPHA0");
    // set_dyt_alpha on any module tree: how many it set
    CHECK(nn::set_dyt_alpha(model, "enc.*", 0.4) == 5);  // 2 per encoder layer and the final one
    CHECK(alpha("enc.1.ffn_norm") == doctest::Approx(0.4));
    CHECK_THROWS_WITH_ALL(nn::set_dyt_alpha(model, "*", -1), "set_dyt_alpha", "> 0");
  }
}
