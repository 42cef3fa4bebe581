// analysis/measure.h: per-layer gradient norms and stream statistics on tiny Post-LN / Pre-LN / ResiDual models,
// at initialization and after training steps.
#include <algorithm>
#include <cmath>

#include "analysis/measure.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

TEST_SUITE("measure") {
  TEST_CASE("per-layer gradient norms, cosines and stream statistics") {
    for (const char* topo : {"post_ln", "pre_ln", "resi_dual"}) {
      INFO("topology " << topo);
      nn::TransformerConfig c = tiny_transformer(topo);
      MeasureOptions opt;
      opt.seeds = {1, 2};
      opt.n_batches = 2;
      opt.batch = 3;
      opt.len = 6;
      opt.graph = true;
      LayerMeasures m = measure_model(c, opt);
      CHECK(m.samples == 4);
      CHECK(std::isfinite(m.loss));
      CHECK(m.loss > 0);
      REQUIRE(m.layers.size() == 4);
      CHECK(m.layers[0].layer == "enc.0");
      CHECK(m.layers[3].layer == "dec.1");
      for (auto& l : m.layers) {
        INFO("layer " << l.layer);
        CHECK(std::isfinite(l.fc2_grad_norm));
        CHECK(l.fc2_grad_norm > 0);
        CHECK(l.layer_grad_norm >= l.fc2_grad_norm);
        CHECK(std::isfinite(l.layer_grad_norm));
        CHECK(l.rms > 0);
        CHECK(l.max_abs >= l.rms);
        // layer 0 too: the stream entering the stack against the first layer's output
        CHECK(std::isfinite(l.cos_prev));
        CHECK(l.cos_prev >= -1.0);
        CHECK(l.cos_prev <= 1.0);
        CHECK(std::isfinite(l.token_cos));
        CHECK(l.token_cos >= -1.0);
        CHECK(l.token_cos <= 1.0);
        if (std::string(topo) == "resi_dual") CHECK(l.dual_max_abs > 0);
        else CHECK(l.dual_max_abs == -1.0);
      }
      // the first batch's graph was kept and analysed; the tape is empty again
      CHECK(!m.graph.nodes.empty());
      CHECK(m.paths.layers.size() >= 4);
      CHECK(current_tape().nodes().empty());
      CHECK_THROWS_WITH_ALL(m.layer("enc.7"), "enc.7");
    }
  }

  TEST_CASE("Admin is measured after its profiling pass; with ω = 1 it would be Post-LN exactly") {
    MeasureOptions opt;
    opt.seeds = {1};
    opt.n_batches = 1;
    opt.batch = 3;
    opt.len = 6;
    opt.task = "reverse";
    LayerMeasures post = measure_model(tiny_transformer("post_ln"), opt);
    LayerMeasures admin = measure_model(tiny_transformer("admin"), opt);
    // the same weights (ω is made of ones, drawing nothing), so only the profiled ω can make them differ
    manual_seed(1);
    nn::Transformer p(tiny_transformer("post_ln"));
    manual_seed(1);
    nn::Transformer a(tiny_transformer("admin"));
    MeasureBatch b = task_batch(tiny_transformer("admin"), "reverse", 3, 6, 5);
    CHECK(measure_batch(a, b).loss == measure_batch(p, b).loss);  // unprofiled Admin = Post-LN
    CHECK(admin.loss != post.loss);
    CHECK(admin.layers[1].fc2_grad_norm != doctest::Approx(post.layers[1].fc2_grad_norm).epsilon(1e-6));
    CHECK(admin.layers[0].fc2_grad_norm > 0);
    // a layer removed for analysis is profiled too (its ω set), and removed again after
    manual_seed(1);
    nn::Transformer whole(tiny_transformer("admin"));
    manual_seed(1);
    nn::Transformer removed(tiny_transformer("admin"));
    removed.remove_layers({"enc.1"});
    whole.init_from_batch(b.src, b.tgt_in);
    removed.init_from_batch(b.src, b.tgt_in);
    CHECK(removed.removed_layers() == std::vector<std::string>{"enc.1"});
    const Tensor omega = removed.parameter("enc.1.ffn_omega");
    CHECK(omega.to_vector<double>() == whole.parameter("enc.1.ffn_omega").to_vector<double>());
    CHECK(omega.to_vector<double>()[0] != 1.0);
  }

  TEST_CASE("measure_batch agrees with the gradient the model computes itself") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    manual_seed(4);
    nn::Transformer model(c);
    MeasureBatch b = random_batch(c, 2, 5, 9);
    LayerMeasures m = measure_batch(model, b);
    // recompute ||dL/dW2|| of dec.1 by hand
    Tensor logits = model.forward(b.src, b.tgt_in);
    nn::label_smoothed_nll(logits, b.tgt_out, c.pad_id, 0.1).loss.backward();
    Tensor g = model.parameter("dec.1.ffn.fc2.weight").grad();
    double sq = 0;
    for (float v : g.to_vector<float>()) sq += double(v) * v;
    CHECK(m.layer("dec.1").fc2_grad_norm == doctest::Approx(std::sqrt(sq)).epsilon(1e-5));
    model.zero_grad();
    // hooks a caller set are theirs again afterwards, and see the caller's next forward
    std::vector<Tensor> outs;
    std::vector<nn::AttentionLogitRows> rows;
    model.layer_outputs = &outs;
    model.attention_logits = &rows;
    measure_batch(model, b);
    CHECK(model.layer_outputs == &outs);
    CHECK(model.attention_logits == &rows);
    CHECK(outs.empty());
    {
      NoGradGuard no_grad;
      model.forward(b.src, b.tgt_in);
    }
    CHECK(outs.size() == 4);  // 2 + 2 layers
    CHECK_FALSE(rows.empty());
    model.layer_outputs = nullptr;
    model.attention_logits = nullptr;
  }

  TEST_CASE("layer 0's cosine compares the stack's input stream with the first layer's output") {
    // Pre-LN with a zero FFN W2 and zero attention output: layer 0 is the identity, so cos(x_in, x_0) = 1
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    manual_seed(2);
    nn::Transformer model(c);
    for (auto& [name, p] : model.named_parameters())
      if (name.rfind("enc.0.", 0) == 0 && (name.find("fc2") != std::string::npos || name.find("out_proj") !=
                                                                                         std::string::npos))
        std::fill(p.data<float>(), p.data<float>() + p.numel(), 0.0f);  // weight and bias
    LayerMeasures m = measure_batch(model, random_batch(c, 2, 6, 3));
    CHECK(m.layer("enc.0").cos_prev == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(m.layer("enc.1").cos_prev < 0.9999);
    CHECK(m.layer("dec.0").cos_prev < 0.9999);
  }

  TEST_CASE("DyT: each DyT's alpha, input RMS and saturated share over non-pad tokens, by hand for enc.0's first") {
    nn::TransformerConfig c = tiny_transformer("pre_ln", 13, nn::NormKind::DynamicTanh);
    manual_seed(4);
    nn::Transformer model(c);
    MeasureBatch b = random_batch(c, 3, 6, 2);  // lengths 3..6: padded sentences
    // Pre-LN's first DyT reads the stream entering the encoder; alpha 1.5 saturates some of it, not all
    model.parameter("enc.0.self_attn_norm.alpha").copy_(Tensor::full({1}, 1.5));
    std::vector<Tensor> ins;
    model.stack_inputs = &ins;
    {
      NoGradGuard ng;
      model.forward(b.src, b.tgt_in);
    }
    model.stack_inputs = nullptr;
    const std::vector<double> x = ins[0].to(DType::F64).to_vector<double>();
    const std::vector<int64_t> src = b.src.to_vector<int64_t>();
    double sq = 0, n = 0, saturated = 0;
    for (size_t t = 0; t < src.size(); t++) {
      if (src[t] == c.pad_id) continue;
      for (int64_t j = 0; j < c.d_model; j++) {
        const double v = x[t * c.d_model + j];
        sq += v * v, n += 1, saturated += std::abs(1.5 * v) >= std::atanh(0.99);
      }
    }
    REQUIRE(n < (double)(src.size() * c.d_model));  // (the batch has padding to leave out)
    LayerMeasures m = measure_batch(model, b);
    // one per DyT the model runs, in the order they run: 2 per encoder layer and the final one, 3 per decoder layer
    REQUIRE(m.dyts.size() == (size_t)(2 * c.enc_layers + 1 + 3 * c.dec_layers + 1));
    CHECK(m.dyts[0].norm == "enc.0.self_attn_norm");
    CHECK(m.dyts[2 * c.enc_layers].norm == "enc.final_norm");
    CHECK(m.dyts.back().norm == "dec.final_norm");
    CHECK(m.dyts[0].alpha == 1.5);
    CHECK(m.dyts[1].alpha == doctest::Approx(c.dyt_alpha));
    CHECK(m.dyts[0].input_rms == doctest::Approx(std::sqrt(sq / n)).epsilon(1e-6));
    CHECK(m.dyts[0].saturated == doctest::Approx(saturated / n));
    CHECK(m.dyts[0].saturated > 0.0);
    CHECK(m.dyts[0].saturated < 1.0);
    for (const DytMeasure& d : m.dyts) {  // the others: alpha0 0.5 and small streams at init
      CHECK(d.input_rms > 0);
      CHECK(d.saturated >= 0);
    }
    const std::string md = dyt_measures_markdown(m.dyts);
    CHECK(md.find("\n| enc.0.self_attn_norm | 1.5 | ") != std::string::npos);
    CHECK(md.find("| dec.final_norm |") != std::string::npos);
    // averaged over batches as every statistic is: the same batch twice gives the same numbers
    LayerMeasures twice = measure_batches(model, {b, b});
    CHECK(twice.dyts[0].saturated == doctest::Approx(m.dyts[0].saturated));
    CHECK(twice.dyts[0].input_rms == doctest::Approx(m.dyts[0].input_rms));
    // a LayerNorm model has none, and no table
    nn::Transformer ln(tiny_transformer("pre_ln"));
    CHECK(measure_batch(ln, b).dyts.empty());
    CHECK(dyt_measures_markdown({}).empty());
  }

  TEST_CASE("mean_token_cosine: the pairwise mean of a sentence's tokens, by the sum of their unit vectors") {
    // against every pair, on random tokens with padding, a zero token and a sentence of one token
    manual_seed(6);
    const Tensor x = Tensor::randn({3, 5, 4}, 0.5, 1, DType::F64);  // mean 0.5: the cosines are not all near 0
    std::vector<int64_t> pad = {0, 0, 0, 1, 1,  //
                                0, 0, 0, 0, 0,  //
                                1, 0, 1, 1, 1};  // one token: no pair, left out
    std::vector<double> v = x.to_vector<double>();
    std::fill(v.begin() + (5 + 2) * 4, v.begin() + (5 + 3) * 4, 0.0);  // sentence 1, token 2: no direction
    const Tensor xz = Tensor::from_vector<double>(v, {3, 5, 4});
    auto cos = [&](int64_t a, int64_t b) {
      double dot = 0, na = 0, nb = 0;
      for (int64_t j = 0; j < 4; j++) dot += v[a * 4 + j] * v[b * 4 + j], na += v[a * 4 + j] * v[a * 4 + j],
                                      nb += v[b * 4 + j] * v[b * 4 + j];
      return dot / std::sqrt(na * nb);
    };
    auto pairs = [&](std::vector<int64_t> tokens) {
      double s = 0;
      for (int64_t a : tokens)
        for (int64_t b : tokens)
          if (a != b) s += cos(a, b);
      return s / double(tokens.size() * (tokens.size() - 1));
    };
    const double want = (pairs({0, 1, 2}) + pairs({5, 6, 8, 9})) / 2;
    CHECK(mean_token_cosine(xz, pad) == doctest::Approx(want).epsilon(1e-12));
    // collapsed tokens (one direction, any lengths) give 1; two opposite ones -1; none with a pair: NaN
    const Tensor same = Tensor::from_vector<double>({1, 2, 0, 3, 6, 0, 0.5, 1, 0}, {1, 3, 3});
    CHECK(mean_token_cosine(same, {0, 0, 0}) == doctest::Approx(1.0));
    const Tensor opposite = Tensor::from_vector<double>({1, 0, -2, 0}, {1, 2, 2});
    CHECK(mean_token_cosine(opposite, {0, 0}) == doctest::Approx(-1.0));
    CHECK(std::isnan(mean_token_cosine(opposite, {0, 1})));
    CHECK_THROWS_WITH_ALL(mean_token_cosine(opposite, {0}), "mean_token_cosine", "float64[1,2,2]", "1 flags");
  }

  TEST_CASE("measure_batches: the mean of measure_batch over given batches; the Markdown rows") {
    nn::TransformerConfig c = tiny_transformer("post_ln");
    manual_seed(5);
    nn::Transformer model(c);
    const MeasureBatch a = random_batch(c, 2, 6, 1), b = random_batch(c, 3, 6, 2);
    const LayerMeasures ma = measure_batch(model, a), mb = measure_batch(model, b);
    const LayerMeasures both = measure_batches(model, {a, b});
    CHECK(both.samples == 2);
    CHECK(both.loss == doctest::Approx((ma.loss + mb.loss) / 2));
    for (size_t i = 0; i < both.layers.size(); i++) {
      CHECK(both.layers[i].token_cos == doctest::Approx((ma.layers[i].token_cos + mb.layers[i].token_cos) / 2));
      CHECK(both.layers[i].fc2_grad_norm ==
            doctest::Approx((ma.layers[i].fc2_grad_norm + mb.layers[i].fc2_grad_norm) / 2));
    }
    const std::string md = layer_measures_markdown(both);
    CHECK(md.find("| layer | ‖∇W2‖ |") == 0);
    CHECK(md.find("| enc.1 |") != std::string::npos);
    CHECK_THROWS_WITH_ALL(measure_batches(model, {}), "measure_batches", "no batches");
  }

  TEST_CASE("tasks: copy and reverse targets, random unchanged") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    MeasureBatch cp = task_batch(c, "copy", 3, 6, 5), rv = task_batch(c, "reverse", 3, 6, 5);
    CHECK(cp.src.to_vector<int64_t>() == rv.src.to_vector<int64_t>());  // same seed, same sources
    auto src = cp.src.to_vector<int64_t>(), y = cp.tgt_out.to_vector<int64_t>(), yr = rv.tgt_out.to_vector<int64_t>(),
         tin = rv.tgt_in.to_vector<int64_t>();
    for (int64_t b = 0; b < 3; ++b) {
      int64_t n = 0;
      while (n < 6 && src[b * 6 + n] != c.pad_id) ++n;
      REQUIRE(n >= 3);
      for (int64_t t = 0; t < 6; ++t) {
        CHECK(y[b * 6 + t] == src[b * 6 + t]);                                    // copy, pads included
        CHECK(yr[b * 6 + t] == (t < n ? src[b * 6 + n - 1 - t] : c.pad_id));      // reversed, then padding
        CHECK(tin[b * 6 + t] == (t == 0 ? 2 : t < n ? yr[b * 6 + t - 1] : c.pad_id));  // shifted right after bos
      }
    }
    CHECK(task_batch(c, "random", 3, 6, 5).tgt_out.to_vector<int64_t>() ==
          random_batch(c, 3, 6, 5).tgt_out.to_vector<int64_t>());
    CHECK_THROWS_WITH_ALL(task_batch(c, "sort", 3, 6, 5), "task_batch", "sort", "reverse");
  }

  TEST_CASE("measured at chosen training steps: Adam on the copy task lowers the loss, step 0 is the init") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    MeasureOptions opt;
    opt.seeds = {1, 2};
    opt.n_batches = 2;
    opt.batch = 4;
    opt.len = 6;
    opt.task = "copy";
    opt.steps = {0, 30};
    opt.lr = 1e-2;
    opt.warmup = 5;
    std::vector<LayerMeasures> by_step = measure_steps(c, opt);
    REQUIRE(by_step.size() == 2);
    CHECK(by_step[0].step == 0);
    CHECK(by_step[1].step == 30);
    CHECK(by_step[0].samples == 4);
    CHECK(by_step[1].samples == 4);
    CHECK(by_step[1].loss < by_step[0].loss - 0.3);  // it learned something
    for (const LayerMeasure& l : by_step[1].layers) {
      CHECK(std::isfinite(l.fc2_grad_norm));
      CHECK(std::isfinite(l.cos_prev));
    }
    // step 0 of a run with training equals measure_model at init (same seeds, same measured batches)
    MeasureOptions init = opt;
    init.steps = {0};
    LayerMeasures m0 = measure_model(c, init);
    CHECK(m0.loss == doctest::Approx(by_step[0].loss).epsilon(1e-12));
    CHECK(m0.layer("dec.1").fc2_grad_norm == doctest::Approx(by_step[0].layer("dec.1").fc2_grad_norm).epsilon(1e-12));
    // the average is the mean of the per-seed runs
    MeasureOptions one = opt;
    one.seeds = {1};
    MeasureOptions two = opt;
    two.seeds = {2};
    const double l1 = measure_steps(c, one)[1].loss, l2 = measure_steps(c, two)[1].loss;
    CHECK(by_step[1].loss == doctest::Approx((l1 + l2) / 2).epsilon(1e-9));
  }

  TEST_CASE("bad options throw") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    MeasureOptions opt;
    opt.n_batches = 0;
    CHECK_THROWS_WITH_ALL(measure_model(c, opt), "n_batches");
    opt.n_batches = 1;
    opt.steps = {10, 5};
    CHECK_THROWS_WITH_ALL(measure_steps(c, opt), "ascending", "10");
    opt.steps = {};
    CHECK_THROWS_WITH_ALL(measure_steps(c, opt), "no steps");
    CHECK_THROWS_WITH_ALL(random_batch(c, 2, 100, 1), "max_positions");
  }
}
