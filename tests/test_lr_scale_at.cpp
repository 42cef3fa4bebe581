// --lr-scale-at: parameter groups by name pattern (nn::lr_scale_groups, nn/name_patterns.h), their summary, the
// refusals, the check of a model's names before a run (nn::check_name_patterns), and the translation example training
// with it and resuming with its checkpoint's scales.
#include <cmath>
#include <filesystem>

#include "nn/checkpoint.h"
#include "nn/optim.h"
#include "nn/transformer.h"
#include "sweep.h"
#include "test_util.h"
#include "translate_test_util.h"

using namespace sgtest;
using namespace skipgrad::nn;

TEST_SUITE("train") {
  TEST_CASE("lr_scale_groups: a scale per parameter by name pattern, a later pattern winning; one group per scale") {
    const NamedTensors params{{"enc.0.w", Tensor::ones({2})}, {"enc.0.norm.alpha", Tensor::ones({1})},
                              {"dec.0.norm.alpha", Tensor::ones({1})}, {"dec.0.b", Tensor::ones({2})}};
    const PatternValues at = parse_pattern_values("*.alpha=10,dec.*=0.5", "--lr-scale-at", "SCALE", "\"*.alpha=10\"");
    CHECK(pattern_values_text(at) == "*.alpha=10,dec.*=0.5");
    CHECK(lr_scale_at_note(at) == " (--lr-scale-at *.alpha=10,dec.*=0.5)");  // as a run's first line shows them
    CHECK(lr_scale_at_note({}).empty());
    const std::vector<ParamGroup> groups = lr_scale_groups(params, at, "test");
    REQUIRE(groups.size() == 3);  // in the order the scales first appear: 1, 10, 0.5
    CHECK(groups[0].lr_scale == 1);
    CHECK(groups[1].lr_scale == 10);
    CHECK(groups[2].lr_scale == 0.5);
    REQUIRE(groups[2].params.size() == 2);
    CHECK(groups[0].params[0].first == "enc.0.w");
    CHECK(groups[1].params[0].first == "enc.0.norm.alpha");
    CHECK(groups[2].params[0].first == "dec.0.norm.alpha");  // both patterns match it: the later one's 0.5
    CHECK(groups[2].params[1].first == "dec.0.b");

    const AdamW opt(groups, {.lr = 1e-3});
    for (size_t i = 0; i < opt.named_params().size(); i++) {
      const std::string& name = opt.named_params()[i].first;
      CHECK(opt.lr_scale(i) == (name == "enc.0.w" ? 1 : name == "enc.0.norm.alpha" ? 10 : 0.5));
    }
    CHECK(lr_scales_summary(opt) == "lr x10: 1 parameter (enc.0.norm.alpha); lr x0.5: 2 parameters "
                                    "(dec.0.norm.alpha, ...)");
    CHECK(lr_scales_summary(AdamW(params)).empty());

    // none: one group of everything at 1x, in the given order
    const std::vector<ParamGroup> plain = lr_scale_groups(params, {}, "test");
    REQUIRE(plain.size() == 1);
    CHECK(plain[0].lr_scale == 1);
    CHECK(plain[0].params.size() == 4);
    CHECK(lr_scale_groups({}, {}, "test").size() == 1);

    CHECK_THROWS_WITH_ALL(lr_scale_groups(params, {{"*.gamma", 2}}, "test"),
                          "test: the pattern '*.gamma' matches no parameter", "enc.0.w, enc.0.norm.alpha");
    CHECK_THROWS_WITH_ALL(lr_scale_groups(params, {{"*", -1}}, "test"), "test: the learning-rate scale for '*'",
                          "finite number >= 0", "-1");
    CHECK_THROWS_WITH_ALL(lr_scale_groups(params, {{"*", NAN}}, "test"), "finite number >= 0");
    for (const char* bad : {"*.alpha", "*.alpha=", "=2", "*.alpha=2x", "a=1,,b=2"})
      CHECK_THROWS_WITH_ALL(parse_pattern_values(bad, "--lr-scale-at", "SCALE", "\"*.alpha=10\""),
                            "--lr-scale-at: '", "is not PATTERN=SCALE", "\"*.alpha=10\"");
  }

  TEST_CASE("check_name_patterns: lr_scale_at's patterns against the model's parameter names, at its depth") {
    TransformerConfig cfg;
    cfg.vocab = 0;  // a placeholder, as compare and sweep check before the data is read
    cfg.enc_layers = cfg.dec_layers = 1;
    cfg.d_model = 8, cfg.heads = 2, cfg.d_ff = 16;
    cfg.norm = NormKind::DynamicTanh;
    CHECK_NOTHROW(check_name_patterns(cfg, {{"*.alpha", 10}, {"enc.0.*", 2}}, "--lr-scale-at"));
    CHECK_NOTHROW(check_name_patterns(cfg, {}, "--lr-scale-at"));
    CHECK_THROWS_WITH_ALL(check_name_patterns(cfg, {{"enc.1.*", 2}}, "--lr-scale-at"),
                          "--lr-scale-at: the pattern 'enc.1.*' matches no parameter");
    cfg.enc_layers = cfg.dec_layers = 2;
    CHECK_NOTHROW(check_name_patterns(cfg, {{"enc.1.*", 2}}, "--lr-scale-at"));
    cfg.norm = NormKind::LayerNorm;  // no alpha in a LayerNorm model
    CHECK_THROWS_WITH_ALL(check_name_patterns(cfg, {{"*.alpha", 10}}, "--lr-scale-at"), "'*.alpha' matches no");
  }

  TEST_CASE("a sweep records --lr-scale-at in each run's settings: a rerun with other scales is told apart") {
    translate::TrainOptions a, b;
    b.lr_scale_at = {{"*.alpha", 10}};
    CHECK(translate::run_settings(b).find("\"lr_scale_at\":\"*.alpha=10\"") != std::string::npos);
    CHECK(translate::settings_differences(translate::run_settings(a), translate::run_settings(a)).empty());
    CHECK(translate::settings_differences(translate::run_settings(b), translate::run_settings(a)) ==
          "lr_scale_at \"*.alpha=10\" vs \"\"");
  }

  TEST_CASE("the translation example with --lr-scale-at: a scale of 0 freezes DyT's alphas; --resume keeps it") {
    const ScratchDir dir("skipgrad_lr_scale_at");
    std::vector<std::string> devices{"cpu"};
    if (cuda_available()) devices.push_back("cuda");  // (the emulator's, in the emulator build)
    auto alphas = [](const std::string& run) {  // every DyT's alpha in the run's checkpoint (not Adam's state of it)
      std::vector<std::pair<std::string, double>> out;
      for (const auto& [name, t] : load_safetensors(run + "/checkpoint_last.safetensors").tensors)
        if (name.rfind("optim.", 0) != 0 && name.size() > 6 && name.compare(name.size() - 6, 6, ".alpha") == 0)
          out.emplace_back(name, t.to(DType::F64).item<double>());
      return out;
    };
    for (const std::string& device : devices) {
      CAPTURE(device);
      translate::TrainOptions o = tiny_train_options(write_tiny_corpus(dir.path() / "corpus", 200));
      o.device = device;
      o.model.norm = NormKind::DynamicTanh;
      o.max_steps = o.save_every = 4;
      o.out_dir = (dir.path() / (device + "_plain")).string();
      translate::train(o);
      const auto plain = alphas(o.out_dir);
      o.lr_scale_at = {{"*.alpha", 0}};
      o.out_dir = (dir.path() / (device + "_frozen")).string();
      translate::train(o);
      const auto frozen = alphas(o.out_dir);
      REQUIRE(plain.size() == 7);  // Pre-LN, 1+1 layers: 2 in the encoder's layer, 3 in the decoder's, 2 final norms
      REQUIRE(frozen.size() == plain.size());
      int moved = 0;
      for (size_t i = 0; i < plain.size(); i++) {
        moved += plain[i].second != 0.5;
        CHECK_MESSAGE(frozen[i].second == 0.5, frozen[i].first);  // lr 0: no update, nor decoupled decay (lr wd p)
      }
      CHECK(moved == 7);  // trained at 1x, every alpha moves
      // resumed without --lr-scale-at, the run goes on with its checkpoint's scales (as torch restores param_groups)
      o.lr_scale_at.clear();
      o.resume = true;
      o.max_steps = o.save_every = 6;
      CHECK(translate::train(o).steps == 6);
      for (const auto& alpha : alphas(o.out_dir)) CHECK_MESSAGE(alpha.second == 0.5, alpha.first);
    }
  }
}
