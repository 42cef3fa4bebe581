// analysis/measure.h: per-layer gradient norms and stream statistics on tiny Post-LN / Pre-LN / ResiDual models.
#include <cmath>

#include "analysis/measure.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

nn::TransformerConfig tiny_measure(const std::string& topology) {
  nn::TransformerConfig c;
  c.vocab = 13;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.enc_layers = c.dec_layers = 2;
  c.dropout = c.attn_dropout = c.act_dropout = 0.0;
  c.topology = topology;
  c.max_positions = 64;
  return c;
}

}  // namespace

TEST_SUITE("measure") {
  TEST_CASE("per-layer gradient norms, cosines and stream statistics") {
    for (const char* topo : {"post_ln", "pre_ln", "resi_dual"}) {
      INFO("topology " << topo);
      nn::TransformerConfig c = tiny_measure(topo);
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
        if (l.layer.back() == '0') {
          CHECK(std::isnan(l.cos_prev));
        } else {
          CHECK(l.cos_prev >= -1.0);
          CHECK(l.cos_prev <= 1.0);
        }
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

  TEST_CASE("measure_batch agrees with the gradient the model computes itself") {
    nn::TransformerConfig c = tiny_measure("pre_ln");
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
  }

  TEST_CASE("bad options throw") {
    nn::TransformerConfig c = tiny_measure("pre_ln");
    MeasureOptions opt;
    opt.n_batches = 0;
    CHECK_THROWS_WITH_ALL(measure_model(c, opt), "n_batches");
    CHECK_THROWS_WITH_ALL(random_batch(c, 2, 100, 1), "max_positions");
  }
}
