// ALiBi (attention with linear biases, Press et al. 2022): the slopes, the attention op's bias against its
// definition (forward and gradients), its refusals and the backend's, MultiHeadAttention's cache and analysis hook,
// and nn::Transformer with cfg.positions alibi (encoder-decoder: decode_step, beam reorder, the graph; casts).
// Elsewhere: whole models against PyTorch in test_transformer_reference.cpp (positions_*alibi*); decoder-only LMs
// (causal, pad-safe, gradcheck) in test_positions.cpp; decode_step and prefill in test_decoder_only.cpp, whose GPU
// case and the op sweep (the grad cases below) compare the CUDA kernel with the CPU's.
#include <cmath>
#include <limits>

#include "analysis/graph.h"
#include "nn/generate.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "positions_test_util.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector<int64_t>(v, {B, T}); }

// softmax(q kᵀ/√dh − m_h |p_i − p_j|, masked) v by composition of plain recorded ops, in q's dtype
Tensor alibi_by_hand(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad, bool causal,
                     const Tensor& slopes, const Tensor& qpos, const Tensor& kpos) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2);
  const DType dt = q.dtype();
  Tensor s = mul(matmul(q, k, false, true), 1.0 / std::sqrt((double)q.size(3)));
  const Tensor distance = abs(sub(qpos.to(dt).reshape({B, 1, Tq, 1}), kpos.to(dt).reshape({B, 1, 1, Tk})));
  s = sub(s, mul(slopes.to(dt).reshape({1, H, 1, 1}), distance));
  if (causal) {  // key j hidden from query i when j > i + Tk - Tq
    const Tensor future = gt(Tensor::arange(0, (double)Tk, 1, DType::F64).reshape({1, Tk}),
                             Tensor::arange((double)(Tk - Tq), (double)Tk, 1, DType::F64).reshape({Tq, 1}));
    s = masked_fill(s, future, -INFINITY);
  }
  if (pad.defined()) s = masked_fill(s, pad.reshape({B, 1, 1, Tk}), -INFINITY);
  return matmul(softmax(s, 3), v);
}

AttentionOptions alibi_options(const Tensor& slopes, const Tensor& qpos, const Tensor& kpos, bool causal) {
  AttentionOptions o;
  o.causal = causal;
  o.alibi_slopes = slopes;
  o.query_positions = qpos;
  o.key_positions = kpos;
  return o;
}

// d(loss)/d(each leaf), taken and dropped (a later backward starts from none)
std::vector<Tensor> grads_of(const Tensor& loss, std::vector<Tensor> leaves) {
  loss.backward();
  std::vector<Tensor> out;
  for (Tensor& l : leaves) {
    out.push_back(l.grad());
    l.zero_grad();
  }
  return out;
}

Tensor slopes_of(int64_t heads, DType dtype = DType::F64) {
  return Tensor::from_vector<double>(nn::alibi_slopes(heads), {heads}).to(dtype);
}

}  // namespace

TEST_SUITE("alibi") {
  TEST_CASE("alibi_slopes: the paper's geometric slopes, and its rule for heads that are not a power of two") {
    std::vector<double> eight;
    for (int h = 1; h <= 8; h++) eight.push_back(std::exp2(-h));
    CHECK(nn::alibi_slopes(8) == eight);
    CHECK(nn::alibi_slopes(1) == std::vector<double>{std::exp2(-8)});
    CHECK(nn::alibi_slopes(2) == std::vector<double>{std::exp2(-4), std::exp2(-8)});
    // 6: the 4 slopes of 4 heads, then every other slope of 8 heads (2^-1, 2^-3)
    CHECK(nn::alibi_slopes(6) == std::vector<double>{0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125});
    const std::vector<double> twelve = nn::alibi_slopes(12);
    REQUIRE(twelve.size() == 12);
    CHECK(twelve[8] == doctest::Approx(std::exp2(-0.5)));
    CHECK(twelve[11] == doctest::Approx(std::exp2(-3.5)));
    CHECK_THROWS_WITH_ALL(nn::alibi_slopes(0), "alibi_slopes", "heads must be > 0");
  }

  TEST_CASE("zero q and k: head h weights key j by 2^(-m_h |i - j|) exactly, the paper's bias") {
    const int64_t H = 4, T = 5;
    std::vector<double> identity(T * T, 0.0);
    for (int64_t j = 0; j < T; j++) identity[j * T + j] = 1;
    const Tensor q = Tensor::zeros({1, H, T, T}, DType::F64);
    const Tensor v = Tensor::from_vector(identity, {1, 1, T, T}).expand({1, H, T, T});
    const Tensor pos = ids({2, 3, 4, 5, 6}, 1, T);
    for (bool causal : {false, true}) {
      const std::vector<double> p = attention(q, q, v, Tensor(), alibi_options(slopes_of(H), pos, pos, causal))
                                        .to_vector<double>();  // row (h, i) = query i's probabilities over keys
      const std::vector<double> m = nn::alibi_slopes(H);
      for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < T; i++) {
          double total = 0;
          for (int64_t j = 0; j < T; j++) total += causal && j > i ? 0 : std::exp(-m[h] * std::abs(i - j));
          for (int64_t j = 0; j < T; j++) {
            INFO("causal " << causal << ", head " << h << ", query " << i << ", key " << j);
            const double want = causal && j > i ? 0 : std::exp(-m[h] * std::abs(i - j)) / total;
            CHECK(p[(h * T + i) * T + j] == doctest::Approx(want).epsilon(1e-14));
          }
        }
    }
  }

  TEST_CASE("attention with ALiBi equals its definition: masks, Tq < Tk, views, float32, bf16; gradients too") {
    const Tensor pad = ids({0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 2, 6);
    const Tensor kpos = ids({2, 3, 0, 4, 5, 0, 2, 3, 4, 5, 6, 7}, 2, 6);  // pads sit at the pad id, 0
    for (bool causal : {false, true})
      for (int64_t Tq : {6, 2}) {
        INFO("causal " << causal << ", Tq " << Tq);
        const Tensor q = leaf({2, 3, Tq, 4}, 1), k = leaf({2, 3, 6, 4}, 2), v = leaf({2, 3, 6, 4}, 3);
        const Tensor qpos = kpos.slice(1, 6 - Tq, 6);
        const Tensor slopes = slopes_of(3);
        const Tensor got = attention(q, k, v, pad, alibi_options(slopes, qpos, kpos, causal));
        const std::vector<Tensor> g_got = grads_of(sum(mul(got, got)), {q, k, v});  // (a backward clears the tape)
        const Tensor want = alibi_by_hand(q, k, v, pad, causal, slopes, qpos, kpos);
        CHECK(max_abs_diff(got, want) < 1e-14);
        // the gradients of q, k and v against the composition's
        const std::vector<Tensor> g_want = grads_of(sum(mul(want, want)), {q, k, v});
        for (int i = 0; i < 3; i++) CHECK(max_abs_diff(g_got[i], g_want[i]) < 1e-13);
        // float32 and bf16 (float32 slopes) against float64
        const Tensor q32 = q.detach().to(DType::F32), k32 = k.detach().to(DType::F32), v32 = v.detach().to(DType::F32);
        const AttentionOptions o32 = alibi_options(slopes.to(DType::F32), qpos, kpos, causal);
        CHECK(max_abs_diff(attention(q32, k32, v32, pad, o32), want) < 1e-5);
        const Tensor y16 = attention(q32.to(DType::BF16), k32.to(DType::BF16), v32.to(DType::BF16), pad, o32);
        CHECK(y16.dtype() == DType::BF16);
        CHECK(max_abs_diff(y16, want) < 0.05);
      }
    // heads read in place from a projection's [B, T, H, dh] buffer
    const Tensor qv = leaf({2, 6, 3, 4}, 4).transpose(1, 2), kv = leaf({2, 6, 3, 4}, 5).transpose(1, 2);
    const AttentionOptions o = alibi_options(slopes_of(3), kpos, kpos, true);
    CHECK(max_abs_diff(attention(qv, kv, kv, pad, o), alibi_by_hand(qv, kv, kv, pad, true, slopes_of(3), kpos, kpos)) <
          1e-14);
  }

  TEST_CASE("attention and the backend's softmax refuse ALiBi arguments that do not fit, naming what they expected") {
    const Tensor q = leaf({2, 3, 4, 4}, 1), k = leaf({2, 3, 5, 4}, 2);
    const Tensor qpos = ids({2, 3, 4, 5, 2, 3, 4, 5}, 2, 4), kpos = ids({2, 3, 4, 5, 6, 2, 3, 4, 5, 6}, 2, 5);
    auto run = [&](const Tensor& s, const Tensor& qp, const Tensor& kp) {
      return attention(q, k, k, Tensor(), alibi_options(s, qp, kp, false));
    };
    CHECK_THROWS_WITH_ALL(run(slopes_of(2), qpos, kpos), "attention", "alibi_slopes [H = 3] in float64",
                          "slopes float64[2]");
    CHECK_THROWS_WITH_ALL(run(slopes_of(3, DType::F32), qpos, kpos), "attention", "in float64", "float32[3]");
    CHECK_THROWS_WITH_ALL(run(slopes_of(3), kpos, kpos), "attention", "query_positions [B, Tq] = [2,4]",
                          "query positions int64[2,5]");
    CHECK_THROWS_WITH_ALL(run(slopes_of(3), qpos, qpos), "attention", "key_positions [B, Tk] = [2,5]");
    CHECK_THROWS_WITH_ALL(run(slopes_of(3), qpos.to(DType::F64), kpos), "attention", "int64 query_positions");
    CHECK_THROWS_WITH_ALL(run(slopes_of(3), Tensor(), kpos), "attention", "query positions undefined");
    CHECK_THROWS_WITH_ALL(run(leaf({3}, 9), qpos, kpos), "attention", "alibi_slopes are constants");
    // bf16 q takes float32 slopes
    CHECK_THROWS_WITH_ALL(attention(q.detach().to(DType::BF16), k.detach().to(DType::BF16),
                                    k.detach().to(DType::BF16), Tensor(), alibi_options(slopes_of(3), qpos, kpos, 0)),
                          "attention", "in float32");

    // the backend checks the same, for its own callers: x [B*H*Tq, Tk] rows
    Backend& cpu = backend_for(Device::cpu());
    Tensor x = Tensor::zeros({2, 3, 4, 5}, DType::F64), y = Tensor::empty({2, 3, 4, 5}, DType::F64);
    SoftmaxMask mask;
    mask.alibi_slopes = slopes_of(3);
    mask.query_positions = qpos;
    CHECK_THROWS_WITH_ALL(cpu.softmax(x, y, false, mask), "softmax", "ALiBi expects", "key positions undefined");
    mask.key_positions = qpos;
    CHECK_THROWS_WITH_ALL(cpu.softmax(x, y, false, mask), "softmax", "key_positions [B, Tk = 5]");
    mask.key_positions = kpos;
    mask.alibi_slopes = slopes_of(4);  // 2 * 4 * 4 = 32 rows, not x's 24
    CHECK_THROWS_WITH_ALL(cpu.softmax(x, y, false, mask), "softmax", "B*H*Tq = x's 24 rows");
    mask.alibi_slopes = slopes_of(3);
    cpu.softmax(x, y, false, mask);
    // zero scores: query 0 of batch 0 (position 2) over keys at 2..6, head 0's slope 2^-8/3
    const double m = nn::alibi_slopes(3)[0];
    double total = 0;
    for (int j = 0; j < 5; j++) total += std::exp(-m * j);
    CHECK(y.to_vector<double>()[1] == doctest::Approx(std::exp(-m) / total).epsilon(1e-14));
    // log_softmax takes the same bias
    Tensor ly = Tensor::empty({2, 3, 4, 5}, DType::F64);
    cpu.softmax(x, ly, true, mask);
    CHECK(max_abs_diff(exp(ly), y) < 1e-15);
  }

  TEST_CASE("MultiHeadAttention: ALiBi for self-attention only; a cached step keeps the keys' positions") {
    nn::AttentionConfig ac;
    ac.d_model = 16;
    ac.heads = 2;
    manual_seed(3);
    nn::MultiHeadAttention mha(ac);
    mha.to(DType::F64);
    NoGradGuard no_grad;
    Generator g(3);
    const Tensor x = Tensor::randn({2, 4, 16}, 0, 1, DType::F64, Device::cpu(), &g);
    const Tensor pos = ids({2, 3, 4, 5, 2, 3, 4, 5}, 2, 4);
    const nn::AlibiBias alibi{slopes_of(2), pos};
    const Tensor full = mha.forward(x, x, Tensor(), true, {}, alibi);
    CHECK(max_abs_diff(full, mha.forward(x, x, Tensor(), true)) > 1e-3);  // the bias changes the output
    CHECK_THROWS_WITH_ALL(mha.forward(x, x.clone(), Tensor(), false, {}, alibi), "ALiBi is for self-attention");
    CHECK_THROWS_WITH_ALL(mha.forward(x, x, Tensor(), true, {}, {slopes_of(2), pos.slice(1, 0, 3)}),
                          "ALiBi expects slopes [2] and int64 positions [2,4]", "positions int64[2,3]");
    CHECK_THROWS_WITH_ALL(mha.forward(x, x, Tensor(), true, {}, {slopes_of(3), pos}), "slopes float64[3]");
    // one position at a time through the cache equals the full forward
    nn::KVCache cache;
    for (int64_t t = 0; t < 4; t++) {
      const Tensor step = x.slice(1, t, t + 1).contiguous();
      const nn::AlibiBias at{slopes_of(2), pos.slice(1, t, t + 1)};
      const Tensor out = mha.forward_cached(step, cache, step, Tensor(), true, {}, at);
      INFO("step " << t);
      CHECK(max_abs_diff(out, full.slice(1, t, t + 1)) < 1e-13);
    }
    CHECK(cache.positions.shape() == Shape{2, 4});
    const Tensor step = x.slice(1, 0, 1).contiguous();
    CHECK_THROWS_WITH_ALL(mha.forward_cached(step, cache, step), "the cache was filled with ALiBi positions");
    CHECK(cache.length() == 4);
    nn::KVCache plain;
    mha.forward_cached(step, plain, step);
    const nn::AlibiBias first{slopes_of(2), pos.slice(1, 0, 1)};
    CHECK_THROWS_WITH_ALL(mha.forward_cached(step, plain, step, Tensor(), false, {}, first),
                          "the cache was filled without ALiBi positions");
    CHECK(plain.length() == 1);
  }

  TEST_CASE("the attention analysis: with ALiBi the entropy is the biased softmax's; max |q·k| is unchanged") {
    nn::AttentionConfig ac;
    ac.d_model = 8;
    ac.heads = 2;
    nn::MultiHeadAttention mha(ac);
    mha.to(DType::F64);
    NoGradGuard no_grad;
    mha.k_proj->weight.copy_(Tensor::zeros({8, 8}, DType::F64));  // every logit q·k = 0: softmax(-m_h |i - j|)
    mha.k_proj->bias.copy_(Tensor::zeros({8}, DType::F64));
    std::vector<nn::AttentionLogitRows> rows;
    mha.logit_rows = &rows;
    Generator g(5);
    const Tensor x = Tensor::randn({1, 4, 8}, 0, 1, DType::F64, Device::cpu(), &g);
    mha.forward(x, x, Tensor(), true, {}, {slopes_of(2), ids({2, 3, 4, 5}, 1, 4)});
    REQUIRE(rows.size() == 1);
    const std::vector<double> entropy = rows[0].entropy.to_vector<double>();
    const std::vector<double> max_abs = rows[0].max_abs.to_vector<double>();
    const std::vector<double> m = nn::alibi_slopes(2);
    for (int64_t h = 0; h < 2; h++)
      for (int64_t i = 0; i < 4; i++) {
        double total = 0, want = 0;
        for (int64_t j = 0; j <= i; j++) total += std::exp(-m[h] * (double)(i - j));
        for (int64_t j = 0; j <= i; j++) {
          const double p = std::exp(-m[h] * (double)(i - j)) / total;
          want -= p * std::log(p);
        }
        CHECK(entropy[h * 4 + i] == doctest::Approx(want).epsilon(1e-12));
        CHECK(max_abs[h * 4 + i] == 0);
      }
  }

  TEST_CASE("Transformer with alibi: no parameters, one slopes buffer, its kind; casts; a checkpoint is refused") {
    manual_seed(1);
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    nn::Transformer sinusoidal(c);
    c.positions = nn::PositionEncoding::Alibi;
    nn::Transformer model(c);
    CHECK(model.alibi);
    CHECK((!model.positions && !model.learned_positions && !model.rotary));
    CHECK(model.num_parameters() == sinusoidal.num_parameters());
    REQUIRE(model.named_buffers().size() == 1);
    CHECK(model.named_buffers()[0].first == "alibi.slopes");
    CHECK(model.alibi->slopes.to_vector<double>() == nn::alibi_slopes(2));
    CHECK(model.kind().find(", positions alibi)") != std::string::npos);
    const Tensor src = ids({4, 5, 6, 2, 7, 8, 2, 1}, 2, 4), tgt = ids({2, 9, 10, 11, 2, 3, 4, 1}, 2, 4);
    model.eval();
    NoGradGuard no_grad;
    const Tensor f32 = model.forward(src, tgt);
    model.to(DType::BF16);
    CHECK(model.alibi->slopes.dtype() == DType::F32);
    CHECK(max_abs_diff(model.forward(src, tgt), f32) < 0.3);
    model.to(DType::F64);
    CHECK(model.alibi->slopes.dtype() == DType::F64);
    CHECK(model.forward(src, tgt).dtype() == DType::F64);
  }

  TEST_CASE("ALiBi and none take sequences past max_positions (no table), on every device; a table's refuse them") {
    using P = nn::PositionEncoding;
    for (P p : {P::Alibi, P::None, P::Rope}) {
      INFO(nn::position_encoding_name(p));
      nn::TransformerConfig c = tiny_transformer("pre_ln");
      c.enc_layers = 0;
      c.max_positions = 8;
      c.positions = p;
      manual_seed(2);
      nn::Transformer lm(c);
      lm.to(DType::F64);
      lm.eval();
      NoGradGuard no_grad;
      std::vector<int64_t> v(12);
      for (int64_t t = 0; t < 12; t++) v[t] = 2 + t % 10;
      const Tensor in = ids(v, 1, 12);
      if (p == P::Rope) {
        CHECK(c.position_limit() == 8);
        CHECK_THROWS_WITH_ALL(lm.forward(in), "a sequence of 12 tokens exceeds max_positions 8");
        nn::GenerateOptions g;
        g.max_new_tokens = 8;
        CHECK_THROWS_WITH_ALL(nn::generate(lm, {{2, 3}}, g), "more than max_positions 8");
        continue;
      }
      CHECK(c.position_limit() == std::numeric_limits<int64_t>::max());
      check_runs_past_max_positions(lm);
    }
  }

  TEST_CASE("encoder-decoder with alibi: decode_step equals decode, after a beam reorder too; no bias in CA") {
    nn::TransformerConfig c = tiny_transformer("post_ln");
    c.positions = nn::PositionEncoding::Alibi;
    manual_seed(6);
    nn::Transformer model(c);
    model.to(DType::F64);
    const Tensor src = ids({4, 5, 6, 2, 7, 8, 2, 1}, 2, 4);
    check_decode_step_equals_decode(model, src, 2);  // a swap at step 2: the keys' positions move too
    // the graph: every self-attention's attention node has the bias, no cross-attention's does; nothing added
    const Graph g = training_graph(model, src);
    int biased = 0, plain = 0;
    for (const auto& n : g.nodes) {
      CHECK(n.name.find("add_positions") == std::string::npos);
      if (n.op != "attention") continue;
      bool alibi = false;
      for (const auto& param : n.params) alibi = alibi || (param.first == "alibi" && param.second == "true");
      CHECK(alibi == (n.name.find("self_attn") != std::string::npos));
      (alibi ? biased : plain)++;
    }
    CHECK(biased == 2 + 2);
    CHECK(plain == 2);
  }
}

REGISTER_GRAD_CASES {
  using V = std::vector<Tensor>;
  // the slopes and positions are constants, made on the inputs' device in their dtype (the CUDA sweep runs these)
  auto biased = [](bool causal, std::vector<int64_t> pad, std::vector<int64_t> kpos) {
    return [=](const V& x) {
      const Device d = x[0].device();
      const int64_t B = x[0].size(0), Tq = x[0].size(2), Tk = x[1].size(2);
      const Tensor kp = Tensor::from_vector<int64_t>(kpos, {B, Tk}, d);
      AttentionOptions o = alibi_options(slopes_of(x[0].size(1), x[0].dtype()).to(d), kp.slice(1, Tk - Tq, Tk), kp,
                                         causal);
      return attention(x[0], x[1], x[2], pad.empty() ? Tensor() : Tensor::from_vector<int64_t>(pad, {B, Tk}, d), o);
    };
  };
  return std::vector<GradCase>{
      {"attention", "ALiBi, encoder (symmetric), key padding",
       biased(false, {0, 0, 1, 0, 0, 0, 0, 1}, {2, 3, 0, 4, 2, 3, 4, 0}),
       {leaf({2, 2, 4, 3}, 61), leaf({2, 2, 4, 3}, 62), leaf({2, 2, 4, 3}, 63)}},
      {"attention", "ALiBi, causal, Tq < Tk", biased(true, {}, {2, 3, 4, 5, 3, 4, 5, 6}),
       {leaf({2, 2, 2, 3}, 64), leaf({2, 2, 4, 3}, 65), leaf({2, 2, 4, 3}, 66)}},
  };
}
