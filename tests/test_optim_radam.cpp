// RAdam (nn/optim.h) against torch.optim.RAdam (tests/reference/radam_reference.json, written by
// scripts/make_radam_reference.py with PyTorch 1.13), its SGD-with-momentum first steps, its decoupled weight decay,
// its settings, a checkpoint round trip, and the translation example's --optimizer radam.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "test_util.h"
#include "translate_test_util.h"

using namespace sgtest;
using namespace skipgrad::nn;

TEST_SUITE("train") {
  TEST_CASE("RAdam follows torch.optim.RAdam step for step: b2 0.98 with weight decay, 0.999 without; CPU and GPU") {
    std::ifstream in(std::string(SKIPGRAD_SOURCE_DIR) + "/tests/reference/radam_reference.json");
    REQUIRE(in.good());
    const nlohmann::json j = nlohmann::json::parse(in);
    REQUIRE(j["cases"].size() == 2);
    std::vector<Device> devices = {Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());  // (its elementwise kernels; the emulator's here)
    for (const auto& c : j["cases"]) {
      for (const Device& dev : devices) {
        for (DType dt : {DType::F64, DType::F32}) {
          CAPTURE(c["name"].get<std::string>());
          CAPTURE(dev.str());
          CAPTURE(dtype_name(dt));
          auto tensor = [&](const nlohmann::json& values, std::vector<int64_t> shape) {
            return Tensor::from_vector<double>(values.get<std::vector<double>>(), shape).to(dt).to(dev);
          };
          Tensor w = tensor(c["start"]["w"], {3, 4}).requires_grad_();
          Tensor b = tensor(c["start"]["b"], {4}).requires_grad_();
          RAdam opt({{"w", w}, {"b", b}}, {.lr = c["lr"].get<double>(), .beta1 = c["beta1"].get<double>(),
                                           .beta2 = c["beta2"].get<double>(), .eps = c["eps"].get<double>(),
                                           .weight_decay = c["weight_decay"].get<double>()});
          const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
          int step = 0;
          for (const auto& s : c["steps"]) {
            CAPTURE(++step);
            w.set_grad(tensor(s["grad_w"], {3, 4}));
            b.set_grad(tensor(s["grad_b"], {4}));
            opt.step();
            check_close(w, s["w"].get<std::vector<double>>(), tol, tol);
            check_close(b, s["b"].get<std::vector<double>>(), tol, tol);
          }
          CHECK(opt.step_count() == 12);
        }
      }
    }
  }

  TEST_CASE("RAdam: the first five steps are SGD with momentum on m̂; from the sixth, rectified Adam") {
    CHECK(RAdam::rho(0.999, 5) < 5);
    CHECK(RAdam::rho(0.999, 6) > 5);
    CHECK(RAdam::rho(0.98, 5) < 5);
    CHECK(RAdam::rho(0.98, 6) > 5);
    CHECK(RAdam::rho(0.98, 1) == doctest::Approx(1).epsilon(1e-12));  // ρ_1 = 1 for any b2
    // step 1: m̂ = g, p -= lr g, whatever the size of g (Adam's first step would move by lr sign g)
    Tensor p = Tensor::from_vector<double>({1, -2, 3}, {3}).requires_grad_();
    RAdam opt({{"p", p}}, {.lr = 0.1, .beta2 = 0.98});
    p.set_grad(Tensor::from_vector<double>({0.5, -4, 1e-3}, {3}));
    opt.step();
    check_close(p, {1 - 0.05, -2 + 0.4, 3 - 1e-4}, 1e-15, 0);
    const NamedTensors st = opt.named_state();
    REQUIRE(st.size() == 2);
    CHECK((st[0].first == "m.p" && st[1].first == "v.p"));
  }

  TEST_CASE("RAdam's decoupled weight decay is the step without decay from p (1 - lr wd)") {
    const double lr = 0.05, wd = 0.2;
    Tensor p = Tensor::from_vector<double>({1.5, -0.5}, {2}).requires_grad_();
    Tensor q = Tensor::from_vector<double>({1.5, -0.5}, {2}).requires_grad_();
    RAdam decoupled({{"p", p}}, {.lr = lr, .beta2 = 0.98, .weight_decay = wd, .decoupled_weight_decay = true});
    RAdam plain({{"q", q}}, {.lr = lr, .beta2 = 0.98});
    for (int t = 0; t < 9; t++) {
      const std::vector<double> g = {0.3 * (t % 4) - 0.4, 0.1 + 0.05 * t};
      p.set_grad(Tensor::from_vector<double>(g, {2}));
      q.set_grad(Tensor::from_vector<double>(g, {2}));
      {
        skipgrad::NoGradGuard no_grad;
        q.copy_(mul(q, 1 - lr * wd));
      }
      decoupled.step();
      plain.step();
      check_close(p, q.to_vector<double>(), 1e-15, 1e-14);
    }
  }

  TEST_CASE("RAdam's settings: checked, saved in a checkpoint and restored from it; another kind's file refused") {
    Tensor s = Tensor::zeros({1}).requires_grad_();
    CHECK_THROWS_WITH_ALL(RAdam({{"s", s}}, {.beta2 = 1}), "radam", "beta2 must be in [0, 1)");
    CHECK_THROWS_WITH_ALL(RAdam({{"s", s}}, {.eps = -1}), "radam", "eps must be >= 0");
    RAdam opt({{"s", s}});
    CHECK(std::string(opt.kind()) == "radam");
    CHECK_THROWS_WITH_ALL(opt.set_setting("decoupled_weight_decay", 0.5), "radam.set_setting", "must be 1 or 0");
    CHECK_THROWS_WITH_ALL(opt.set_setting("momentum", 0.9), "momentum");
    CHECK_FALSE(opt.options().decoupled_weight_decay);

    namespace fs = std::filesystem;
    const fs::path path = fs::temp_directory_path() / ("skipgrad_radam_" + std::to_string(::getpid()) + ".st");
    Linear a(2, 2);
    RAdam saved(a.named_parameters(), {.lr = 1e-3, .beta1 = 0.8, .beta2 = 0.98, .eps = 1e-9,
                                       .decoupled_weight_decay = true});
    Tensor x = Tensor::from_vector<float>({1, -2, 0.5f, 3}, {2, 2});
    for (int t = 0; t < 7; t++) {  // past the five SGD steps: the state matters
      sum(mul(a.forward(x), a.forward(x))).backward();
      saved.step();
      saved.zero_grad();
    }
    save_checkpoint(path.string(), a, &saved);
    Linear b(2, 2);
    RAdam fresh(b.named_parameters(), {.lr = 1e-3});
    load_checkpoint(path.string(), b, &fresh);
    CHECK(fresh.options().beta1 == 0.8);
    CHECK(fresh.options().beta2 == 0.98);
    CHECK(fresh.options().eps == 1e-9);
    CHECK(fresh.options().decoupled_weight_decay);
    CHECK(fresh.step_count() == 7);
    for (auto* m : {&a, &b}) sum(mul(m->forward(x), m->forward(x))).backward();
    saved.step();
    fresh.step();
    CHECK(same_bits(a.weight, b.weight));  // resumed, the next step is the saved optimizer's, bit for bit
    CHECK(same_bits(a.bias, b.bias));

    // the examples' --optimizer: one set of settings, AdamW's or RAdam's with decoupled decay
    const auto made = make_adamw_or_radam("radam", one_group(b.named_parameters()),
                                          {.lr = 2e-3, .beta2 = 0.95, .weight_decay = 0.1,
                                           .no_decay_on_norms_and_biases = true}, "test");
    CHECK(std::string(made->kind()) == "radam");
    const auto& ro = static_cast<const RAdam&>(*made).options();
    CHECK((ro.lr == 2e-3 && ro.beta2 == 0.95 && ro.weight_decay == 0.1 && ro.no_decay_on_norms_and_biases &&
           ro.decoupled_weight_decay));
    CHECK(made->weight_decay(1) == 0);  // b.bias: spared
    CHECK(std::string(make_adamw_or_radam("adamw", one_group(b.named_parameters()), {}, "test")->kind()) == "adamw");
    CHECK_THROWS_WITH_ALL(make_adamw_or_radam("lamb", one_group(b.named_parameters()), {}, "test"),
                          "test: unknown optimizer 'lamb'", "known: adamw, radam");

    AdamW other(b.named_parameters(), {.lr = 1e-3});
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), b, &other), "holds the state of a 'radam' optimizer",
                          "not 'adamw'");
    fs::remove(path);
  }

  TEST_CASE("the translation example trains with --optimizer radam and resumes its state; other names refused") {
    const ScratchDir dir("skipgrad_radam_train");
    translate::TrainOptions o = tiny_train_options(write_tiny_corpus(dir.path() / "corpus", 200));
    o.optimizer = "radam";
    o.max_steps = 8;
    o.out_dir = (dir.path() / "run").string();
    const translate::TrainResult first = translate::train(o);
    CHECK(first.steps == 8);
    CHECK(std::isfinite(first.final_train_loss));
    const std::string ckpt = o.out_dir + "/checkpoint_last.safetensors";
    CHECK(load_safetensors(ckpt).metadata.at("skipgrad.optim.kind") == "radam");
    o.max_steps = 10;
    o.resume = true;
    CHECK(translate::train(o).steps == 10);
    o.optimizer = "adamw";  // a run of one optimizer does not resume with another's state
    o.max_steps = 12;
    CHECK_THROWS_WITH_ALL(translate::train(o), "holds the state of a 'radam' optimizer", "not 'adamw'");
    o.optimizer = "lamb";
    o.resume = false;
    CHECK_THROWS_WITH_ALL(translate::train(o), "unknown optimizer 'lamb'", "adamw, radam");
  }
}
