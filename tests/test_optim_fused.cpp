// Adam's multi-tensor update (Backend::adam_update_many; one launch for all parameters on a GPU): on the CPU the
// base class's loop must equal per-tensor updates bit for bit, and Optimizer::step must give per-parameter results.
// The GPU side is compared with the CPU in tests/test_cuda.cpp. And the multi-tensor norm of clipping
// (Backend::norm_many) against the norms summed by hand, on the CPU and the GPU. And the state following a
// parameter cast after the optimizer was made, into a checkpoint.
#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <memory>

#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "test_util.h"

using namespace sgtest;
using namespace skipgrad::nn;

TEST_SUITE("train") {
  TEST_CASE("adam_update_many (the base class's, used by the CPU) equals adam_update per tensor, bit for bit") {
    Backend& cpu = backend_for(Device::cpu());
    // sizes 1, 7, over a 64K-element chunk, 2-D; float64 and float32 mixed; decay on and off
    const std::vector<Shape> shapes = {{1}, {7}, {70001}, {3, 5}};
    const std::vector<double> wds = {0.0, 0.01, 0.1, 0.0};
    for (bool decoupled : {false, true}) {
      std::vector<std::array<Tensor, 4>> many, each;  // p, g, m, v
      for (size_t k = 0; k < shapes.size(); k++) {
        const DType dt = k % 2 ? DType::F32 : DType::F64;
        Generator g(10 + k);
        Tensor p = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
        Tensor gr = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
        many.push_back({p, gr, Tensor::zeros(shapes[k], dt), Tensor::zeros(shapes[k], dt)});
        each.push_back({p.clone(), gr, Tensor::zeros(shapes[k], dt), Tensor::zeros(shapes[k], dt)});
      }
      std::vector<AdamTensors> ts;
      for (size_t k = 0; k < many.size(); k++)
        ts.push_back({&many[k][0], &many[k][1], &many[k][2], &many[k][3], wds[k]});
      for (int64_t step = 1; step <= 3; step++) {
        cpu.adam_update_many(ts, 1e-2, 0.9, 0.98, 1e-8, decoupled, step);
        for (size_t k = 0; k < each.size(); k++) {
          auto& [p, gr, m, v] = each[k];
          cpu.adam_update(p, gr, m, v, 1e-2, 0.9, 0.98, 1e-8, wds[k], decoupled, step);
        }
      }
      for (size_t k = 0; k < many.size(); k++)
        for (int j : {0, 2, 3})
          CHECK_MESSAGE(same_bits(many[k][j], each[k][j]), "decoupled " << decoupled << ", tensor " << k << "." << j);
    }
  }

  TEST_CASE("norm_many: each tensor's norm in double, one pass on the CPU, two launches on the GPU") {
    // over a 64K-element chunk, 2-D, strided (a transpose), 1-element, empty, 0-d, bf16
    Generator g(5);
    const Tensor big = Tensor::randn({70001}, 0, 1, DType::F32, Device::cpu(), &g);
    const Tensor mat = Tensor::randn({3, 5}, 0, 1, DType::F32, Device::cpu(), &g);
    const std::vector<Tensor> same = {big, mat, Tensor::full({1}, -2, DType::F32), Tensor::zeros({0}, DType::F32)};
    const std::vector<Tensor> mixed = {mat.transpose(0, 1), Tensor::scalar(3, DType::F64),
                                       Tensor::full({4}, 1e20, DType::F64), mat.to(DType::BF16),
                                       Tensor::full({4}, 3e38, DType::F32), big.narrow(0, 5, 65600)};
    auto by_hand = [](const Tensor& t) {
      double s = 0;
      for (double v : t.to(DType::F64).to_vector<double>()) s += v * v;
      return std::sqrt(s);
    };
    auto norms = [](const std::vector<Tensor>& ts, Device device) {
      std::vector<Tensor> on;
      std::vector<const Tensor*> ptrs;
      for (const Tensor& t : ts) on.push_back(t.to(device));
      for (const Tensor& t : on) ptrs.push_back(&t);
      Tensor out = Tensor::empty({(int64_t)ts.size()}, DType::F64, device);
      backend_for(device).norm_many(ptrs, out);
      return out.to_vector<double>();
    };
    std::vector<Device> devices = {Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (const Device& device : devices) {
      for (const std::vector<Tensor>* ts : {&same, &mixed}) {
        const std::vector<double> got = norms(*ts, device);
        for (size_t i = 0; i < ts->size(); i++) {
          INFO(device.str() << ", tensor " << i << ": " << (*ts)[i].meta_str());
          // every norm in double, strided, bf16 and mixed lists included (a float32 4e38 has norm 8e38, not inf)
          CHECK(got[i] == doctest::Approx(by_hand((*ts)[i])).epsilon(1e-12));
        }
      }
    }
    std::vector<const Tensor*> one = {&mat};
    Tensor wrong = Tensor::empty({2}, DType::F64);
    CHECK_THROWS_WITH_ALL(backend_for(Device::cpu()).norm_many(one, wrong), "norm_many", "float64 tensor of 1");
    if (cuda_available()) {
      Tensor on_gpu = Tensor::empty({1}, DType::F64, Device::cuda());
      CHECK_THROWS_WITH_ALL(backend_for(Device::cuda()).norm_many(one, on_gpu), "norm_many", "cpu", "cuda:0");
    }
  }

  TEST_CASE("Adam's step updates every parameter at once: per-parameter results, strided ones written back") {
    // "w" is strided (a transpose), "n" 1-D and spared from decay, "skip" has no gradient
    Generator g(4);
    Tensor w = Tensor::randn({5, 3}, 0, 1, DType::F64, Device::cpu(), &g).t().requires_grad_();
    Tensor n = Tensor::randn({3}, 0, 1, DType::F64, Device::cpu(), &g).requires_grad_();
    Tensor b = Tensor::randn({2, 2}, 0, 1, DType::F64, Device::cpu(), &g).requires_grad_();
    Tensor skip = Tensor::from_vector<double>({2, -1}, {2}).requires_grad_();
    REQUIRE_FALSE(w.is_contiguous());
    std::vector<Tensor> params = {w, n, b}, ref, ref_m, ref_v;
    for (const Tensor& p : params) {
      ref.push_back(p.detach().contiguous().clone());
      ref_m.push_back(Tensor::zeros(p.shape(), p.dtype()));
      ref_v.push_back(Tensor::zeros(p.shape(), p.dtype()));
    }
    AdamW opt({{"w", w}, {"n", n}, {"b", b}, {"skip", skip}},
              {.lr = 0.05, .weight_decay = 0.1, .no_decay_on_norms_and_biases = true});
    for (int64_t step = 1; step <= 3; step++) {
      for (size_t k = 0; k < params.size(); k++) {
        Tensor gr = Tensor::randn(params[k].shape(), 0, 1, DType::F64, Device::cpu(), &g);
        params[k].set_grad(gr);
        const double wd = k == 1 ? 0.0 : 0.1;  // "n" is 1-D
        backend_for(Device::cpu()).adam_update(ref[k], gr, ref_m[k], ref_v[k], 0.05, 0.9, 0.999, 1e-8, wd, true, step);
      }
      opt.step();
    }
    const NamedTensors st = opt.named_state();  // m.w, m.n, m.b, m.skip, v.w, ...
    for (size_t k = 0; k < params.size(); k++) {
      CAPTURE(k);
      CHECK(same_bits(params[k], ref[k]));
      CHECK(same_bits(st[k].second, ref_m[k]));
      CHECK(same_bits(st[4 + k].second, ref_v[k]));
    }
    CHECK(skip.to_vector<double>() == std::vector<double>{2, -1});
  }

  TEST_CASE("parameter groups: each group's lr scale and weight decay, as separate optimizers would step") {
    // group 0: "a" at half the rate, no decay; group 1: "b" (1-D: spared) and "c" at the options' rate and decay
    Generator g(8);
    auto draw = [&](const Shape& s) { return Tensor::randn(s, 0, 1, DType::F64, Device::cpu(), &g).requires_grad_(); };
    for (bool sgd : {false, true}) {
      CAPTURE(sgd);
      Tensor a = draw({2, 3}), b = draw({3}), c = draw({2, 2});
      std::vector<Tensor> params = {a, b, c}, refs;
      for (const Tensor& p : params) refs.push_back(p.detach().clone().requires_grad_());
      std::vector<ParamGroup> groups(2);
      groups[0] = {.params = {{"a", a}}, .lr_scale = 0.5, .weight_decay = 0.0};
      groups[1].params = {{"b", b}, {"c", c}};
      auto make = [&](auto groups_or_params, double lr) -> std::unique_ptr<Optimizer> {
        if (sgd) return std::make_unique<SGD>(groups_or_params, SGDOptions{.lr = lr, .momentum = 0.9,
                                              .weight_decay = 0.1, .no_decay_on_norms_and_biases = true});
        return std::make_unique<AdamW>(groups_or_params, AdamOptions{.lr = lr, .weight_decay = 0.1,
                                       .no_decay_on_norms_and_biases = true});
      };
      std::unique_ptr<Optimizer> opt = make(groups, 0.04);
      CHECK(opt->lr_scale(0) == 0.5);
      CHECK(opt->weight_decay(0) == 0.0);
      CHECK(opt->weight_decay(1) == 0.0);  // 1-D
      CHECK(opt->weight_decay(2) == 0.1);
      std::vector<ParamGroup> ref_a(1);
      ref_a[0].params = {{"a", refs[0]}};
      ref_a[0].weight_decay = 0.0;
      std::unique_ptr<Optimizer> slow = make(ref_a, 0.02);
      std::unique_ptr<Optimizer> rest = make(NamedTensors{{"b", refs[1]}, {"c", refs[2]}}, 0.04);
      for (int step = 0; step < 3; step++) {
        if (step == 2) {  // a schedule moves both groups
          opt->set_lr(0.01);
          slow->set_lr(0.005);
          rest->set_lr(0.01);
        }
        for (size_t k = 0; k < params.size(); k++) {
          Tensor gr = Tensor::randn(params[k].shape(), 0, 1, DType::F64, Device::cpu(), &g);
          params[k].set_grad(gr);
          refs[k].set_grad(gr.clone());
        }
        opt->step();
        slow->step();
        rest->step();
      }
      for (size_t k = 0; k < params.size(); k++) {
        CAPTURE(k);
        CHECK(same_bits(params[k], refs[k]));
      }
    }
    Tensor p = Tensor::zeros({2}).requires_grad_();
    using Groups = std::vector<ParamGroup>;
    CHECK_THROWS_WITH_ALL(AdamW(Groups{{.params = {{"p", p}}, .lr_scale = -1}}), "adamw",
                          "lr_scale of parameter group 0", "-1");
    CHECK_THROWS_WITH_ALL(SGD(Groups{{}, {.params = {{"p", p}}, .weight_decay = -0.5}}), "sgd",
                          "weight_decay of parameter group 1", "-0.5");
    CHECK_THROWS_WITH_ALL(Adam(Groups{{.params = {{"p", p}}}, {.params = {{"q", p}}}}), "adam", "same tensor");
  }

  TEST_CASE("a checkpoint restores each parameter's lr_scale and weight decay, as torch restores param_groups") {
    namespace fs = std::filesystem;
    const fs::path path = fs::temp_directory_path() / ("skipgrad_groups_" + std::to_string(::getpid()) + ".st");
    Linear a(2, 2);
    std::vector<ParamGroup> groups(2);
    groups[0] = {.params = {{"weight", a.weight}}, .lr_scale = 0.1, .weight_decay = 0.0};
    groups[1] = {.params = {{"bias", a.bias}}, .lr_scale = 3.0};
    AdamW saved(groups, {.lr = 1e-3, .weight_decay = 0.01});
    save_checkpoint(path.string(), a, &saved);
    AdamW fresh(a.named_parameters(), {.lr = 1e-3, .weight_decay = 0.01});
    load_checkpoint(path.string(), a, &fresh);
    CHECK(fresh.lr_scale(0) == 0.1);
    CHECK(fresh.weight_decay(0) == 0.0);
    CHECK(fresh.lr_scale(1) == 3.0);
    CHECK(fresh.weight_decay(1) == 0.01);
    // restored by name: groups listed in the other order (or modules registered in another) get their own values
    AdamW reordered(std::vector<ParamGroup>{{.params = {{"bias", a.bias}}}, {.params = {{"weight", a.weight}}}},
                    {.lr = 1e-3, .weight_decay = 0.5});
    load_checkpoint(path.string(), a, &reordered);
    CHECK(reordered.named_params()[0].first == "bias");
    CHECK(reordered.lr_scale(0) == 3.0);
    CHECK(reordered.weight_decay(0) == 0.01);
    CHECK(reordered.lr_scale(1) == 0.1);
    CHECK(reordered.weight_decay(1) == 0.0);
    {
      SafetensorsFile renamed = load_safetensors(path.string());
      renamed.metadata.erase("skipgrad.checksum");
      renamed.metadata.erase("skipgrad.header_checksum");
      renamed.metadata["skipgrad.optim.param_names"] = R"(["weight", "weight"])";
      save_safetensors(path.string(), renamed.tensors, renamed.metadata);
      CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &reordered), "param_names", "names 'weight' twice");
      renamed.metadata["skipgrad.optim.param_names"] = R"(["weight", "b"])";
      save_safetensors(path.string(), renamed.tensors, renamed.metadata);
      CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &reordered), "a parameter 'b', which this optimizer");
      renamed.metadata["skipgrad.optim.param_names"] = "weight bias";
      save_safetensors(path.string(), renamed.tensors, renamed.metadata);
      CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &reordered), "is not a JSON array of names");
      CHECK(reordered.lr_scale(0) == 3.0);  // refused before anything changed
      save_checkpoint(path.string(), a, &saved);
      // an optimizer over more parameters than the file's: told which one, not that the lists' lengths differ
      AdamW weight_only(NamedTensors{{"weight", a.weight}}, {.lr = 1e-3});
      save_checkpoint(path.string(), a, &weight_only);
      CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &reordered), "this optimizer's parameter 'bias' is not "
                            "in the file's optimizer");
      save_checkpoint(path.string(), a, &saved);
    }
    // a damaged entry is refused before anything changes; a file without the entries (older) keeps the settings
    SafetensorsFile file = load_safetensors(path.string());
    file.metadata.erase("skipgrad.checksum");
    file.metadata.erase("skipgrad.header_checksum");
    file.metadata["skipgrad.optim.lr_scale"] = "0.5 -1";
    save_safetensors(path.string(), file.tensors, file.metadata);
    AdamW other(a.named_parameters(), {.lr = 1e-3});
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "skipgrad.optim.lr_scale", "'-1'");
    file.metadata["skipgrad.optim.lr_scale"] = "0.5";
    save_safetensors(path.string(), file.tensors, file.metadata);
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "has 1 values", "2 parameters");
    CHECK(other.lr_scale(0) == 1.0);
    file.metadata.erase("skipgrad.optim.lr_scale");
    file.metadata.erase("skipgrad.optim.weight_decay");
    file.metadata.erase("skipgrad.optim.param_names");
    save_safetensors(path.string(), file.tensors, file.metadata);
    load_checkpoint(path.string(), a, &other);
    CHECK(other.lr_scale(0) == 1.0);
    CHECK(other.weight_decay(0) == 0.0);  // AdamOptions' default
    CHECK_THROWS_WITH_ALL(other.set_lr_scale(2, 1.0), "set_lr_scale", "parameter 2 of 2");
    CHECK_THROWS_WITH_ALL(other.set_weight_decay(0, -1.0), "set_weight_decay", "'weight'", "-1");
    fs::remove(path);
  }

  TEST_CASE("a checkpoint restores Adam's betas and eps and SGD's momentum: the file's values win, as torch's") {
    namespace fs = std::filesystem;
    const fs::path path = fs::temp_directory_path() / ("skipgrad_settings_" + std::to_string(::getpid()) + ".st");
    Linear a(2, 2);
    AdamW saved(a.named_parameters(), {.lr = 1e-3, .beta1 = 0.8, .beta2 = 0.98, .eps = 1e-9});
    save_checkpoint(path.string(), a, &saved);
    AdamW fresh(a.named_parameters(), {.lr = 1e-3});
    load_checkpoint(path.string(), a, &fresh);
    CHECK(fresh.options().beta1 == 0.8);
    CHECK(fresh.options().beta2 == 0.98);
    CHECK(fresh.options().eps == 1e-9);
    // resumed from the file, the next step equals the saved optimizer's next step, bit for bit
    Linear b(2, 2);
    load_state_dict(b, state_dict(a));
    AdamW twin(b.named_parameters(), {.lr = 1e-3, .beta1 = 0.8, .beta2 = 0.98, .eps = 1e-9});
    for (auto* m : {&a, &b}) {
      Tensor x = Tensor::from_vector<float>({1, -2, 0.5f, 3}, {2, 2});
      sum(mul(m->forward(x), m->forward(x))).backward();
    }
    fresh.step();
    twin.step();
    CHECK(same_bits(a.weight, b.weight));
    CHECK(same_bits(a.bias, b.bias));

    SGD momentum_saved(a.named_parameters(), {.lr = 0.1, .momentum = 0.95, .nesterov = true});
    save_checkpoint(path.string(), a, &momentum_saved);
    SGD momentum_fresh(a.named_parameters(), {.lr = 0.1, .momentum = 0.5});
    load_checkpoint(path.string(), a, &momentum_fresh);
    CHECK(momentum_fresh.options().momentum == 0.95);
    CHECK(momentum_fresh.options().nesterov);

    // a damaged entry is refused before anything changes: the model, the state and every setting stay
    save_checkpoint(path.string(), a, &saved);
    SafetensorsFile file = load_safetensors(path.string());
    file.metadata.erase("skipgrad.checksum");
    file.metadata.erase("skipgrad.header_checksum");
    auto write_settings = [&](const std::string& v) {
      file.metadata["skipgrad.optim.settings"] = v;
      save_safetensors(path.string(), file.tensors, file.metadata);
    };
    AdamW other(a.named_parameters(), {.lr = 1e-3});
    const std::vector<float> weight_before = a.weight.to_vector<float>();
    {
      NoGradGuard ng;
      a.weight.copy_(Tensor::zeros({2, 2}));
    }
    write_settings("beta1=0.8 beta2=1.5 eps=1e-9");
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "skipgrad.optim.settings",
                          "beta2 must be in [0, 1)", "1.5");
    CHECK(other.options().beta1 == 0.9);  // beta1 was set before beta2 was refused: put back
    CHECK(a.weight.to_vector<float>() == std::vector<float>(4, 0.0f));
    write_settings("beta1=0.8 beta2=0.98");
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "skipgrad.optim.settings", "has no eps");
    write_settings("beta1=0.8 beta2=0.98 eps=1e-9 amsgrad=1");
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "'amsgrad'", "adamw optimizer does not have");
    write_settings("beta1=0.8 beta2=x eps=1e-9");
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "'beta2=x'", "not name=value");
    write_settings("beta1=0.8 beta2=0x1p-1 eps=1e-9");  // decimal only, in any locale (std::from_chars)
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "'beta2=0x1p-1'", "not name=value");
    write_settings("beta1=0.8 beta2=0.98 eps=1e-400");  // past double's range: refused, not read as 0
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "'eps=1e-400'");
    write_settings("beta1=0.5 beta2=0.98 eps=1e-9 beta1=0.75");
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "gives beta1 twice");
    write_settings("beta1=0.8 beta2=0.98 eps=1e-9");
    file.metadata["skipgrad.optim.step"] = "9223372036854775808";  // 2^63: refused before anything changes
    save_safetensors(path.string(), file.tensors, file.metadata);
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), a, &other), "skipgrad.optim.step", "past int64");
    CHECK(other.options().beta1 == 0.9);
    CHECK(a.weight.to_vector<float>() == std::vector<float>(4, 0.0f));
    file.metadata["skipgrad.optim.step"] = "0";
    file.metadata.erase("skipgrad.optim.settings");  // a file from before: the optimizer's own settings stay
    save_safetensors(path.string(), file.tensors, file.metadata);
    load_checkpoint(path.string(), a, &other);
    CHECK(other.options().beta2 == 0.999);
    CHECK(a.weight.to_vector<float>() == weight_before);
    // set_setting checks as the constructor does and names what it knows
    CHECK_THROWS_WITH_ALL(other.set_setting("beta3", 0.5), "adamw.set_setting", "'beta3'", "beta1, beta2, eps");
    CHECK_THROWS_WITH_ALL(other.set_setting("eps", -1), "adamw.set_setting", "eps must be >= 0");
    CHECK_THROWS_WITH_ALL(momentum_fresh.set_setting("momentum", 0), "sgd.set_setting", "with momentum");
    CHECK_THROWS_WITH_ALL(momentum_fresh.set_setting("nesterov", 0.5), "nesterov must be 1 or 0");
    SGD plain(a.named_parameters(), {.lr = 0.1});
    CHECK_THROWS_WITH_ALL(plain.set_setting("nesterov", 1), "sgd.set_setting", "nesterov needs momentum > 0");
    CHECK(!plain.options().nesterov);
    fs::remove(path);
  }

  TEST_CASE("the state follows a parameter cast after the optimizer was made: named_state and checkpoints") {
    namespace fs = std::filesystem;
    const fs::path path = fs::temp_directory_path() / ("skipgrad_follow_" + std::to_string(::getpid()) + ".st");
    Linear a(2, 2, false);
    AdamW opt_a(a.named_parameters());
    a.to(DType::F64);  // no step since: the state is still float32 inside
    for (const auto& entry : opt_a.named_state()) {  // not a structured binding: CAPTURE cannot take one
      CAPTURE(entry.first);
      CHECK(entry.second.dtype() == DType::F64);
    }
    save_checkpoint(path.string(), a, &opt_a);
    CHECK(load_safetensors(path.string()).find("optim.m.weight").dtype() == DType::F64);
    Linear b(2, 2, false);
    b.to(DType::F64);
    AdamW opt_b(b.named_parameters());  // made after to(), as documented
    load_checkpoint(path.string(), b, &opt_b);
    CHECK(same_bits(b.weight, a.weight));
    // a file whose state has another dtype than the optimizer's (as one saved before the state followed): the error
    // names the optimizer
    SafetensorsFile file = load_safetensors(path.string());
    for (auto& [name, t] : file.tensors)
      if (name == "optim.m.weight") t = t.to(DType::F32);
    file.metadata.erase("skipgrad.checksum");
    file.metadata.erase("skipgrad.header_checksum");
    save_safetensors(path.string(), file.tensors, file.metadata);
    CHECK_THROWS_WITH_ALL(load_checkpoint(path.string(), b, &opt_b), "optim.m.weight", "float32 in the file",
                          "float64 in the optimizer");
    fs::remove(path);
  }
}
