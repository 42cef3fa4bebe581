// Training pieces: optimizers, LR schedules, gradient clipping, label-smoothed loss, gradient accumulation and
// safetensors checkpoints. A tiny hand-written module stands in for a model.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/checkpoint.h"
#include "nn/clip.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "test_util.h"

using namespace sgtest;
using namespace skipgrad::nn;
namespace fs = std::filesystem;

namespace {

// proj: y = x Wᵀ + b; then y * gain. Parameters "proj.weight" [out,in], "proj.bias" [out], "gain" [out];
// a buffer "calls" (int64). Values from a seed.
struct Proj : Module {
  Tensor& weight;
  Tensor& bias;
  Proj(int64_t in, int64_t out, DType dt, uint64_t seed)
      : weight(register_parameter("weight", rand_tensor({out, in}, dt, seed))),
        bias(register_parameter("bias", rand_tensor({out}, dt, seed + 1))) {}
  static Tensor rand_tensor(const Shape& s, DType dt, uint64_t seed) {
    Generator g(seed);
    return Tensor::randn(s, 0, 1, dt, Device::cpu(), &g);
  }
};
struct Tiny : Module {
  std::shared_ptr<Proj> proj;
  Tensor& gain;
  Tensor& calls;
  Tiny(int64_t in = 4, int64_t out = 3, DType dt = DType::F64, uint64_t seed = 7, bool with_gain = true)
      : Module("tiny"),
        proj(register_module("proj", std::make_shared<Proj>(in, out, dt, seed))),
        gain(register_parameter(with_gain ? "gain" : "scale", Proj::rand_tensor({out}, dt, seed + 2))),
        calls(register_buffer("calls", Tensor::from_vector<int64_t>({3, 5}, {2}))) {}
  Tensor forward(const Tensor& x) const { return linear(x, proj->weight, proj->bias) * gain; }
};

Tensor vec(std::vector<double> v) { return Tensor::from_vector<double>(v, {(int64_t)v.size()}); }

// A parameter (leaf requiring grad) with values v and gradient g.
Tensor param_with_grad(std::vector<double> v, std::vector<double> g) {
  Tensor p = vec(v).requires_grad_();
  p.set_grad(vec(g));
  return p;
}

// A scratch directory per test process, removed at exit.
fs::path scratch_path() { return fs::temp_directory_path() / ("skipgrad_train_" + std::to_string(::getpid())); }
fs::path scratch() {
  static const bool made = [] {
    fs::create_directories(scratch_path());
    std::atexit([] { std::error_code ec; fs::remove_all(scratch_path(), ec); });
    return true;
  }();
  (void)made;
  return scratch_path();
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), (std::streamsize)s.size());
}

bool same_model(const Module& a, const Module& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); i++)
    if (pa[i].first != pb[i].first || !same_bits(pa[i].second, pb[i].second)) return false;
  return true;
}
// Snapshot of a model's parameter values (to check that a failed load changed nothing).
std::vector<Tensor> snapshot(const Module& m) {
  std::vector<Tensor> out;
  for (auto& [n, p] : m.named_parameters()) out.push_back(p.detach().clone());
  return out;
}
bool unchanged(const Module& m, const std::vector<Tensor>& snap) {
  auto ps = m.named_parameters();
  for (size_t i = 0; i < ps.size(); i++)
    if (!same_bits(ps[i].second, snap[i])) return false;
  return true;
}

// mean((tiny(x) - y)^2) for rows [begin, end) of x and y.
Tensor mse(const Tiny& m, const Tensor& x, const Tensor& y, int64_t begin, int64_t end) {
  Tensor d = m.forward(x.slice(0, begin, end)) - y.slice(0, begin, end);
  return mean(d * d);
}

// PyTorch's Adam/AdamW step for one scalar (torch/optim/adam.py, single-tensor path), in double.
struct RefAdam {
  double p, m = 0, v = 0;
  int t = 0;
  void step(double g, double lr, double b1, double b2, double eps, double wd, bool decoupled) {
    t++;
    if (decoupled) p *= 1 - lr * wd;
    else g += wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    const double denom = std::sqrt(v) / std::sqrt(bc2) + eps;
    p -= lr / bc1 * m / denom;
  }
};

}  // namespace

TEST_SUITE("train") {
  // ---------------------------------------------------------------- optimizers

  TEST_CASE("SGD: plain, momentum, Nesterov and weight decay match hand-computed steps") {
    Tensor p = param_with_grad({1, 2}, {0.5, -1});
    SGD plain({{"p", p}}, {.lr = 0.1});
    plain.step();
    check_close(p, {1 - 0.05, 2 + 0.1}, 1e-15);  // p - lr g
    CHECK(plain.step_count() == 1);

    // momentum 0.9: buf1 = g1, p1 = p0 - lr g1; buf2 = 0.9 g1 + g2, p2 = p1 - lr buf2
    Tensor q = param_with_grad({1}, {2});
    SGD mom({{"q", q}}, {.lr = 0.1, .momentum = 0.9});
    mom.step();
    CHECK(q.to_vector<double>()[0] == doctest::Approx(0.8));
    q.set_grad(vec({1}));
    mom.step();
    CHECK(q.to_vector<double>()[0] == doctest::Approx(0.8 - 0.1 * (0.9 * 2 + 1)));

    // Nesterov: d = g + 0.9 buf; step 1: buf = g = 2, d = 2 + 1.8 = 3.8
    Tensor r = param_with_grad({1}, {2});
    SGD nes({{"r", r}}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    nes.step();
    CHECK(r.to_vector<double>()[0] == doctest::Approx(1 - 0.1 * 3.8));

    // weight decay: g + wd p = 2 + 0.5 * 1
    Tensor s = param_with_grad({1}, {2});
    SGD wd({{"s", s}}, {.lr = 0.1, .weight_decay = 0.5});
    wd.step();
    CHECK(s.to_vector<double>()[0] == doctest::Approx(1 - 0.1 * 2.5));

    CHECK_THROWS_WITH_ALL(SGD({{"s", s}}, {.nesterov = true}), "sgd", "nesterov needs momentum");
    CHECK_THROWS_WITH_ALL(SGD({{"s", s}}, {.lr = -1}), "learning rate", "-1");
    CHECK_THROWS_WITH_ALL(SGD({{"s", s}, {"s", s}}), "given twice");
  }

  TEST_CASE("Adam: the first step moves each weight by lr (m̂ / sqrt(v̂) = sign g)") {
    Tensor p = param_with_grad({1, -2, 3}, {0.5, -4, 1e-3});
    Adam adam({{"p", p}}, {.lr = 0.1, .eps = 0});
    adam.step();
    check_close(p, {0.9, -1.9, 2.9}, 1e-12, 0);
    // the state after one step: m = (1 - b1) g, v = (1 - b2) g^2
    auto st = adam.named_state();
    REQUIRE(st.size() == 2);
    CHECK(st[0].first == "m.p");
    CHECK(st[1].first == "v.p");
    check_close(st[0].second, {0.05, -0.4, 1e-4}, 1e-15);
    check_close(st[1].second, {0.001 * 0.25, 0.001 * 16, 0.001 * 1e-6}, 1e-15);
  }

  TEST_CASE("Adam and AdamW follow PyTorch's update with bias correction over several steps, f64 and f32") {
    const std::vector<double> grads = {0.3, -1.2, 0.05, 2.0, -0.7};
    for (bool decoupled : {false, true}) {
      for (DType dt : {DType::F64, DType::F32}) {
        CAPTURE(decoupled);
        CAPTURE(dtype_name(dt));
        const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
        Tensor p = Tensor::full({1}, 1.5, dt).requires_grad_();
        AdamOptions o{.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps, .weight_decay = wd};
        std::unique_ptr<Optimizer> opt = decoupled ? std::unique_ptr<Optimizer>(new AdamW({{"p", p}}, o))
                                                   : std::unique_ptr<Optimizer>(new Adam({{"p", p}}, o));
        CHECK(std::string(opt->kind()) == (decoupled ? "adamw" : "adam"));
        RefAdam ref{1.5};
        for (double g : grads) {
          p.set_grad(Tensor::full({1}, g, dt));
          opt->step();
          ref.step(g, lr, b1, b2, eps, wd, decoupled);
          CHECK(p.to_vector<double>()[0] == doctest::Approx(ref.p).epsilon(dt == DType::F64 ? 1e-13 : 1e-6));
        }
      }
    }
  }

  TEST_CASE("weight decay can spare norms and biases; parameters without a gradient are skipped") {
    CHECK(is_norm_or_bias("enc.0.fc1.bias", Tensor::zeros({3, 3})));
    CHECK(is_norm_or_bias("bias", Tensor::zeros({3, 3})));
    CHECK(is_norm_or_bias("enc.0.norm.weight", Tensor::zeros({3})));
    CHECK_FALSE(is_norm_or_bias("enc.0.fc1.weight", Tensor::zeros({3, 3})));
    CHECK_FALSE(is_norm_or_bias("enc.0.unbias", Tensor::zeros({3, 3})));

    for (bool exclude : {false, true}) {
      Tiny m;
      auto before = snapshot(m);
      // zero gradients: Adam's update is 0, so only the decoupled decay p *= 1 - lr wd moves a weight
      for (auto& [n, p] : m.named_parameters()) p.set_grad(Tensor::zeros(p.shape(), p.dtype()));
      AdamW opt(m.named_parameters(), {.lr = 0.1, .weight_decay = 0.5, .no_decay_on_norms_and_biases = exclude});
      opt.step();
      auto ps = m.named_parameters();
      for (size_t i = 0; i < ps.size(); i++) {
        CAPTURE(ps[i].first);
        const bool spared = exclude && ps[i].first != "proj.weight";  // "gain" is 1-D, "proj.bias" a bias
        Tensor expected = spared ? before[i] : mul(before[i], 0.95);
        CHECK(max_abs_diff(ps[i].second, expected) < 1e-15);
      }
    }

    // a parameter with no gradient keeps its value and its state
    Tensor a = param_with_grad({1}, {1});
    Tensor b = vec({2}).requires_grad_();
    Adam opt({{"a", a}, {"b", b}}, {.lr = 0.1});
    opt.step();
    CHECK(a.to_vector<double>()[0] != 1.0);
    CHECK(b.to_vector<double>()[0] == 2.0);
    CHECK(opt.named_state()[1].second.to_vector<double>()[0] == 0.0);  // m.b
    opt.zero_grad();
    CHECK_FALSE(a.grad().defined());
  }

  // ---------------------------------------------------------------- schedules

  TEST_CASE("inverse_sqrt: linear warm-up from warmup_init_lr, then lr * sqrt(warmup / step)") {
    InverseSqrtLR s(5e-4, 4000, 1e-7);
    CHECK(s.lr(0) == doctest::Approx(1e-7).epsilon(1e-12));
    CHECK(s.lr(2000) == doctest::Approx(1e-7 + 0.5 * (5e-4 - 1e-7)).epsilon(1e-12));
    CHECK(s.lr(4000) == doctest::Approx(5e-4).epsilon(1e-12));
    CHECK(s.lr(16000) == doctest::Approx(2.5e-4).epsilon(1e-12));
    InverseSqrtLR no_warmup(1e-3, 0);
    CHECK(no_warmup.lr(0) == doctest::Approx(1e-3));
    CHECK(no_warmup.lr(100) == doctest::Approx(1e-4));
    CHECK_THROWS_WITH_ALL(s.lr(-1), "inverse_sqrt", "step must be >= 0");
    CHECK_THROWS_WITH_ALL(InverseSqrtLR(1e-3, -5), "warmup_steps");
  }

  TEST_CASE("cosine with warm-up ends at final_fraction * lr; constant is constant") {
    CosineLR c(1.0, 10, 110, 0.1);
    CHECK(c.lr(0) == 0.0);
    CHECK(c.lr(5) == doctest::Approx(0.5));
    CHECK(c.lr(10) == doctest::Approx(1.0));
    CHECK(c.lr(60) == doctest::Approx(0.1 + 0.9 * 0.5));  // half way: cos(pi/2) = 0
    CHECK(c.lr(110) == doctest::Approx(0.1));
    CHECK(c.lr(1000) == doctest::Approx(0.1));
    CHECK_THROWS_WITH_ALL(CosineLR(1.0, 10, 10), "cosine", "total_steps (10) must exceed warmup_steps (10)");
    ConstantLR k(3e-4);
    CHECK(k.lr(0) == 3e-4);
    CHECK(k.lr(123456) == 3e-4);
    CHECK(c.str() == "cosine(lr=1, warmup=10, total=110, final_fraction=0.1)");
  }

  // ---------------------------------------------------------------- clipping

  TEST_CASE("clip_grad_norm returns the global norm and scales the gradients above max_norm") {
    Tensor a = param_with_grad({0, 0}, {3, 4});
    Tensor b = Tensor::zeros({1, 1}, DType::F64).requires_grad_();
    b.set_grad(Tensor::full({1, 1}, 12, DType::F64));
    Tensor c = vec({1}).requires_grad_();  // no gradient: ignored
    NamedTensors named{{"a", a}, {"b", b}, {"c", c}};

    auto norms = grad_norms(named);
    REQUIRE(norms.size() == 2);
    CHECK(norms[0].first == "a");
    CHECK(norms[0].second == doctest::Approx(5));
    CHECK(norms[1].second == doctest::Approx(12));

    CHECK(clip_grad_norm(named, 0) == doctest::Approx(13));  // measure only
    CHECK(clip_grad_norm(named, 20) == doctest::Approx(13));  // below: unchanged
    check_close(a.grad(), {3, 4}, 0, 0);
    CHECK(clip_grad_norm(named, 6.5) == doctest::Approx(13));
    const double k = 6.5 / (13 + 1e-6);
    check_close(a.grad(), {3 * k, 4 * k}, 1e-15);
    check_close(b.grad(), {12 * k}, 1e-15);
    CHECK(clip_grad_norm(named, 100) == doctest::Approx(6.5).epsilon(1e-6));
    // torch multiplies by min(1, max_norm / (total + 1e-6)): a total equal to max_norm is scaled too
    Tensor e = Tensor::zeros({1}, DType::F64).requires_grad_();
    e.set_grad(Tensor::full({1}, 1.0, DType::F64));
    CHECK(clip_grad_norm(std::vector<Tensor>{e}, 1.0) == 1.0);
    CHECK(e.grad().item() == 1.0 / (1.0 + 1e-6));

    Tensor f = Tensor::zeros({2}, DType::F32).requires_grad_();
    f.set_grad(Tensor::from_vector<float>({6, 8}, {2}));
    CHECK(clip_grad_norm(std::vector<Tensor>{f}, 1.0) == doctest::Approx(10));
    check_close(f.grad(), {0.6, 0.8}, 1e-6);
    // float32 gradients whose norm fits float32 but whose square does not (or underflows): PyTorch's CPU result
    for (double v : {1e20, 1e-23}) {
      f.set_grad(Tensor::full({2}, v, DType::F32));
      CHECK(clip_grad_norm(std::vector<Tensor>{f}, 0) == doctest::Approx(std::sqrt(2.0) * v).epsilon(1e-6));
    }
    CHECK_THROWS_WITH_ALL(clip_grad_norm(named, -1), "clip_grad_norm", "max_norm");
  }

  // ---------------------------------------------------------------- loss

  TEST_CASE("label_smoothed_nll: fairseq's formula, mean over non-pad tokens, nll sum and token count") {
    const int64_t pad = 0, V = 4;
    std::vector<double> lv = {0.1, 1.0, -0.5, 2.0, 0.3, 0.3, 0.9, -1.0, 1.5, 0.0, 0.2, 0.7};
    Tensor logits = Tensor::from_vector<double>(lv, {1, 3, V}).requires_grad_();
    Tensor targets = Tensor::from_vector<int64_t>({3, 0, 1}, {1, 3});  // the middle token is padding
    // by hand: logp = x - logsumexp(x); fairseq loss = (1 - eps - eps/(V-1)) nll + eps/(V-1) sum_j -logp_j
    auto row_terms = [&](int row, int64_t t, double eps) {
      double lse = 0;
      for (int j = 0; j < V; j++) lse += std::exp(lv[row * V + j]);
      lse = std::log(lse);
      double nll = lse - lv[row * V + t], smooth = 0;
      for (int j = 0; j < V; j++) smooth += lse - lv[row * V + j];
      const double eps_i = eps / (V - 1);
      return std::pair<double, double>{(1 - eps - eps_i) * nll + eps_i * smooth, nll};
    };
    for (double eps : {0.0, 0.1}) {
      CAPTURE(eps);
      auto [l0, n0] = row_terms(0, 3, eps);
      auto [l2, n2] = row_terms(2, 1, eps);
      LabelSmoothedLoss out = label_smoothed_nll(logits, targets, pad, eps);
      CHECK(out.loss.item() == doctest::Approx((l0 + l2) / 2).epsilon(1e-12));
      CHECK(out.nll_sum().item() == doctest::Approx(n0 + n2).epsilon(1e-12));
      CHECK(out.ntokens.item() == 2.0);
      CHECK_FALSE(out.nll_sum().requires_grad());
      out.loss.backward();
      Tensor g = logits.grad();
      REQUIRE(g.defined());
      auto gv = g.to_vector<double>();
      for (int j = 0; j < V; j++) CHECK(gv[V + j] == 0.0);  // the pad row gets no gradient
      CHECK(out.nll_sum().item() == doctest::Approx(n0 + n2).epsilon(1e-12));  // still there after backward
      logits.zero_grad();
    }
    CHECK_THROWS_WITH_ALL(label_smoothed_nll(logits, Tensor::from_vector<int64_t>({1, 2}, {1, 2}), pad, 0.1),
                          "label_smoothed_nll", "[1,2]", "[1,3,4]");
    CHECK_THROWS_WITH_ALL(label_smoothed_nll(logits, targets, pad, 1.5), "eps");
  }

  // ---------------------------------------------------------------- gradient accumulation

  TEST_CASE("gradient accumulation: two half-batch backwards of loss/2 equal one full-batch backward") {
    Generator gen(3);
    Tensor x = Tensor::randn({6, 4}, 0, 1, DType::F64, Device::cpu(), &gen);
    Tensor y = Tensor::randn({6, 3}, 0, 1, DType::F64, Device::cpu(), &gen);
    Tiny full, accum;  // same seed: same weights
    REQUIRE(same_model(full, accum));
    SGD opt_full(full.named_parameters(), {.lr = 0.1, .momentum = 0.9});
    SGD opt_accum(accum.named_parameters(), {.lr = 0.1, .momentum = 0.9});

    mse(full, x, y, 0, 6).backward();
    opt_accum.zero_grad();
    (mse(accum, x, y, 0, 3) * 0.5).backward();
    (mse(accum, x, y, 3, 6) * 0.5).backward();
    auto gf = full.named_parameters(), ga = accum.named_parameters();
    for (size_t i = 0; i < gf.size(); i++) {
      CAPTURE(gf[i].first);
      CHECK(max_abs_diff(gf[i].second.grad(), ga[i].second.grad()) < 1e-14);
    }
    opt_full.step();
    opt_accum.step();
    for (size_t i = 0; i < gf.size(); i++) CHECK(max_abs_diff(gf[i].second, ga[i].second) < 1e-14);
  }

  // ---------------------------------------------------------------- checkpoints

  TEST_CASE("checkpoint round trip is bit-exact: parameters, buffers, optimizer state, step, lr and RNG") {
    const fs::path path = scratch() / "round.safetensors";
    Generator gen(11);
    Tensor x = Tensor::randn({5, 4}, 0, 1, DType::F32, Device::cpu(), &gen);
    Tensor y = Tensor::randn({5, 3}, 0, 1, DType::F32, Device::cpu(), &gen);
    Tiny a(4, 3, DType::F32, 1);
    AdamW opt_a(a.named_parameters(), {.lr = 1e-2, .weight_decay = 0.01});
    for (int i = 0; i < 2; i++) {
      opt_a.zero_grad();
      mse(a, x, y, 0, 5).backward();
      opt_a.step();
    }
    opt_a.set_lr(7.25e-3);
    a.calls.copy_(Tensor::from_vector<int64_t>({40, 2}, {2}));
    manual_seed(1234);
    (void)Tensor::rand({17});  // advance the generator's offset
    const uint64_t seed = default_generator().seed(), offset = default_generator().offset();
    save_checkpoint(path.string(), a, &opt_a, {{"config", R"({"d_model": 4, "topology": "residual"})"}});

    Tiny b(4, 3, DType::F32, 99);  // different weights
    AdamW opt_b(b.named_parameters(), {.lr = 1.0, .weight_decay = 0.01});  // lr comes from the file
    manual_seed(5);
    CHECK_FALSE(same_model(a, b));
    Metadata meta = load_checkpoint(path.string(), b, &opt_b);
    CHECK(meta.at("config") == R"({"d_model": 4, "topology": "residual"})");
    CHECK(same_model(a, b));
    CHECK(same_bits(a.calls, b.calls));
    auto sa = opt_a.named_state(), sb = opt_b.named_state();
    REQUIRE(sa.size() == 6);
    for (size_t i = 0; i < sa.size(); i++) {
      CAPTURE(sa[i].first);
      CHECK(sa[i].first == sb[i].first);
      CHECK(same_bits(sa[i].second, sb[i].second));
    }
    CHECK(opt_b.step_count() == 2);
    CHECK(opt_b.lr() == 7.25e-3);
    CHECK(default_generator().seed() == seed);
    CHECK(default_generator().offset() == offset);

    // training goes on identically from the loaded state
    opt_a.zero_grad();
    mse(a, x, y, 0, 5).backward();
    opt_a.step();
    opt_b.zero_grad();
    mse(b, x, y, 0, 5).backward();
    opt_b.step();
    CHECK(same_model(a, b));

    // a model-only load ignores the optimizer tensors; an optimizer of another kind is refused
    Tiny c(4, 3, DType::F32, 50);
    load_checkpoint(path.string(), c);
    CHECK_FALSE(same_model(a, c));  // a moved on after the save
    SGD sgd(c.named_parameters(), {.momentum = 0.9});
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), c, &sgd), "round.safetensors", "'adamw'", "'sgd'");
  }

  TEST_CASE("a corrupted, truncated or mismatched checkpoint is refused and the model left unchanged") {
    const fs::path path = scratch() / "good.safetensors";
    Tiny a(4, 3, DType::F64, 1);
    save_checkpoint(path.string(), a);
    const std::string good = read_bytes(path);
    Tiny b(4, 3, DType::F64, 2);
    const auto snap = snapshot(b);
    const fs::path bad = scratch() / "bad.safetensors";
    auto refuse = [&](const std::string& bytes, std::initializer_list<const char*> fragments) {
      write_bytes(bad, bytes);
      bool thrown = false;
      try {
        load_checkpoint(bad.string(), b);
      } catch (const Error& e) {
        thrown = true;
        std::string msg = e.what();
        CHECK(msg.find("bad.safetensors") != std::string::npos);
        for (const char* f : fragments) {
          INFO("message: " << msg << " -- expected: " << f);
          CHECK(msg.find(f) != std::string::npos);
        }
      }
      CHECK(thrown);
      CHECK(unchanged(b, snap));
    };
    uint64_t header_len;
    std::memcpy(&header_len, good.data(), 8);

    std::string flipped = good;
    flipped[flipped.size() - 5] ^= 0x01;  // one bit in the data section
    refuse(flipped, {"corrupted", "checksum", "another tool rewrote the file"});
    refuse(good.substr(0, good.size() - 8), {"truncated", "'calls'"});  // the last tensor is cut short
    refuse(good.substr(0, 5), {"truncated"});
    refuse(good.substr(0, 8 + header_len / 2), {"truncated"});
    std::string not_json = good;
    not_json[8] = 'x';
    refuse(not_json, {"bad header"});
    std::string huge = good;
    const uint64_t big = 1ull << 40;
    std::memcpy(huge.data(), &big, 8);
    refuse(huge, {"bad header"});
    refuse(good + "extra", {"unexpected bytes"});
    {  // the header's JSON followed by NULs (nlohmann stops at the first; the Python package refuses the file)
      std::string json_text = good.substr(8, header_len);
      json_text.erase(json_text.find_last_not_of(' ') + 1);
      json_text.append(8, '\0');
      const uint64_t padded_len = json_text.size();
      std::string padded(8, '\0');
      std::memcpy(padded.data(), &padded_len, 8);
      refuse(padded + json_text + good.substr(8 + header_len), {"bad header", "NUL byte"});
    }
    // a digit of a metadata value changed: still valid JSON and tensors, caught by the header's checksum
    std::string header_damage = good;
    const size_t seed_at = header_damage.find("\"skipgrad.rng.seed\":\"");
    REQUIRE(seed_at != std::string::npos);
    char& digit = header_damage[seed_at + std::strlen("\"skipgrad.rng.seed\":\"")];
    digit = digit == '7' ? '8' : '7';
    refuse(header_damage, {"corrupted", "checksum of the header"});
    CHECK_THROWS_WITH_ALL(load_checkpoint(scratch().string(), b), "load_safetensors", "is a directory");
    CHECK_THROWS_WITH_ALL(save_safetensors(bad.string(), {{"w\xff", Tensor::zeros({1})}}), "save_safetensors",
                          "not valid UTF-8");
    CHECK_THROWS_WITH_ALL(save_checkpoint(bad.string(), b, nullptr, {{"note", "\xc3("}}), "metadata entry 'note'",
                          "not valid UTF-8");

    // well-formed files that do not fit the model
    Tiny wide(5, 3, DType::F64, 1);
    save_checkpoint(bad.string(), wide);
    CHECK_THROWS_WITH_ALL(load_checkpoint(bad.string(), b), "bad.safetensors", "proj.weight", "[3,5]", "[3,4]");
    Tiny renamed(4, 3, DType::F64, 1, /*with_gain=*/false);  // "scale" instead of "gain"
    save_checkpoint(bad.string(), renamed);
    CHECK_THROWS_WITH_ALL(load_checkpoint(bad.string(), b), "bad.safetensors", "'scale'", "does not have");
    save_safetensors(bad.string(), b.named_parameters());  // no "calls" buffer
    CHECK_THROWS_WITH_ALL(load_checkpoint(bad.string(), b), "bad.safetensors", "no tensor 'calls'");
    Tiny f32(4, 3, DType::F32, 1);
    save_checkpoint(bad.string(), f32);
    CHECK_THROWS_WITH_ALL(load_checkpoint(bad.string(), b), "'gain'", "float32", "float64");
    CHECK(unchanged(b, snap));
    CHECK_THROWS_WITH_ALL(load_checkpoint((scratch() / "missing.safetensors").string(), b), "cannot open",
                          "missing.safetensors");
    CHECK_THROWS_WITH_ALL(save_checkpoint(bad.string(), b, nullptr, {{"skipgrad.step", "1"}}), "reserved");
    // a good file still loads after all that
    load_checkpoint(path.string(), b);
    CHECK(same_model(a, b));
  }

  TEST_CASE("the file is valid safetensors: header parsed by hand, and by the Python package when installed") {
    const fs::path path = scratch() / "valid.safetensors";
    Tiny a(4, 3, DType::F32, 3);
    SGD opt(a.named_parameters(), {.lr = 0.1, .momentum = 0.9});
    save_checkpoint(path.string(), a, &opt, {{"note", "hello"}});

    // by hand: u64 length, JSON header, data offsets tiling the data, 8-byte aligned data start
    const std::string bytes = read_bytes(path);
    uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    CHECK((8 + n) % 8 == 0);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    CHECK(header["__metadata__"]["note"] == "hello");
    CHECK(header["__metadata__"]["skipgrad.optim.kind"] == "sgd");
    CHECK(header["__metadata__"]["skipgrad.checksum"].get<std::string>().size() == 16);
    const char* data = bytes.data() + 8 + n;
    for (auto& [name_, p] : a.named_parameters()) {
      const std::string name = name_;  // clang 14 cannot capture a structured binding (CAPTURE does)
      CAPTURE(name);
      auto e = header[name];
      CHECK(e["dtype"] == "F32");
      CHECK(e["shape"].get<Shape>() == p.shape());
      uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
      REQUIRE(end - b == p.nbytes());
      CHECK(std::memcmp(data + b, p.data_ptr(), p.nbytes()) == 0);
    }
    CHECK(header["calls"]["dtype"] == "I64");
    CHECK(header.contains("optim.momentum.proj.weight"));

    // by the safetensors package: read our file, check it, write a file of its own (x2) that we then load
    if (std::system("python3 -c 'import safetensors.numpy' >/dev/null 2>&1") != 0) {
      MESSAGE("python3 safetensors/numpy not installed: skipping the cross-check with the Python package");
      return;
    }
    const fs::path theirs = scratch() / "theirs.safetensors", script = scratch() / "check.py";
    write_bytes(script,
                "import sys, numpy as np\n"
                "from safetensors import safe_open\n"
                "from safetensors.numpy import load_file, save_file\n"
                "t = load_file(sys.argv[1])\n"
                "with safe_open(sys.argv[1], framework='np') as f: meta = f.metadata()\n"
                "assert meta['note'] == 'hello' and meta['skipgrad.optim.kind'] == 'sgd', meta\n"
                "assert t['proj.weight'].dtype == np.float32 and t['proj.weight'].shape == (3, 4)\n"
                "assert t['calls'].dtype == np.int64 and list(t['calls']) == [3, 5]\n"
                "out = {k: v * 2 for k, v in t.items() if not k.startswith('optim.')}\n"
                "save_file(out, sys.argv[2], metadata={'written_by': 'python'})\n");
    const std::string cmd = "python3 " + script.string() + " " + path.string() + " " + theirs.string();
    REQUIRE(std::system(cmd.c_str()) == 0);
    SafetensorsFile f = load_safetensors(theirs.string());
    CHECK(f.metadata.at("written_by") == "python");
    CHECK(f.metadata.count("skipgrad.checksum") == 0);
    Tiny b(4, 3, DType::F32, 8);
    load_checkpoint(theirs.string(), b);  // no checksum, no RNG state: still loads
    auto pa = a.named_parameters(), pb = b.named_parameters();
    for (size_t i = 0; i < pa.size(); i++) CHECK(same_bits(pb[i].second, mul(pa[i].second.detach(), 2.0)));
    check_close(b.calls, {6, 10}, 0, 0);
  }

  TEST_CASE("atomic save: a stray temp file from an interrupted save harms nothing; a failed save leaves no temp") {
    const fs::path dir = scratch() / "atomic";
    fs::create_directories(dir);
    const fs::path path = dir / "model.safetensors";
    Tiny a(4, 3, DType::F64, 1), b(4, 3, DType::F64, 2);
    save_checkpoint(path.string(), a);
    // an interrupted save leaves a half-written temp beside the target
    const std::string good = read_bytes(path);
    const fs::path stray = dir / "model.safetensors.tmp.999999.0";
    write_bytes(stray, good.substr(0, good.size() / 2));
    Tiny c(4, 3, DType::F64, 3);
    load_checkpoint(path.string(), c);
    CHECK(same_model(a, c));
    // the next save goes through and replaces the target whole
    save_checkpoint(path.string(), b);
    load_checkpoint(path.string(), c);
    CHECK(same_model(b, c));
    CHECK_FALSE(same_model(b, a));
    load_checkpoint(load_safetensors(path.string()), path.string(), a);  // from a file read already: the same
    CHECK(same_model(b, a));
    CHECK(fs::exists(stray));
    int files = 0;
    for (auto& e : fs::directory_iterator(dir)) (void)e, files++;
    CHECK(files == 2);  // the target and the stray: our own temp was renamed away

    // a save over a folder is refused before anything is written (no temporary left beside it)
    const fs::path blocked = dir / "blocked.safetensors";
    fs::create_directories(blocked / "inside");
    CHECK_THROWS_WITH_ALL(save_checkpoint(blocked.string(), a), "save_safetensors", "blocked.safetensors",
                          "is a folder");
    try {
      save_checkpoint(blocked.string(), a);
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("Success") == std::string::npos);  // errno read right after the rename
    }
    files = 0;
    for (auto& e : fs::directory_iterator(dir)) (void)e, files++;
    CHECK(files == 3);
    CHECK_THROWS_WITH_ALL(save_checkpoint((dir / "no_such_dir" / "m.safetensors").string(), a), "cannot create");
  }
}
