// T5's relative-position bias (Raffel et al. 2020): the buckets against T5's code, nn::RelativePositionBias against
// its definition (forward, gradient), MultiHeadAttention with a position bias (cache, analysis), and nn::Transformer
// with cfg.positions t5 (one table per stack, decode_step, beam reorder, the graph, no length limit, refusals).
// Elsewhere: whole models against PyTorch in test_transformer_reference.cpp (positions_*t5*); decode_step, prefill
// and gradchecks of whole LMs in test_decoder_only.cpp and test_positions.cpp (their loops over the encodings).
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "analysis/graph.h"
#include "autograd/autocast.h"
#include "nn/checkpoint.h"
#include "nn/generate.h"
#include "nn/transformer.h"
#include "positions_test_util.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector<int64_t>(v, {B, T}); }

// T5's buckets for r in [-300, 300], as (first r, bucket) at every change: printed by PyTorch 1.13 running Hugging
// Face's T5Attention._relative_position_bucket (float32 log, as T5's Mesh TensorFlow code) over
// torch.arange(-300, 301) (scripts/make_transformer_reference.py has the function).
struct BucketRuns {
  bool bidirectional;
  int64_t buckets, max_distance;
  std::vector<std::pair<int64_t, int64_t>> runs;
};
const std::vector<BucketRuns>& t5_bucket_runs() {
  static const std::vector<BucketRuns> runs = {
      {true, 32, 128, {{-300, 15}, {-90, 14}, {-63, 13}, {-45, 12}, {-31, 11}, {-22, 10}, {-15, 9}, {-11, 8},
                       {-7, 7},    {-6, 6},   {-5, 5},   {-4, 4},   {-3, 3},   {-2, 2},   {-1, 1},   {0, 0},
                       {1, 17},    {2, 18},   {3, 19},   {4, 20},   {5, 21},   {6, 22},   {7, 23},   {8, 24},
                       {12, 25},   {16, 26},  {23, 27},  {32, 28},  {46, 29},  {64, 30},  {91, 31}}},
      {true, 8, 20, {{-300, 3}, {-6, 2}, {-1, 1}, {0, 0}, {1, 5}, {2, 6}, {7, 7}}},
      {true, 5, 7, {{-300, 1}, {0, 0}, {1, 3}}},
      {false, 32, 128, {{-300, 31}, {-112, 30}, {-98, 29}, {-86, 28}, {-76, 27}, {-66, 26}, {-58, 25}, {-51, 24},
                        {-45, 23},  {-39, 22},  {-34, 21}, {-30, 20}, {-26, 19}, {-23, 18}, {-20, 17}, {-18, 16},
                        {-15, 15},  {-14, 14},  {-13, 13}, {-12, 12}, {-11, 11}, {-10, 10}, {-9, 9},   {-8, 8},
                        {-7, 7},    {-6, 6},    {-5, 5},   {-4, 4},   {-3, 3},   {-2, 2},   {-1, 1},   {0, 0}}},
      {false, 8, 20, {{-300, 7}, {-13, 6}, {-8, 5}, {-5, 4}, {-3, 3}, {-2, 2}, {-1, 1}, {0, 0}}},
      {false, 5, 7, {{-300, 4}, {-4, 3}, {-3, 2}, {-1, 1}, {0, 0}}},
  };
  return runs;
}

// The tiny models' T5 settings: 4 buckets up to distance 5, so that short test sequences reach the log-spaced
// buckets and the clamp (the default 32 buckets are exact up to distance 8 or 16).
nn::TransformerConfig tiny_t5(const std::string& topology, bool decoder_only) {
  nn::TransformerConfig c = tiny_transformer(topology);
  if (decoder_only) c.enc_layers = 0;
  c.positions = nn::PositionEncoding::T5;
  c.relative_buckets = 4;
  c.relative_max_distance = 5;
  return c;
}

}  // namespace

TEST_SUITE("relative_bias") {
  TEST_CASE("relative_position_bucket gives T5's buckets (PyTorch's run of Hugging Face's function)") {
    for (const BucketRuns& b : t5_bucket_runs()) {
      INFO((b.bidirectional ? "bidirectional" : "causal") << ", " << b.buckets << " buckets, max_distance "
                                                            << b.max_distance);
      for (size_t k = 0; k < b.runs.size(); k++) {
        const int64_t end = k + 1 < b.runs.size() ? b.runs[k + 1].first : 301;
        for (int64_t r = b.runs[k].first; r < end; r++) {
          INFO("r " << r);
          CHECK(nn::relative_position_bucket(r, b.bidirectional, b.buckets, b.max_distance) == b.runs[k].second);
        }
      }
      // past the table: every farther r shares the bucket of ±max_distance
      for (int64_t far : {b.max_distance, b.max_distance + 1, int64_t(1) << 40})
        for (int64_t sign : {-1, 1})
          CHECK(nn::relative_position_bucket(sign * far, b.bidirectional, b.buckets, b.max_distance) ==
                nn::relative_position_bucket(sign * b.max_distance, b.bidirectional, b.buckets, b.max_distance));
    }
  }

  TEST_CASE("RelativePositionBias: bias[b, h, i, j] = weight[bucket(p_j - p_i), h], past the table too; gradient") {
    for (bool bidirectional : {true, false}) {
      INFO((bidirectional ? "bidirectional" : "causal"));
      manual_seed(3);
      nn::RelativePositionBias rpb(3, 8, 6, bidirectional);
      rpb.to(DType::F64);
      nn::init::normal_(rpb.weight, 0, 1);
      CHECK(rpb.bucket_of.shape() == Shape{13});
      // positions as make_positions gives them (pad 1 stays 1), and far apart ones: r up to ±40, past max_distance 6
      const Tensor qpos = ids({2, 3, 4, 1, 2, 30}, 2, 3), kpos = ids({2, 3, 4, 5, 1, 42, 3, 2}, 2, 4);
      const Tensor bias = rpb.forward(qpos, kpos);
      REQUIRE(bias.shape() == Shape{2, 3, 3, 4});
      const std::vector<double> w = rpb.weight.to_vector<double>(), got = bias.contiguous().to_vector<double>();
      const std::vector<int64_t> q = qpos.to_vector<int64_t>(), k = kpos.to_vector<int64_t>();
      for (int64_t b = 0; b < 2; b++)
        for (int64_t h = 0; h < 3; h++)
          for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 4; j++) {
              const int64_t bucket = nn::relative_position_bucket(k[b * 4 + j] - q[b * 3 + i], bidirectional, 8, 6);
              CHECK(got[((b * 3 + h) * 3 + i) * 4 + j] == w[bucket * 3 + h]);
            }
      // the gradient: a weight entry gets the sum of the bias entries that read it
      Generator gen(9);
      const Tensor weights = Tensor::randn(bias.shape(), 0, 1, DType::F64, Device::cpu(), &gen);
      auto res = gradcheck(
          [&](const std::vector<Tensor>&) {
            return sum(mul(rpb.forward(qpos, kpos), weights));
          },
          {rpb.weight}, 1e-6, 1e-7, 1e-6);
      CHECK_MESSAGE(res.ok, res.message);
    }
    nn::RelativePositionBias rpb(2, 4, 5, true);
    CHECK_THROWS_WITH_ALL(rpb.forward(Tensor::zeros({2, 3}), ids({2, 3}, 1, 2)),
                          "RelativePositionBias", "expected int64 query positions [B, Tq] and key positions [B, Tk]",
                          "got float32[2,3]");
    CHECK_THROWS_WITH_ALL(rpb.forward(ids({2, 3}, 1, 2), ids({2, 3, 4, 5}, 2, 2)), "RelativePositionBias",
                          "int64[2,2]");
    CHECK_THROWS_WITH_ALL(nn::RelativePositionBias(2, 3, 5, true), "RelativePositionBias", "buckets in [4, 2^16]");
    CHECK_THROWS_WITH_ALL(nn::RelativePositionBias(2, 8, 4, false), "8 buckets need max_distance in (4, 2^16]");
    CHECK_THROWS_WITH_ALL(nn::RelativePositionBias(2, 8, 1, true), "8 buckets (bidirectional) need max_distance in "
                          "(2, 2^16]");
  }

  TEST_CASE("MultiHeadAttention: a position bias for self-attention only; a cached step takes its rows; analysis") {
    nn::AttentionConfig ac;
    ac.d_model = 8;
    ac.heads = 2;
    manual_seed(4);
    nn::MultiHeadAttention mha(ac);
    mha.to(DType::F64);
    nn::RelativePositionBias rpb(2, 4, 5, false);
    rpb.to(DType::F64);
    nn::init::normal_(rpb.weight, 0, 1);
    Generator g(5);
    const Tensor x = Tensor::randn({1, 4, 8}, 0, 1, DType::F64, Device::cpu(), &g);
    const Tensor other = Tensor::randn({1, 4, 8}, 0, 1, DType::F64, Device::cpu(), &g);
    const Tensor pos = ids({2, 3, 4, 5}, 1, 4), bias = rpb.forward(pos, pos);
    CHECK_THROWS_WITH_ALL(mha.forward(x, other, Tensor(), false, {}, {}, bias),
                          "a position bias is for self-attention");
    mha.eval();
    NoGradGuard no_grad;
    const Tensor full = mha.forward(x, x, Tensor(), true, {}, {}, bias);
    CHECK(max_abs_diff(full, mha.forward(x, x, Tensor(), true)) > 1e-3);  // the bias changes the output
    nn::KVCache cache;
    for (int64_t t = 0; t < 4; t++) {
      const Tensor xt = x.slice(1, t, t + 1);
      const Tensor rows = bias.slice(2, t, t + 1).slice(3, 0, t + 1);  // query t over keys 0..t
      const Tensor step = mha.forward_cached(xt, cache, xt, Tensor(), true, {}, {}, rows);
      INFO("step " << t);
      CHECK(max_abs_diff(step, full.slice(1, t, t + 1)) < 1e-12);
    }
    CHECK_THROWS_WITH_ALL(mha.forward_cached(x.slice(1, 0, 1), cache, Tensor(), Tensor(), false, {}, {}, bias),
                          "a position bias is for self-attention steps");
    // the analysis: with zero keys every logit is 0, and the entropy is that of softmax(bias) over the seen keys
    mha.k_proj->weight.copy_(Tensor::zeros({8, 8}, DType::F64));
    mha.k_proj->bias.copy_(Tensor::zeros({8}, DType::F64));
    std::vector<nn::AttentionLogitRows> rows;
    mha.logit_rows = &rows;
    mha.forward(x, x, Tensor(), true, {}, {}, bias);
    REQUIRE(rows.size() == 1);
    const std::vector<double> entropy = rows[0].entropy.to_vector<double>(), b = bias.contiguous().to_vector<double>();
    for (int64_t h = 0; h < 2; h++)
      for (int64_t i = 0; i < 4; i++) {
        double total = 0, want = 0;
        for (int64_t j = 0; j <= i; j++) total += std::exp(b[(h * 4 + i) * 4 + j]);
        for (int64_t j = 0; j <= i; j++) {
          const double p = std::exp(b[(h * 4 + i) * 4 + j]) / total;
          want -= p * std::log(p);
        }
        CHECK(entropy[h * 4 + i] == doctest::Approx(want).epsilon(1e-12));
      }
  }

  TEST_CASE("Transformer with t5: one table per stack, its kind and config; the refusals") {
    manual_seed(1);
    nn::TransformerConfig c = tiny_t5("pre_ln", false);
    nn::Transformer model(c);
    CHECK((!model.positions && !model.learned_positions && !model.rotary && !model.alibi));
    REQUIRE(model.encoder->relative_bias);
    REQUIRE(model.decoder->relative_bias);
    CHECK(model.encoder->relative_bias->bidirectional);
    CHECK(!model.decoder->relative_bias->bidirectional);
    CHECK(model.parameter("enc.relative_bias.weight").shape() == Shape{4, 2});
    CHECK(model.parameter("dec.relative_bias.weight").shape() == Shape{4, 2});
    CHECK(model.kind().find(", positions t5 buckets 4 max_distance 5)") != std::string::npos);
    CHECK(c.positions_summary() == "t5 (4 buckets up to distance 5)");  // (run logs)
    nn::TransformerConfig rope = tiny_transformer("pre_ln");
    rope.positions = nn::PositionEncoding::Rope;
    CHECK(rope.positions_summary() == "rope (theta 10000)");
    rope.rope_dims = 4;
    CHECK(rope.positions_summary() == "rope (theta 10000, 4 of 8 dims)");
    CHECK(tiny_transformer("pre_ln").positions_summary() == "sinusoidal");
    // with_positions (a sweep's runs): another encoding's options go back to their defaults, its own stay
    const nn::TransformerConfig as_rope = c.with_positions(nn::PositionEncoding::Rope);
    CHECK((as_rope.positions == nn::PositionEncoding::Rope && as_rope.relative_buckets == 32 &&
           as_rope.relative_max_distance == 128));
    CHECK(rope.with_positions(nn::PositionEncoding::T5).rope_dims == 0);
    CHECK(c.with_positions(nn::PositionEncoding::T5).relative_max_distance == 5);
    CHECK(c.position_limit() == std::numeric_limits<int64_t>::max());
    // N(0, d^-1/2): 8 draws of std 0.25 stay well inside ±1.5
    CHECK(max(abs(model.parameter("enc.relative_bias.weight"))).item() < 1.5);
    CHECK(max(abs(model.parameter("enc.relative_bias.weight"))).item() > 0);
    nn::Transformer lm(tiny_t5("pre_ln", true));
    CHECK(!lm.encoder->relative_bias);
    bool dec_table = false;
    for (const auto& [name, t] : lm.named_parameters()) {
      CHECK(name.find("enc.") != 0);
      dec_table = dec_table || name == "dec.relative_bias.weight";
    }
    CHECK(dec_table);
    // refusals
    nn::TransformerConfig bad = tiny_transformer("pre_ln");
    bad.relative_buckets = 16;
    CHECK_THROWS_WITH_ALL(bad.validate(), "relative_buckets 16 and relative_max_distance 128 are for positions t5");
    bad = tiny_t5("pre_ln", false);
    for (int64_t buckets : {int64_t(3), int64_t(0), int64_t(-4), int64_t(1) << 40}) {
      bad.relative_buckets = buckets;
      const std::string want = "positions t5 needs relative_buckets in [4, 2^16], got " + std::to_string(buckets);
      CHECK_THROWS_WITH_ALL(bad.validate(), want.c_str());
    }
    bad = tiny_t5("pre_ln", false);
    bad.relative_max_distance = 2;
    CHECK_THROWS_WITH_ALL(bad.validate(), "with 4 buckets needs relative_max_distance in (2, 2^16], got 2");
    bad.relative_max_distance = int64_t(1) << 17;
    CHECK_THROWS_WITH_ALL(bad.validate(), "relative_max_distance in (2, 2^16], got 131072");
    CHECK(nn::parse_position_encoding("t5") == nn::PositionEncoding::T5);
  }

  TEST_CASE("a file whose T5 buckets differ from the settings' is refused before anything is copied") {
    // The buckets buffer indexes the bias table: an edited one (or out of range) would read other rows, or fail
    // mid-forward. load_checkpoint and load_state_dict compare it with the buckets the model's settings give.
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("skipgrad_t5_buckets_" + std::to_string(::getpid()) + ".safetensors")).string();
    manual_seed(2);
    nn::Transformer saved(tiny_t5("pre_ln", false));
    manual_seed(3);
    nn::Transformer model(tiny_t5("pre_ln", false));
    const std::vector<float> before = model.parameter("dec.relative_bias.weight").to_vector<float>();
    for (int64_t edited : {int64_t(0), int64_t(99)}) {  // another valid bucket; one past the table
      CAPTURE(edited);
      nn::NamedTensors tensors = nn::state_dict(saved);
      for (auto& [name, t] : tensors)
        if (name == "dec.relative_bias.buckets") {
          t = t.clone();
          t.data<int64_t>()[0] = edited;  // relative position -5: the past's last bucket, 3
        }
      nn::save_safetensors(path, tensors);
      const std::string want = "holds bucket " + std::to_string(edited) + " for relative position -5 where 4 "
                               "buckets up to distance 5 give 3";
      CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, model), "load_checkpoint", "buffer 'dec.relative_bias.buckets'",
                            want.c_str(), "an edited file");
      CHECK_THROWS_WITH_ALL(nn::load_state_dict(model, tensors), "load_state_dict",
                            "buffer 'dec.relative_bias.buckets'", want.c_str());
      CHECK(model.parameter("dec.relative_bias.weight").to_vector<float>() == before);  // nothing copied
    }
    // the file as saved loads
    nn::save_checkpoint(path, saved);
    nn::load_checkpoint(path, model);
    CHECK(model.parameter("dec.relative_bias.weight").to_vector<float>() ==
          saved.parameter("dec.relative_bias.weight").to_vector<float>());
    std::filesystem::remove(path);
  }

  TEST_CASE("encoder-decoder with t5: decode_step equals decode, after a beam reorder too; the bias in SA only") {
    nn::TransformerConfig c = tiny_t5("post_ln", false);
    manual_seed(6);
    nn::Transformer model(c);
    model.to(DType::F64);
    const Tensor src = ids({4, 5, 6, 2, 7, 8, 2, 1}, 2, 4);
    check_decode_step_equals_decode(model, src, 2);  // a swap at step 2: the fed tokens' positions move too
    // the graph: each stack computes its bias once; every self-attention's attention node reads it, no
    // cross-attention's does; nothing is added to the embeddings
    const Graph g = training_graph(model, src);
    int biased = 0, plain = 0, tables = 0;
    for (const auto& n : g.nodes) {
      CHECK(n.name.find("add_positions") == std::string::npos);
      if (n.name.find("relative_bias.table") != std::string::npos) tables++;
      if (n.op != "attention") continue;
      bool bias = false;
      for (const auto& param : n.params) bias = bias || param.first == "bias";
      CHECK(bias == (n.name.find("self_attn") != std::string::npos));
      (bias ? biased : plain)++;
    }
    CHECK(biased == 2 + 2);
    CHECK(plain == 2);
    CHECK(tables == 2);
    // both tables get gradients, the sum of their layers'
    model.train();
    const Tensor tgt = ids({2, 9, 10, 11, 2, 3, 4, 5}, 2, 4);
    sum(model.forward(src, tgt)).backward();
    for (const char* p : {"enc.relative_bias.weight", "dec.relative_bias.weight"}) {
      INFO(p);
      REQUIRE(model.parameter(p).grad().defined());
      CHECK(max(abs(model.parameter(p).grad())).item() > 0);
    }
  }

  TEST_CASE("t5 under bf16 autocast: one bf16 copy of the stack's bias, a float32 gradient for its table") {
    nn::TransformerConfig c = tiny_t5("hybrid_norm", false);
    manual_seed(9);
    nn::Transformer model(c);
    const Tensor src = ids({4, 5, 6, 2, 7, 8, 2, 1}, 2, 4), tgt = ids({2, 9, 10, 11, 2, 3, 4, 1}, 2, 4);
    model.eval();
    Tensor f32;
    {
      NoGradGuard no_grad;
      f32 = model.forward(src, tgt);
    }
    for (Device d : {Device::cpu(), Device::cuda()}) {
      if (d.is_cuda() && !cuda_available()) continue;
      INFO(d.str());
      model.to(d);
      Tensor loss;
      {
        AutocastBF16 autocast;
        const Tensor logits = model.forward(src.to(d), tgt.to(d));
        CHECK(max_abs_diff(logits.to(DType::F32).to(Device::cpu()), f32) < 0.1);
        loss = sum(logits.to(DType::F32));
      }
      loss.backward();
      for (const char* p : {"enc.relative_bias.weight", "dec.relative_bias.weight"}) {
        INFO(p);
        const Tensor g = model.parameter(p).grad();
        REQUIRE(g.defined());
        CHECK(g.dtype() == DType::F32);
        CHECK(max(abs(g)).item() > 0);
        model.parameter(p).zero_grad();
      }
      model.to(Device::cpu());
    }
    // the op alone: a float32 bias with bf16 q, k, v under autocast is cast with them
    Generator g(11);
    const Tensor q = Tensor::randn({1, 2, 3, 4}, 0, 1, DType::F32, Device::cpu(), &g).to(DType::BF16);
    Tensor bias = Tensor::randn({1, 2, 3, 3}, 0, 1, DType::F32, Device::cpu(), &g);
    bias.requires_grad_();
    {
      AutocastBF16 autocast;
      AttentionOptions o;
      o.bias = bias;
      sum(attention(q, q, q, Tensor(), o).to(DType::F32)).backward();
    }
    REQUIRE(bias.grad().defined());
    CHECK(bias.grad().dtype() == DType::F32);
  }

  TEST_CASE("t5 takes sequences past max_positions and past max_distance; bf16 and float64 casts") {
    nn::TransformerConfig c = tiny_t5("pre_ln", true);
    c.max_positions = 8;
    manual_seed(2);
    nn::Transformer lm(c);
    lm.to(DType::F64);
    lm.eval();
    const auto [in, all] = check_runs_past_max_positions(lm);  // (on a GPU: the bucket table moved with the model)
    NoGradGuard no_grad;
    lm.to(DType::BF16);
    CHECK(lm.parameter("dec.relative_bias.weight").dtype() == DType::BF16);
    CHECK(lm.decoder->relative_bias->bucket_of.dtype() == DType::I64);
    CHECK(max_abs_diff(lm.forward(in).to(DType::F64), all) < 0.3);
  }
}
