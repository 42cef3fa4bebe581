// Position encodings: the rotary op (RoPE), RotaryEmbedding's tables, and nn::Transformer with cfg.positions learned
// and rope (and alibi in the LM cases; its own: test_alibi.cpp), decoder-only and encoder-decoder. Their numbers
// against PyTorch: test_reference.cpp (the op) and test_transformer_reference.cpp
// (tests/reference/positions_*.safetensors, whole models); CPU against CUDA: the
// op sweep (test_cuda_sweep.cpp) and test_decoder_only.cpp's GPU case.
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "analysis/graph.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "positions_test_util.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// The rotary op by its definition, with the recorded elementwise ops: [x1 c − x2 s, x2 c + x1 s]
Tensor rotary_by_hand(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  const int64_t h = x.size(3) / 2;
  const Tensor x1 = x.slice(3, 0, h), x2 = x.slice(3, h, 2 * h), c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  return concat({sub(mul(x1, c), mul(x2, s)), add(mul(x2, c), mul(x1, s))}, 3);
}

// The tests' tiny model (d 16, 2 heads: d_head 8) as a decoder-only model of `layers` layers.
nn::TransformerConfig tiny_lm(const std::string& topology, nn::PositionEncoding positions, int64_t layers = 2) {
  nn::TransformerConfig c = tiny_transformer(topology);
  c.enc_layers = 0;
  c.dec_layers = layers;
  c.positions = positions;
  if (topology == "mix_ln") c.mixln_post_layers = 1;
  return c;
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector<int64_t>(v, {B, T}); }

bool has_parameter(const nn::Module& m, const std::string& name) {
  for (const auto& named : m.named_parameters())
    if (named.first == name) return true;
  return false;
}

}  // namespace

TEST_SUITE("positions") {
  TEST_CASE("rotary: its definition, on views; the inverse rotation; norms of pairs kept; output laid out like x") {
    const auto [c, s] = random_angles(2, 5, 4, 1);
    const Tensor x = leaf({2, 3, 5, 8}, 2);
    CHECK(max_abs_diff(rotary(x, c, s), rotary_by_hand(x, c, s)) < 1e-15);
    const Tensor view = leaf({2, 5, 3, 8}, 3).transpose(1, 2);  // a projection's heads
    const Tensor y = rotary(view, c, s);
    CHECK(max_abs_diff(y, rotary_by_hand(view, c, s)) < 1e-15);
    CHECK(y.strides() == view.strides());  // the attention op reads it without a copy, as it reads q
    CHECK(max_abs_diff(rotary(y, c, neg(s)), view) < 1e-14);
    const auto [c1, s1] = random_angles(1, 5, 4, 4);  // [1, T, h]: every batch entry
    CHECK(max_abs_diff(rotary(x, c1, s1), rotary_by_hand(x, c1.expand({2, 5, 4}), s1.expand({2, 5, 4}))) < 1e-15);
    // each pair keeps its length: x_i² + x_{i+h}² is unchanged
    const Tensor sq = mul(x, x), ysq = mul(rotary(x, c, s), rotary(x, c, s));
    CHECK(max_abs_diff(add(sq.slice(3, 0, 4), sq.slice(3, 4, 8)), add(ysq.slice(3, 0, 4), ysq.slice(3, 4, 8))) <
          1e-13);
    // float32, and bf16 x with float32 angles (autocast's q and k)
    const Tensor x32 = x.detach().to(DType::F32);
    CHECK(max_abs_diff(rotary(x32, c.to(DType::F32), s.to(DType::F32)), rotary(x, c, s)) < 1e-5);
    const Tensor y16 = rotary(x32.to(DType::BF16), c.to(DType::F32), s.to(DType::F32));
    CHECK(y16.dtype() == DType::BF16);
    CHECK(max_abs_diff(y16, rotary(x, c, s)) < 0.05);
  }

  TEST_CASE("rotary refuses what it cannot do, naming the op, the shapes and what it expected") {
    const auto [c, s] = random_angles(2, 5, 4, 1);
    const Tensor x = leaf({2, 3, 5, 8}, 2);
    CHECK_THROWS_WITH_ALL(rotary(leaf({2, 3, 5, 7}, 2), c, s), "rotary", "dh even", "float64[2,3,5,7]");
    CHECK_THROWS_WITH_ALL(rotary(leaf({2, 5, 8}, 2), c, s), "rotary", "[B, H, T, dh]");
    CHECK_THROWS_WITH_ALL(rotary(x, c.slice(1, 0, 4), s.slice(1, 0, 4)), "rotary", "[B or 1, T, dh/2]",
                          "cos float64[2,4,4]");
    CHECK_THROWS_WITH_ALL(rotary(x, c.to(DType::F32), s.to(DType::F32)), "rotary", "in float64", "float32[2,5,4]");
    CHECK_THROWS_WITH_ALL(rotary(x, leaf({2, 5, 4}, 5), s), "rotary", "cos and sin are constants",
                          "cos requiring grad");
    CHECK_THROWS_WITH_ALL(rotary(x, Tensor(), s), "rotary", "cos");
  }

  TEST_CASE("RotaryEmbedding: angle 0 at the first token; q·k depends on the positions only through their distance") {
    nn::RotaryEmbedding rope(8, 64, 1, 10000);
    CHECK(rope.named_parameters().empty());
    // make_positions' ids of a row of 12 real tokens: pad + 1 + n
    std::vector<int64_t> pos(12);
    for (int64_t n = 0; n < 12; n++) pos[n] = 2 + n;
    const nn::RotaryAngles a = rope.forward(ids(pos, 1, 12));
    CHECK(a.cos.shape() == Shape{1, 12, 4});
    CHECK(a.cos.slice(1, 0, 1).to_vector<float>() == std::vector<float>(4, 1.0f));
    CHECK(a.sin.slice(1, 0, 1).to_vector<float>() == std::vector<float>(4, 0.0f));
    // token n, pair i: θ = n · 10000^(-2i/8)
    CHECK(a.sin.to_vector<double>()[5 * 4 + 1] == doctest::Approx(std::sin(5 * std::pow(10000.0, -0.25))));
    // one q and one k at every position: the logit of q at m and k at j equals that of q at m + 3 and k at j + 3
    Generator g(8);
    const Tensor q = Tensor::randn({1, 1, 1, 8}, 0, 1, DType::F32, Device::cpu(), &g).expand({1, 1, 12, 8});
    const Tensor k = Tensor::randn({1, 1, 1, 8}, 0, 1, DType::F32, Device::cpu(), &g).expand({1, 1, 12, 8});
    const Tensor logits = matmul(rotary(q, a.cos, a.sin), rotary(k, a.cos, a.sin), false, true);  // [1,1,12,12]
    const std::vector<double> l = logits.to_vector<double>();
    for (int64_t m = 0; m < 9; m++)
      for (int64_t j = 0; j < 9; j++) {
        INFO("m " << m << ", j " << j);
        CHECK(std::abs(l[m * 12 + j] - l[(m + 3) * 12 + j + 3]) < 1e-5);
      }
    CHECK(std::abs(l[0 * 12 + 5] - l[0 * 12 + 6]) > 1e-3);  // and it does depend on the distance
    CHECK_THROWS_WITH_ALL(nn::RotaryEmbedding(7, 64, 1, 10000), "RotaryEmbedding", "even d_head", "7");
  }

  TEST_CASE("Transformer positions: the parameters, buffers and kind of sinusoidal, learned and rope") {
    using P = nn::PositionEncoding;
    manual_seed(1);
    nn::Transformer sin_lm(tiny_lm("pre_ln", P::Sinusoidal)), learned(tiny_lm("pre_ln", P::Learned)),
        rope(tiny_lm("pre_ln", P::Rope));
    CHECK(sin_lm.positions);
    CHECK(!sin_lm.learned_positions);
    CHECK(sin_lm.kind().find("positions") == std::string::npos);  // as checkpoints written before the option
    CHECK(learned.learned_positions);
    CHECK(!learned.positions);
    CHECK(has_parameter(learned, "embed_positions.weight"));
    CHECK(learned.learned_positions->weight.shape() == Shape{64 + 1 + 1, 16});  // max_positions + pad + 1
    CHECK(learned.learned_positions->weight.select(0, 1).to_vector<float>() == std::vector<float>(16, 0.0f));
    CHECK(learned.kind().find(", positions learned)") != std::string::npos);
    CHECK(rope.rotary);
    CHECK(rope.num_parameters() == sin_lm.num_parameters());
    CHECK(rope.kind().find(", positions rope theta 10000)") != std::string::npos);
    nn::TransformerConfig c = tiny_lm("pre_ln", P::Rope);
    c.rope_theta = 500000;
    CHECK(nn::Transformer(c).kind().find("rope theta 5e+05)") != std::string::npos);  // shortest round trip
    nn::Transformer nope(tiny_lm("pre_ln", P::None));
    CHECK((!nope.positions && !nope.learned_positions && !nope.rotary));
    CHECK(nope.num_parameters() == sin_lm.num_parameters());
    CHECK(nope.named_buffers().empty());
    CHECK(nope.kind().find(", positions none)") != std::string::npos);

    // a checkpoint of one encoding is refused by a model of another with the same parameters
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("skipgrad_positions_" + std::to_string(::getpid()) + ".safetensors")).string();
    nn::save_checkpoint(path, rope);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, sin_lm), "load_checkpoint", "positions rope theta 10000");
    nn::Transformer rope_too(tiny_lm("pre_ln", P::Rope));
    CHECK_NOTHROW(nn::load_checkpoint(path, rope_too));
    std::filesystem::remove(path);
  }

  TEST_CASE("a file whose positions table, rotary tables or ALiBi slopes differ from the settings' is refused") {
    // These buffers follow from the settings (register_constant_buffer): an edited value would change what the
    // model computes without a word. Both loaders compare them, in float32, before anything is copied.
    using P = nn::PositionEncoding;
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("skipgrad_constant_buffers_" + std::to_string(::getpid()) + ".safetensors")).string();
    for (auto [positions, buffers] : {std::pair<P, size_t>{P::Sinusoidal, 1}, {P::Rope, 2}, {P::Alibi, 1}}) {
      const std::string encoding = nn::position_encoding_name(positions);
      CAPTURE(encoding);
      manual_seed(2);
      nn::Transformer saved(tiny_lm("pre_ln", positions));
      manual_seed(3);
      nn::Transformer model(tiny_lm("pre_ln", positions));
      const std::vector<float> before = model.parameter("embed.weight").to_vector<float>();
      CHECK(model.named_buffers().size() == buffers);
      for (const auto& buffer : model.named_buffers()) {
        for (float edited : {0.5f, NAN}) {
          CAPTURE(buffer.first);
          CAPTURE(edited);
          nn::NamedTensors tensors = nn::state_dict(saved);
          for (auto& [name, t] : tensors)
            if (name == buffer.first) {
              t = t.clone();
              t.data<float>()[t.numel() - 1] += edited;  // the last element (ALiBi: the last head's slope)
            }
          nn::save_safetensors(path, tensors);
          const std::string where = "buffer '" + buffer.first + "' holds ";
          CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, model), "load_checkpoint", where.c_str(),
                                "where the module's settings give", "edited or saved with other settings");
          CHECK_THROWS_WITH_ALL(nn::load_state_dict(model, tensors), "load_state_dict", where.c_str());
          CHECK(model.parameter("embed.weight").to_vector<float>() == before);  // nothing copied
        }
      }
      // the file as saved loads, and so does a float64 model's into a float64 model (the tables compare in float32)
      nn::save_checkpoint(path, saved);
      nn::load_checkpoint(path, model);
      CHECK(model.parameter("embed.weight").to_vector<float>() == saved.parameter("embed.weight").to_vector<float>());
      saved.to(DType::F64);
      model.to(DType::F64);
      nn::save_checkpoint(path, saved);
      CHECK_NOTHROW(nn::load_checkpoint(path, model));
    }
    std::filesystem::remove(path);
  }

  TEST_CASE("a rope model cast to bf16 keeps its angle tables float32 and runs; float64 casts them") {
    manual_seed(2);
    nn::Transformer lm(tiny_lm("pre_ln", nn::PositionEncoding::Rope));
    const Tensor in = ids({2, 4, 5, 6, 7}, 1, 5);
    const Tensor f32 = lm.forward(in);
    lm.to(DType::BF16);
    CHECK(lm.rotary->cos_table.dtype() == DType::F32);
    CHECK(lm.parameter("embed.weight").dtype() == DType::BF16);
    const Tensor b16 = lm.forward(in);
    CHECK(b16.dtype() == DType::BF16);
    CHECK(max_abs_diff(b16, f32) < 0.5);  // (bf16 weights and activations: a rough agreement)
    lm.to(DType::F64);
    CHECK(lm.rotary->sin_table.dtype() == DType::F64);
    CHECK(lm.forward(in).dtype() == DType::F64);
  }

  TEST_CASE("positions none: an encoder sees a bag of tokens; a causal LM tells orders apart from its second layer") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    c.positions = nn::PositionEncoding::None;
    manual_seed(9);
    nn::Transformer model(c);
    model.to(DType::F64);
    model.eval();
    NoGradGuard no_grad;
    // the encoder's output for a permuted source is the permuted output: no position tells the tokens apart
    const Tensor a = model.encode(ids({4, 5, 6, 7}, 1, 4)), b = model.encode(ids({6, 4, 7, 5}, 1, 4));
    const int64_t where_in_b[] = {1, 3, 0, 2};  // token i of a's source sits at where_in_b[i] in b's
    for (int64_t i = 0; i < 4; i++)
      CHECK(max_abs_diff(a.slice(1, i, i + 1), b.slice(1, where_in_b[i], where_in_b[i] + 1)) < 1e-12);
    // so the decoder's logits do not depend on the source's order at all
    const Tensor tgt = ids({2, 8, 9}, 1, 3);
    CHECK(max_abs_diff(model.forward(ids({4, 5, 6, 7}, 1, 4), tgt), model.forward(ids({6, 4, 7, 5}, 1, 4), tgt)) <
          1e-12);
    // A causal decoder-only model: in one layer the last position sees only the set of the tokens before it; a
    // second layer reads the earlier positions' outputs, which differ with the order (position t saw t + 1
    // tokens), so there the order shows.
    for (int64_t layers : {1, 2}) {
      INFO(layers << " layers");
      nn::Transformer lm(tiny_lm("pre_ln", nn::PositionEncoding::None, layers));
      lm.to(DType::F64);
      lm.eval();
      const Tensor x = lm.forward(ids({2, 4, 5, 6}, 1, 4)), y = lm.forward(ids({2, 5, 4, 6}, 1, 4));
      const double last = max_abs_diff(x.slice(1, 3, 4), y.slice(1, 3, 4));
      if (layers == 1) CHECK(last < 1e-12);
      else CHECK(last > 1e-4);
    }
  }

  TEST_CASE("forward_cached refuses a bad mask or angles before it changes the cache") {
    nn::AttentionConfig ac;
    ac.d_model = 16;
    ac.heads = 2;
    manual_seed(3);
    nn::MultiHeadAttention mha(ac);
    NoGradGuard no_grad;
    Generator g(3);
    const Tensor x = Tensor::randn({2, 3, 16}, 0, 1, DType::F32, Device::cpu(), &g);
    const Tensor step = Tensor::randn({2, 1, 16}, 0, 1, DType::F32, Device::cpu(), &g);
    nn::KVCache cache;
    mha.forward_cached(x, cache, x);
    REQUIRE(cache.length() == 3);
    CHECK_THROWS_WITH_ALL(mha.forward_cached(step, cache, step, Tensor::zeros({2, 3}, DType::I64)),
                          "key padding mask must be [2,4]");
    CHECK(cache.length() == 3);
    const auto [c, s] = random_angles(2, 1, 4, 5);
    CHECK_THROWS_WITH_ALL(mha.forward_cached(step, cache, Tensor(), Tensor(), false,
                                             {c.to(DType::F32), s.to(DType::F32)}),
                          "rotary angles are for self-attention steps");
    CHECK(cache.length() == 3);
    const nn::RotaryAngles angles{c.to(DType::F32), s.to(DType::F32)};
    mha.forward_cached(step, cache, step, Tensor::zeros({2, 4}, DType::I64), true, angles);
    CHECK(cache.length() == 4);
  }

  TEST_CASE("TransformerConfig refuses positions settings it cannot honour") {
    nn::TransformerConfig c = tiny_lm("pre_ln", nn::PositionEncoding::Rope);
    c.d_model = 18;
    c.heads = 2;  // d_head 9
    CHECK_THROWS_WITH_ALL(c.validate(), "TransformerConfig", "d_model / heads = 9 must be even");
    c = tiny_lm("pre_ln", nn::PositionEncoding::Sinusoidal);
    c.rope_theta = 500000;
    CHECK_THROWS_WITH_ALL(c.validate(), "rope_theta 500000 is for positions rope");
    c = tiny_lm("pre_ln", nn::PositionEncoding::Rope);
    c.rope_theta = 1;
    CHECK_THROWS_WITH_ALL(c.validate(), "rope_theta must be finite and > 1");
    CHECK_THROWS_WITH_ALL(nn::parse_position_encoding("xpos"), "unknown position encoding 'xpos'",
                          "sinusoidal, learned, rope, alibi, t5, none");
    c = tiny_lm("pre_ln", nn::PositionEncoding::Learned);
    c.max_positions = int64_t(1) << 40;
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "Transformer", "learned table", "too large");
  }

  TEST_CASE("decoder-only LMs with learned, rope and alibi positions: causal, pad-safe, order-sensitive") {
    using P = nn::PositionEncoding;
    for (P p : {P::Learned, P::Rope, P::Alibi})
      for (const char* topo : {"pre_ln", "post_ln", "hybrid_norm", "resi_dual"}) {
        INFO(nn::position_encoding_name(p) << " " << topo);
        manual_seed(4);
        nn::Transformer lm(tiny_lm(topo, p, 3));
        lm.to(DType::F64);
        Tensor in = ids({2, 4, 5, 6, 7, 2, 8, 9, 1, 1}, 2, 5), out = ids({4, 5, 6, 7, 2, 8, 9, 2, 1, 1}, 2, 5);
        Tensor loss = nn::label_smoothed_nll(lm.forward(in), out, 1, 0.1).loss;
        lm.zero_grad();
        loss.backward();
        for (const auto& named : lm.named_parameters()) {  // not a structured binding: clang 14 cannot capture it
          INFO(named.first);
          CHECK(named.second.grad().defined());
        }
        lm.eval();
        NoGradGuard no_grad;
        Tensor a = lm.forward(ids({2, 4, 5, 6, 7}, 1, 5)), b = lm.forward(ids({2, 4, 5, 9, 7}, 1, 5));
        CHECK(max_abs_diff(a.slice(1, 0, 3), b.slice(1, 0, 3)) < 1e-12);  // position t sees tokens 0..t only
        CHECK(max_abs_diff(a.slice(1, 3, 5), b.slice(1, 3, 5)) > 1e-4);
        Tensor padded = lm.forward(ids({2, 4, 1, 5, 6, 7}, 1, 6));  // a pad has no position and is no key
        CHECK(max_abs_diff(padded.slice(1, 3, 6), a.slice(1, 2, 5)) < 1e-12);
        // the order matters: the same tokens in another order give other logits at the last position
        Tensor swapped = lm.forward(ids({2, 5, 4, 6, 7}, 1, 5));
        CHECK(max_abs_diff(swapped.slice(1, 4, 5), a.slice(1, 4, 5)) > 1e-4);
        // (decode_step against forward, for every topology and encoding: test_decoder_only.cpp)
      }
  }

  TEST_CASE("encoder-decoder with rope: decode_step equals decode; cross-attention is not rotated") {
    nn::TransformerConfig c = tiny_transformer("pre_ln");
    c.positions = nn::PositionEncoding::Rope;
    manual_seed(6);
    nn::Transformer model(c);
    model.to(DType::F64);
    const Tensor src = ids({4, 5, 6, 2, 7, 8, 2, 1}, 2, 4);
    check_decode_step_equals_decode(model, src, -1);
    // the graph: q and k rotated in every self-attention, nothing added to the embeddings, no rotation in CA
    const Graph g = training_graph(model, src);
    int rotations = 0;
    for (const auto& n : g.nodes) {
      CHECK(n.name.find("add_positions") == std::string::npos);
      CHECK(!(n.op == "rotary" && n.name.find("cross_attn") != std::string::npos));
      rotations += n.op == "rotary";
    }
    CHECK(rotations == 2 * (2 + 2));  // q and k of the 2 + 2 self-attentions
    bool named = false;
    for (const auto& n : g.nodes) named = named || n.name == "dec.1.self_attn.k_rope.rotary";
    CHECK(named);
  }

  TEST_CASE("partial rotary (rope_dims): a table of its dims, the rest of each head passes; decode_step = forward") {
    nn::TransformerConfig c = tiny_lm("pre_ln", nn::PositionEncoding::Rope, 2);  // d_head 8
    c.rope_dims = 4;
    manual_seed(9);
    nn::Transformer lm(c);
    CHECK(lm.rotary->cos_table.size(1) == 2);  // angles for 4 dims: 2 pairs
    CHECK(lm.kind().find(", positions rope theta 10000 dims 4)") != std::string::npos);
    nn::TransformerConfig all_dims = c;  // rope_dims = d_head is the full rotation, and reads as it
    all_dims.rope_dims = 8;
    CHECK(nn::Transformer(all_dims).kind().find(", positions rope theta 10000)") != std::string::npos);
    lm.to(DType::F64);
    // the graph: q's first 4 dims rotated, then its other 4 concatenated after them
    Tensor in = ids({2, 4, 5, 6, 7, 2, 8, 9, 1, 1}, 2, 5);
    current_tape().clear();
    Tensor logits = lm.forward(in);
    GraphOptions go;
    go.value_norms = false;
    const Graph g = Graph::from_tape(current_tape(), go);
    bool rotated = false, concatenated = false;
    for (const auto& n : g.nodes) {
      rotated = rotated || n.name == "dec.0.self_attn.q_rope.rotary";
      concatenated = concatenated || (n.name == "dec.0.self_attn.q_rope.concat" && n.op == "concat");
    }
    CHECK(rotated);
    CHECK(concatenated);
    current_tape().clear();
    // the model differs from a full rotation's with the same weights
    nn::TransformerConfig full = c;
    full.rope_dims = 0;
    nn::Transformer whole(full);
    whole.to(DType::F64);
    NoGradGuard no_grad;
    // the parameters only: the angle tables differ in width
    for (const auto& named : lm.named_parameters()) whole.parameter(named.first).copy_(named.second);
    lm.eval();
    whole.eval();
    CHECK(max_abs_diff(lm.forward(in), whole.forward(in)) > 1e-4);
    // one step at a time through the cache equals the full forward
    nn::DecoderState st = lm.start_decoding(2);
    const Tensor all = lm.forward(in);
    const std::vector<int64_t> v = in.to_vector<int64_t>();
    for (int64_t t = 0; t < 5; t++) {
      const Tensor step = lm.decode_step(st, Tensor::from_vector<int64_t>({v[t], v[5 + t]}, {2}));
      INFO("step " << t);
      CHECK(max_abs_diff(step, all.slice(1, t, t + 1).reshape({2, 13})) < 1e-12);
    }
    // refusals: odd, wider than a head, or for another encoding
    for (int64_t bad : {3, 10, -2}) {
      c.rope_dims = bad;
      CHECK_THROWS_WITH_ALL(c.validate(), "rope_dims must be 0 (all of d_head) or even and in [2, d_head = 8]");
    }
    c = tiny_lm("pre_ln", nn::PositionEncoding::Alibi);
    c.rope_dims = 4;
    CHECK_THROWS_WITH_ALL(c.validate(), "rope_dims 4 is for positions rope");
    c = tiny_lm("pre_ln", nn::PositionEncoding::Rope);
    c.d_model = 18;  // d_head 9: odd, but 4 of its dims can rotate
    c.rope_dims = 4;
    c.validate();
  }

  TEST_CASE("float64 gradcheck of whole LMs with learned positions, with rope, with alibi and with t5") {
    using P = nn::PositionEncoding;
    for (P p : {P::Learned, P::Rope, P::Alibi, P::T5}) {
      INFO(nn::position_encoding_name(p));
      manual_seed(7);
      nn::TransformerConfig c = tiny_lm("hybrid_norm", p, 2);  // per-head norms, then the rotation
      c.d_model = 8;
      c.d_ff = 8;
      nn::Transformer lm(c);
      lm.to(DType::F64);
      Tensor in = ids({2, 5, 6, 2, 7, 1}, 2, 3), out = ids({5, 6, 2, 7, 2, 1}, 2, 3);
      std::vector<Tensor> params = {lm.parameter("dec.0.self_attn.q_proj.weight"),
                                    lm.parameter("dec.1.self_attn.k_proj.weight"), lm.parameter("embed.weight")};
      if (p == nn::PositionEncoding::Learned) params.push_back(lm.parameter("embed_positions.weight"));
      if (p == nn::PositionEncoding::T5) params.push_back(lm.parameter("dec.relative_bias.weight"));
      auto res = gradcheck(
          [&](const std::vector<Tensor>&) {
            return cross_entropy(lm.forward(in).reshape({-1, 13}), out.reshape({-1}), 1);
          },
          params, 1e-6, 1e-6, 1e-4);
      CHECK_MESSAGE(res.ok, res.message);
    }
  }
}
