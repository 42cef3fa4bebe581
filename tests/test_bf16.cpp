// bfloat16 tensors and bf16 mixed precision (docs/mixed_precision.md): the conversion against an independent
// rounding, every backend kernel on bf16 operands (CPU, and CUDA against the CPU when a device is present),
// autocast's casts, promotion and gradients, a checkpoint round trip, and a short training run against float32.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "backends/in_float32.h"
#include "cuda_test_util.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace sgtest;

namespace {

// The nearest bfloat16 to f, ties to the even one, found by comparing distances in double (not by the bit trick
// tensor/bfloat16.h uses): the two bfloat16s around f are its truncation and the next one away from zero.
uint16_t nearest_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  float flo, fhi;
  std::memcpy(&flo, &lo, 4);
  std::memcpy(&fhi, &hi, 4);
  const double dlo = std::fabs((double)f - flo), dhi = std::fabs((double)fhi - f);
  if (std::isinf(fhi)) {  // above the largest bfloat16 B: inf from B + half an ulp on (a tie goes to inf, B is odd)
    const uint32_t half_bits = (lo & 0x80000000u) | 0x7f7f8000u;
    float half;
    std::memcpy(&half, &half_bits, 4);
    return (uint16_t)((std::fabs(f) < std::fabs(half) ? lo : hi) >> 16);
  }
  if (dlo < dhi) return (uint16_t)(lo >> 16);
  if (dhi < dlo) return (uint16_t)(hi >> 16);
  return (uint16_t)(((lo >> 16) & 1u) ? hi >> 16 : lo >> 16);
}

// x rounded to bfloat16 and back: what a bf16 tensor holds for x.
Tensor rounded(const Tensor& x) { return x.to(DType::BF16).to(DType::F32); }

void check_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  const auto g = got.to(DType::F64).to(Device::cpu()).to_vector<double>();
  const auto w = want.to(DType::F64).to(Device::cpu()).to_vector<double>();
  for (size_t i = 0; i < g.size(); i++) {
    INFO("element " << i << ": " << g[i] << " vs " << w[i]);
    CHECK(std::fabs(g[i] - w[i]) <= atol + rtol * std::fabs(w[i]));
  }
}

Tensor randn32(const Shape& s, uint64_t seed, Device d = Device::cpu()) {
  Generator g(seed);
  return Tensor::randn(s, 0, 1, DType::F32, Device::cpu(), &g).to(d);
}

// One bfloat16 ulp at |x| is 2^-7 |x| at most: results computed in float and rounded once agree within that.
constexpr double kBf16Rtol = 1.0 / 128;

}  // namespace

TEST_SUITE("bf16") {
  TEST_CASE("float -> bfloat16 rounds to nearest even, as an independent rounding does") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> bits;
    int64_t wrong = 0;
    uint32_t first_wrong = 0;
    for (int i = 0; i < 200000; i++) {
      uint32_t u = bits(rng);
      float f;
      std::memcpy(&f, &u, 4);
      if (std::isnan(f) || bf16(f).bits == nearest_bf16(f)) continue;
      if (wrong++ == 0) first_wrong = u;
    }
    INFO("first wrong float bits 0x" << std::hex << first_wrong);
    CHECK(wrong == 0);
    // ties: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes to the even 1; 1 + 3 * 2^-8 goes up to 1 + 2^-6
    CHECK(bf16(1.00390625f).bits == 0x3f80);
    CHECK(bf16(1.01171875f).bits == 0x3f82);
    CHECK(bf16(-0.0f).bits == 0x8000);
    CHECK(bf16(std::numeric_limits<float>::infinity()).bits == 0x7f80);
    CHECK(bf16(std::numeric_limits<float>::max()).bits == 0x7f80);  // above the largest bfloat16: inf
    const bf16 nan(std::numeric_limits<float>::quiet_NaN());
    CHECK(std::isnan((float)nan));
    uint32_t snan_bits = 0x7f800001u;  // a NaN whose payload is in the low bits only must not become inf
    float snan;
    std::memcpy(&snan, &snan_bits, 4);
    CHECK(std::isnan((float)bf16(snan)));
    for (uint32_t b = 0; b < 0x10000; b += 97) {  // widening is exact: bf16 -> float -> bf16 gives the same bits
      const bf16 h = bf16::from_bits((uint16_t)b);
      if (!std::isnan((float)h)) CHECK(bf16((float)h).bits == h.bits);
    }
  }

  TEST_CASE("bf16 tensors: creation, conversions, item, printing, errors") {
    Tensor x = Tensor::from_vector<float>({1.0f, 3.14159f, -2.5f, 1e-3f}, {2, 2});
    Tensor h = x.to(DType::BF16);
    CHECK(h.dtype() == DType::BF16);
    CHECK(h.meta_str() == "bfloat16[2,2] cpu");
    CHECK(h.to_vector<bf16>()[1].bits == bf16(3.14159f).bits);
    CHECK(h.to(DType::F64).to_vector<double>()[1] == 3.140625);
    CHECK(Tensor::full({3}, 2.0, DType::BF16).sum().item() == 6.0);
    CHECK(Tensor::arange(0, 4, 1, DType::BF16).to_vector<bf16>()[3].bits == bf16(3.0f).bits);
    CHECK(Tensor::full({}, 1e10, DType::BF16).to(DType::I64).item() == (double)(float)bf16(1e10f));
    CHECK(Tensor::randn({64}, 0, 1, DType::BF16).dtype() == DType::BF16);
    // rand stays in [low, high) after rounding to 8 significant bits (1 in 500 of [0, 1) would round to 1.0; 1 in 5
    // of [0.99, 1), and below 0.99 as often), on every device
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (Device d : devices)
      for (const auto& range : {std::pair{0.0, 1.0}, std::pair{0.99, 1.0}, std::pair{-1.0, -0.5}, std::pair{-0.25, 0.0}}) {
        const double low = range.first, high = range.second;  // not a structured binding: CAPTURE cannot take one
        CAPTURE(d.str());
        CAPTURE(high);
        Generator g(1);
        Tensor r = Tensor::rand({20000}, low, high, DType::BF16, d, &g);
        const std::vector<double> u = r.to(DType::F64).to(Device::cpu()).to_vector<double>();
        const auto [lo, hi] = std::minmax_element(u.begin(), u.end());
        CHECK(*lo >= low);
        CHECK(*hi < high);
        CHECK(*hi > *lo);
      }
    // mixing bfloat16 with an integer tensor is not promotion: an error naming the integer operand
    CHECK_THROWS_WITH_AS(matmul(h, Tensor::ones({2, 2}, DType::I64)), doctest::Contains("int64[2,2]"), Error);
    CHECK_THROWS_WITH_AS(h + Tensor::ones({2, 2}, DType::I64), doctest::Contains("dtypes differ"), Error);
  }

  TEST_CASE("every backend kernel takes bf16 operands: the float32 result, rounded once") {
    // CPU: bf16 kernels compute in float32 on the widened values, so the result is the float32 op on rounded
    // inputs, rounded to bf16 (float sums in a different order can move a result by one bf16 ulp at most).
    Tensor a = randn32({6, 40}, 1), b = randn32({6, 40}, 2), w = randn32({40}, 3), bias = randn32({40}, 4);
    Tensor ra = rounded(a), rb = rounded(b);
    Tensor ha = a.to(DType::BF16), hb = b.to(DType::BF16);
    auto same = [&](const Tensor& got, const Tensor& want_f32, const char* what) {
      CHECK(got.dtype() == DType::BF16);
      check_close(got.to(DType::F32), rounded(want_f32), 1e-6, kBf16Rtol, what);
    };
    same(ha + hb, ra + rb, "add");
    same(ha * hb, ra * rb, "mul");
    same(ha.relu(), ra.relu(), "relu");
    same(gelu(ha), gelu(ra), "gelu");
    same(ha.exp(), ra.exp(), "exp");
    same(softmax(ha, -1), softmax(ra, -1), "softmax");
    same(layer_norm(ha, rounded(w).to(DType::BF16), rounded(bias).to(DType::BF16)),
         layer_norm(ra, rounded(w), rounded(bias)), "layer_norm");
    same(rms_norm(ha, rounded(w).to(DType::BF16)), rms_norm(ra, rounded(w)), "rms_norm");
    same(matmul(ha, hb, false, true), matmul(ra, rb, false, true), "matmul");
    same(ha.sum({1}), ra.sum({1}), "sum");
    same(cumsum(ha, 1), cumsum(ra, 1), "cumsum");
    same(where(gt(ha, hb), ha, hb), where(gt(ra, rb), ra, rb), "where");
    Tensor ids = Tensor::from_vector<int64_t>({0, 5, 2}, {3});
    same(embedding(ha, ids), embedding(ra, ids), "embedding");
    Tensor targets = Tensor::from_vector<int64_t>({1, 7, 39, 0, 3, 3}, {6});
    // cross entropy of bf16 logits computes on them in float32 and returns a float32 loss
    Tensor ce = cross_entropy(ha, targets, -100, 0.1);
    CHECK(ce.dtype() == DType::F32);
    check_close(ce, cross_entropy(ra, targets, -100, 0.1), 1e-6, 1e-6, "cross_entropy");
    Tensor q = randn32({2, 2, 5, 8}, 5), k = randn32({2, 2, 7, 8}, 6), v = randn32({2, 2, 7, 8}, 7);
    AttentionOptions causal;
    causal.causal = true;
    // attention stores its scores and probabilities in bf16 too: each output sums terms p v rounded at |v| ~ 1
    Tensor att = attention(q.to(DType::BF16), k.to(DType::BF16), v.to(DType::BF16), Tensor(), causal);
    CHECK(att.dtype() == DType::BF16);
    check_close(att.to(DType::F32), attention(rounded(q), rounded(k), rounded(v), Tensor(), causal), 1e-2,
                2 * kBf16Rtol, "attention");
  }

  TEST_CASE("bf16 backward: gradients of bf16 tensors are bf16 and match float32's within bf16 rounding") {
    Tensor x32 = rounded(randn32({8, 16}, 11)), w32 = rounded(randn32({12, 16}, 12));
    Tensor x = x32.to(DType::BF16), w = w32.to(DType::BF16);
    x.requires_grad_();
    w.requires_grad_();
    x32.requires_grad_();
    w32.requires_grad_();
    (softmax(linear(x, w).relu(), -1) * Tensor::arange(0, 12, 1, DType::BF16)).sum().backward();
    (softmax(linear(x32, w32).relu(), -1) * Tensor::arange(0, 12, 1)).sum().backward();
    CHECK(x.grad().dtype() == DType::BF16);
    check_close(x.grad().to(DType::F32), x32.grad(), 2e-2, 4 * kBf16Rtol, "x.grad");
    check_close(w.grad().to(DType::F32), w32.grad(), 2e-2, 4 * kBf16Rtol, "w.grad");
  }

  TEST_CASE("bf16 backward of the norms, embedding, cross entropy and attention (with dropout) on both devices") {
    // f(inputs) = a scalar through every op; the gradients of the bf16 inputs against float32's on rounded inputs
    auto run = [](DType dt, Device d, std::vector<Tensor>& grads) {
      Tensor x = rounded(randn32({2, 6, 16}, 41)).to(dt).to(d), g = rounded(randn32({16}, 42)).to(dt).to(d);
      Tensor table = rounded(randn32({10, 16}, 43)).to(dt).to(d);
      for (Tensor* t : {&x, &g, &table}) t->requires_grad_();
      Tensor ids = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2}, {2, 6}, d);
      Tensor h = layer_norm(x + embedding(table, ids), g, Tensor()) + rms_norm(x, g);
      Tensor q = h.reshape({2, 6, 4, 4}).transpose(1, 2);
      AttentionOptions opt;
      opt.causal = true;
      opt.dropout = 0.2;
      opt.training = true;
      Generator gen(3);  // the same dropout draws on every device and dtype
      opt.gen = &gen;
      Tensor a = attention(q, q, q, Tensor(), opt).transpose(1, 2).reshape({12, 16});
      Tensor targets = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {12}, d);
      cross_entropy(a, targets, -100, 0.1).backward();
      grads = {x.grad(), g.grad(), table.grad()};
    };
    std::vector<Tensor> want, got;
    run(DType::F32, Device::cpu(), want);
    run(DType::BF16, Device::cpu(), got);
    const char* names[] = {"x.grad", "gamma.grad", "table.grad"};
    for (int i = 0; i < 3; i++) {
      CHECK(got[i].dtype() == DType::BF16);
      check_close(got[i].to(DType::F32), want[i], 3e-2, 8 * kBf16Rtol, names[i]);
    }
    if (!cuda_available()) return;
    std::vector<Tensor> gpu;
    run(DType::BF16, Device::cuda(), gpu);
    for (int i = 0; i < 3; i++)
      check_close(gpu[i].to(DType::F32), got[i].to(DType::F32), 1e-2, 4 * kBf16Rtol, names[i]);
  }

  TEST_CASE("to(BF16) and back: the gradient is cast back to the source dtype") {
    Tensor x = leaf({5}, 3);  // float64
    Tensor y = x.to(DType::BF16);
    (y * y.to(DType::F32).to(DType::BF16)).to(DType::F64).sum().backward();
    REQUIRE(x.grad().dtype() == DType::F64);
    // d/dx sum(r(x)^2) with r the rounding (derivative 1 where it is defined): 2 r(x), in bf16 arithmetic
    const auto g = x.grad().to_vector<double>(), xv = x.detach().to(DType::BF16).to(DType::F64).to_vector<double>();
    for (size_t i = 0; i < g.size(); i++) CHECK(g[i] == doctest::Approx(2 * xv[i]).epsilon(kBf16Rtol));
  }

  TEST_CASE("autocast: products in bf16, norms and losses in float32, float32 master gradients, casts in the graph") {
    Tensor x = randn32({4, 8}, 21), w = randn32({6, 8}, 22), b = randn32({6}, 23), g = randn32({6}, 24);
    w.requires_grad_();
    b.requires_grad_();
    g.requires_grad_();
    current_tape().clear();
    Tensor y, n, loss;
    {
      AutocastBF16 on;
      CHECK(autocast_bf16_enabled());
      y = linear(x, w, b);
      CHECK(y.dtype() == DType::BF16);
      n = layer_norm(y, g, Tensor());  // bf16 input: normalised in float32 with the float32 gamma, output bf16
      CHECK(n.dtype() == DType::BF16);
      CHECK(layer_norm(y.to(DType::F32), g, Tensor()).dtype() == DType::F32);  // a float32 input stays float32
      CHECK((y.to(DType::F32) + y).dtype() == DType::F32);  // float32 with bf16: float32, bf16 read as it is
      CHECK(matmul(n, n, false, true).dtype() == DType::BF16);
      loss = cross_entropy(y, Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4}));
      CHECK(loss.dtype() == DType::F32);
      {
        AutocastBF16 off(false);
        CHECK(linear(x, w, b).dtype() == DType::F32);
      }
      // float64 with float32: the op's own dtype error, naming the dtypes the caller passed (not a bf16 cast)
      CHECK_THROWS_WITH_ALL(matmul(x.to(DType::F64), w, false, true), "matmul", "float64", "float32");
    }
    CHECK_FALSE(autocast_bf16_enabled());
    CHECK(linear(x, w, b).dtype() == DType::F32);
    int casts = 0;
    for (const auto& node : current_tape().nodes()) casts += std::string(node->op->name) == "to_dtype";
    CHECK(casts == 4);  // w, b to bf16 (x needs no gradient: not recorded) and the two explicit y.to(F32); the
                        // norm, the add and the loss read the bf16 y as it is
    // the graph shows each node's dtype, and reads bf16 values for its norms
    Graph graph = Graph::from_tape(current_tape());
    const GraphNode& lin = graph.at(graph.id_of(y));
    CHECK(lin.op == "linear");
    CHECK(lin.dtype == "bfloat16");
    const double y_norm = std::sqrt(sum(y.detach().to(DType::F64) * y.detach().to(DType::F64)).item());
    CHECK(lin.value_norm == doctest::Approx(y_norm).epsilon(1e-6));
    CHECK(graph.at(lin.inputs[1]).op == "to_dtype");  // the weight, cast (x needs no gradient: not recorded)
    loss.backward();
    CHECK(w.grad().dtype() == DType::F32);
    CHECK(b.grad().dtype() == DType::F32);
    // against float32 throughout: bf16 rounding of x, w, b and y only
    Tensor w2 = w.detach(), b2 = b.detach();
    w2.requires_grad_();
    b2.requires_grad_();
    cross_entropy(linear(x, w2, b2), Tensor::from_vector<int64_t>({0, 1, 2, 3}, {4})).backward();
    check_close(w.grad(), w2.grad(), 2e-2, 5e-2, "w.grad under autocast vs float32");
  }

  TEST_CASE("a bf16 checkpoint round-trips through safetensors (dtype BF16)") {
    Tensor t = randn32({3, 4}, 31).to(DType::BF16);
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("skipgrad_bf16_" + std::to_string(::getpid()) + ".safetensors"))
                                 .string();
    nn::save_safetensors(path, {{"t", t}});
    Tensor loaded = nn::load_safetensors(path).find("t");
    REQUIRE(loaded.dtype() == DType::BF16);
    const auto a = t.to_vector<bf16>(), c = loaded.to_vector<bf16>();
    for (size_t i = 0; i < a.size(); i++) CHECK(a[i].bits == c[i].bits);
    std::filesystem::remove(path);
  }

  TEST_CASE("CUDA bf16 kernels agree with the CPU's") {
    if (!have_cuda()) return;
    Device gpu = Device::cuda();
    Tensor a = randn32({6, 40}, 1), b = randn32({6, 40}, 2), w = randn32({40}, 3);
    Tensor ha = a.to(DType::BF16), hb = b.to(DType::BF16);
    Tensor ga = ha.to(gpu), gb = hb.to(gpu);
    auto same = [&](const Tensor& on_gpu, const Tensor& on_cpu, const char* what) {
      CHECK(on_gpu.dtype() == DType::BF16);
      check_close(on_gpu.to(DType::F32), on_cpu.to(DType::F32), 1e-6, kBf16Rtol, what);
    };
    same(ga + gb, ha + hb, "add");
    same(ga * gb, ha * hb, "mul");
    same(ga.relu(), ha.relu(), "relu");
    same(gelu(ga), gelu(ha), "gelu");
    same(softmax(ga, -1), softmax(ha, -1), "softmax");
    Generator g1(9), g2(9);  // the same draws on both devices
    same(dropout(ga, 0.3, true, &g1), dropout(ha, 0.3, true, &g2), "dropout");
    same(matmul(ga, gb, false, true), matmul(ha, hb, false, true), "matmul");
    same(ga.sum({0}), ha.sum({0}), "sum");
    same(layer_norm(ga, w.to(DType::BF16).to(gpu), Tensor()), layer_norm(ha, w.to(DType::BF16), Tensor()),
         "layer_norm");
    Tensor weight = randn32({12, 40}, 8).to(DType::BF16), bias = randn32({12}, 9).to(DType::BF16);
    same(linear(ga, weight.to(gpu), bias.to(gpu)), linear(ha, weight, bias), "linear with bias");
    Tensor q = randn32({2, 3, 5, 8}, 5).to(DType::BF16), k = randn32({2, 3, 7, 8}, 6).to(DType::BF16),
           v = randn32({2, 3, 7, 8}, 7).to(DType::BF16);
    same(attention(q.to(gpu), k.to(gpu), v.to(gpu)), attention(q, k, v), "attention");
    // backward through the native kernels
    Tensor xc = ha.detach(), xg = ga.detach();
    xc.requires_grad_();
    xg.requires_grad_();
    (softmax(xc.relu(), -1) * hb).sum().backward();
    (softmax(xg.relu(), -1) * gb).sum().backward();
    same(xg.grad(), xc.grad(), "softmax/relu backward");
  }
}

namespace {
nn::TransformerConfig small_model(const std::string& topology, int64_t d_model = 32, int64_t heads = 4) {
  nn::TransformerConfig c;
  c.topology = topology;
  c.enc_layers = c.dec_layers = 2;
  c.d_model = d_model;
  c.heads = heads;
  c.d_ff = 64;
  c.vocab = 24;
  c.pad_id = 0;
  c.dropout = 0;
  return c;
}
// A copy task: the decoder reproduces the source shifted by one (ids 3..23; 0 pads, 1 starts).
struct CopyBatch {
  Tensor src, tgt_in, tgt_out;
};
CopyBatch copy_batch(Device d) {
  Generator g(5);
  Tensor src = Tensor::randn({8, 10}, 0, 1, DType::F64, Device::cpu(), &g);
  std::vector<int64_t> s, in, out;
  for (double v : src.to_vector<double>()) s.push_back(3 + (int64_t)std::llround(std::fabs(v) * 7) % 21);
  for (int64_t b = 0; b < 8; b++)
    for (int64_t t = 0; t < 10; t++) {
      in.push_back(t == 0 ? 1 : s[b * 10 + t - 1]);
      out.push_back(s[b * 10 + t]);
    }
  return {Tensor::from_vector(s, {8, 10}, d), Tensor::from_vector(in, {8, 10}, d),
          Tensor::from_vector(out, {8, 10}, d)};
}
// Losses of `steps` Adam steps from the same initial weights, with or without autocast (one_scope: a single
// precast scope around all the steps, so each step's weights are cast again where the optimizer wrote them).
std::vector<double> train_losses(const std::string& topology, bool autocast, int steps, Device d = Device::cpu(),
                                 int64_t d_model = 32, int64_t heads = 4, bool precast = false,
                                 bool one_scope = false) {
  manual_seed(11);
  nn::Transformer model(small_model(topology, d_model, heads));
  model.to(d);
  nn::AdamOptions ao;
  ao.lr = 3e-3;
  nn::Adam opt(model.named_parameters(), ao);
  CopyBatch b = copy_batch(d);
  std::vector<double> losses;
  std::optional<AutocastBF16> all_steps;
  if (one_scope) all_steps.emplace(autocast).precast(model.parameters());
  for (int i = 0; i < steps; i++) {
    Tensor loss;
    {
      std::optional<AutocastBF16> on;
      if (!one_scope) on.emplace(autocast);
      if (precast && on) on->precast(model.parameters());
      loss = nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, 0, 0.1).loss;
    }
    loss.backward();
    opt.step();
    opt.zero_grad();
    losses.push_back(loss.item());
  }
  for (const Tensor& p : model.parameters()) REQUIRE(p.dtype() == DType::F32);  // master weights stay float32
  return losses;
}
}  // namespace

TEST_SUITE("bf16") {
  TEST_CASE("autocast trains every topology as float32 does, within bf16 rounding") {
    for (const std::string& topology : nn::topology_names()) {
      INFO(topology);
      const std::vector<double> f32 = train_losses(topology, false, 25), mixed = train_losses(topology, true, 25);
      CHECK(mixed[0] == doctest::Approx(f32[0]).epsilon(1e-2));  // the same model, products rounded to bf16
      CHECK(mixed.back() < 0.6 * mixed[0]);                          // it learns
      CHECK(mixed.back() == doctest::Approx(f32.back()).epsilon(0.1));
    }
  }

  TEST_CASE("autocast on the GPU gives the CPU's losses") {
    if (!have_cuda()) return;
    const std::vector<double> cpu = train_losses("pre_ln", true, 4),
                              gpu = train_losses("pre_ln", true, 4, Device::cuda());
    for (size_t i = 0; i < cpu.size(); i++) CHECK(gpu[i] == doctest::Approx(cpu[i]).epsilon(2e-2));
    // heads of 6 bf16 (12 bytes): attention's batched GEMMs run one entry at a time (no 16-byte alignment)
    const std::vector<double> cpu6 = train_losses("pre_ln", true, 2, Device::cpu(), 24, 4),
                              gpu6 = train_losses("pre_ln", true, 2, Device::cuda(), 24, 4);
    for (size_t i = 0; i < cpu6.size(); i++) CHECK(gpu6[i] == doctest::Approx(cpu6[i]).epsilon(2e-2));
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("an autocast training step on the GPU runs native bf16 kernels only (no float32 detours)") {
    if (!have_cuda()) return;
    train_losses("post_ln", true, 1, Device::cuda());  // warm: plans, allocator
    const int64_t before = in_float32_calls();
    train_losses("post_ln", true, 2, Device::cuda());
    CHECK(in_float32_calls() == before);
    // the CPU runs bf16 through float32 copies: the counter sees it
    train_losses("post_ln", true, 1);
    CHECK(in_float32_calls() > before);
  }
}

namespace {
// A bf16 tensor from the reference file's {"shape", "bits"}.
Tensor from_bits(const nlohmann::json& j) {
  std::vector<bf16> v;
  for (const auto& b : j.at("bits")) v.push_back(bf16::from_bits((uint16_t)b.get<int>()));
  return Tensor::from_vector(v, j.at("shape").get<Shape>());
}
}  // namespace

TEST_SUITE("bf16") {
  TEST_CASE("against PyTorch: the rounding of 4000 floats and bf16 ops (tests/reference/bf16_reference.json)") {
    std::ifstream f(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/bf16_reference.json");
    REQUIRE(f.good());
    const nlohmann::json ref = nlohmann::json::parse(f);
    MESSAGE("reference from torch " << ref.at("torch_version").get<std::string>());
    int64_t roundings = 0;
    for (const auto& r : ref.at("rounding")) {
      const uint32_t u = r[0].get<uint32_t>();
      float x;
      std::memcpy(&x, &u, 4);
      INFO("float bits 0x" << std::hex << u);
      CHECK(bf16(x).bits == r[1].get<uint16_t>());
      roundings++;
    }
    CHECK(roundings == 4000);
    // ops: torch's float32 op on the bf16 inputs, rounded once (as skipgrad computes; the order of sums may differ):
    // within one bf16 ulp
    const auto& ops = ref.at("ops");
    auto in = [&](const char* op, int i) { return from_bits(ops.at(op).at("inputs").at(i)); };
    auto check_op = [&](const char* op, const Tensor& got) {
      const Tensor want = from_bits(ops.at(op).at("out"));
      REQUIRE(got.shape() == want.shape());
      const auto g = got.to(DType::F32).to_vector<float>(), w = want.to(DType::F32).to_vector<float>();
      for (size_t i = 0; i < g.size(); i++) {
        int e = 0;
        std::frexp(w[i], &e);
        const double ulp = w[i] == 0 ? 1e-30 : std::ldexp(1.0, e - 8);
        INFO(std::string(op) << " element " << i << ": " << g[i] << " vs torch " << w[i]);
        CHECK(std::fabs((double)g[i] - w[i]) <= ulp);
      }
    };
    check_op("matmul", matmul(in("matmul", 0), in("matmul", 1)));
    check_op("linear", linear(in("linear", 0), in("linear", 1), in("linear", 2)));
    check_op("softmax", softmax(in("softmax", 0), -1));
    check_op("log_softmax", log_softmax(in("log_softmax", 0), -1));
    check_op("gelu", gelu(in("gelu", 0)));
    check_op("layer_norm", layer_norm(in("layer_norm", 0), in("layer_norm", 1), in("layer_norm", 2)));
    check_op("add_broadcast", in("add_broadcast", 0) + in("add_broadcast", 1));
    check_op("mul_broadcast", in("mul_broadcast", 0) * in("mul_broadcast", 1));
    check_op("sum_rows", in("sum_rows", 0).sum({1}));
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("precast: a model's weights cast in one launch; the graph and the training are those without it") {
    auto forward_graph = [](bool precast) {
      manual_seed(4);
      nn::Transformer model(small_model("pre_ln"));
      CopyBatch b = copy_batch(Device::cpu());
      current_tape().clear();
      AutocastBF16 on;
      if (precast) {
        on.precast(model.parameters());
        on.precast(model.parameters());  // again: nothing new to cast
        on.precast({Tensor::ones({2}, DType::F64), Tensor()});  // float64 and undefined tensors are left alone
      }
      model.forward(b.src, b.tgt_in);
      return Graph::from_tape(current_tape());
    };
    const Graph plain = forward_graph(false), pre = forward_graph(true);
    REQUIRE(pre.nodes.size() == plain.nodes.size());  // no cast recorded for the norms' weights nobody multiplies
    for (size_t i = 0; i < pre.nodes.size(); i++) {
      CHECK(pre.nodes[i].name == plain.nodes[i].name);
      CHECK(pre.nodes[i].op == plain.nodes[i].op);
      CHECK(pre.nodes[i].inputs == plain.nodes[i].inputs);
    }
    const GraphNode& q = pre.at(pre.find("enc.0.self_attn.q_proj.linear"));
    CHECK(pre.at(q.inputs[1]).op == "to_dtype");
    // the same losses as casting each weight where it is used (the same roundings, the same graph otherwise)
    const auto losses = train_losses("pre_ln", true, 3),
               precast = train_losses("pre_ln", true, 3, Device::cpu(), 32, 4, true);
    for (size_t i = 0; i < losses.size(); i++) CHECK(precast[i] == losses[i]);
    // one precast scope around three steps: the weights each step wrote are cast again at their next use
    const auto one_scope = train_losses("pre_ln", true, 3, Device::cpu(), 32, 4, true, true);
    for (size_t i = 0; i < losses.size(); i++) CHECK(one_scope[i] == losses[i]);
    if (!have_cuda()) return;
    const auto gpu = train_losses("pre_ln", true, 3, Device::cuda(), 32, 4, true);
    for (size_t i = 0; i < losses.size(); i++) CHECK(gpu[i] == doctest::Approx(losses[i]).epsilon(2e-2));
  }
}

TEST_SUITE("bf16") {
  TEST_CASE("Backend::copy_many: many pairs in one call, the results of a copy each") {
    for (Device d : {Device::cpu(), Device::cuda()}) {
      if (d.is_cuda() && !have_cuda()) continue;
      INFO(d.str());
      Backend& be = backend_for(d);
      std::vector<Tensor> src = {randn32({3}, 1, d), randn32({0}, 2, d), randn32({70000}, 3, d),
                                 randn32({2, 65537}, 4, d)};  // chunks of 2^16 elements: one, none, two, three
      std::vector<Tensor> dst, want;
      std::vector<const Tensor*> s;
      std::vector<Tensor*> t;
      for (const Tensor& x : src) {
        dst.push_back(Tensor::empty(x.shape(), DType::BF16, d));
        want.push_back(x.to(DType::BF16));
      }
      for (size_t i = 0; i < src.size(); i++) {
        s.push_back(&src[i]);
        t.push_back(&dst[i]);
      }
      be.copy_many(s, t);
      for (size_t i = 0; i < src.size(); i++) {
        const auto a = dst[i].to_vector<bf16>(), b = want[i].to_vector<bf16>();
        int64_t differ = 0;
        for (size_t j = 0; j < a.size(); j++) differ += a[j].bits != b[j].bits;
        CHECK(differ == 0);
      }
      // pairs of different dtypes, or a strided source: a copy each (the same numbers)
      Tensor f64 = Tensor::empty({3}, DType::F64, d), strided = randn32({4, 6}, 5, d).transpose(0, 1);
      Tensor out2 = Tensor::empty({6, 4}, DType::BF16, d);
      be.copy_many({&src[0], &strided}, {&f64, &out2});
      CHECK(f64.to(DType::F32).to_vector<float>() == src[0].to_vector<float>());
      CHECK(out2.to(DType::F32).to_vector<float>() == strided.to(DType::BF16).to(DType::F32).to_vector<float>());
      CHECK_THROWS_WITH_AS(be.copy_many({&src[0]}, {&dst[2]}), doctest::Contains("copy_many"), Error);
    }
  }
}
