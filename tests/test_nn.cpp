// nn/: layers, attention, every registered topology and the encoder-decoder Transformer.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "nn/checkpoint.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// The tests' tiny model (test_util.h) with vocab 11, pad id 1: the parameter counts below are written for it.
nn::TransformerConfig tiny(const std::string& topology, nn::NormKind norm = nn::NormKind::LayerNorm) {
  return tiny_transformer(topology, /*vocab=*/11, norm);
}

Tensor ids(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector<int64_t>(v, {B, T}); }

// Sum of sizes in the model of norms over d (LN: 2d, RMS: d) etc., used to predict parameter counts.
int64_t expected_params(const std::string& topo, nn::NormKind norm) {
  const int64_t d = 16, ff = 32, V = 11, dh = 8;
  const int64_t N = norm == nn::NormKind::LayerNorm ? 2 * d : d;  // one norm over d
  const int64_t Nh = norm == nn::NormKind::LayerNorm ? 2 * dh : dh;  // one per-head norm
  const int64_t mha = 4 * (d * d + d), ffn = d * ff + ff + ff * d + d;
  const int64_t enc = mha + ffn, dec = 2 * mha + ffn, emb = V * d;
  // norms per encoder layer / decoder layer, final norms in total
  std::map<std::string, std::tuple<int64_t, int64_t, int64_t>> norms = {
      {"post_ln", {2, 3, 0}},     {"pre_ln", {2, 3, 2}},      {"resi_dual", {2, 3, 2}},
      {"deep_norm", {2, 3, 0}},   {"sandwich_ln", {4, 6, 2}}, {"peri_ln", {4, 6, 4}},
      {"mix_ln", {2, 3, 2}},      {"hybrid_norm", {1, 1, 2}}, {"hybrid_norm_star", {1, 1, 2}},
      {"res_post_norm", {2, 3, 2}}, {"rezero", {0, 0, 0}},    {"admin", {2, 3, 0}},
      {"b2t", {2, 3, 0}},         {"layer_scale", {2, 3, 2}}, {"sub_ln", {2, 3, 2}},
      {"normformer", {3, 4, 2}},  {"t_fixup", {0, 0, 0}}};
  auto [ne, nd, nf] = norms.at(topo);
  int64_t total = emb + 2 * (enc + ne * N) + 2 * (dec + nd * N) + nf * N;
  if (topo.rfind("hybrid_norm", 0) == 0) total += 2 * (3 * Nh) + 2 * (6 * Nh);  // q/k/v norms in every attention
  if (topo == "hybrid_norm_star") total += (1 + 2) * N;  // block 0: attention input norms
  if (topo == "rezero") total += 2 + 2;                  // one α per layer
  if (topo == "sub_ln") total += (2 + 2) * (N + (N / d) * ff);  // per layer: inner norms over d (SA) and ff (FFN)
  if (topo == "normformer") total += (2 + 2) * (2 + (N / d) * ff);  // per layer: 2 head scales, the mid-FFN norm
  if (topo == "admin" || topo == "layer_scale") total += 2 * (2 * d) + 2 * (3 * d);  // ω or λ of size d per sublayer
  return total;
}

double loss_of(nn::Transformer& m, const Tensor& src, const Tensor& tgt_in, const Tensor& tgt_out) {
  NoGradGuard ng;
  Tensor logits = m.forward(src, tgt_in);
  return cross_entropy(logits.reshape({-1, logits.size(-1)}), tgt_out.reshape({-1}), 1).item();
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("layers: Linear, Embedding, positions, norms") {
    manual_seed(3);
    nn::Linear lin(4, 3);
    CHECK(lin.num_parameters() == 15);
    const double bound = 0.5;  // 1/sqrt(4)
    for (double w : lin.weight.to_vector<double>()) CHECK(std::abs(w) <= bound);
    CHECK_THROWS_WITH_ALL(lin.forward(Tensor::zeros({2, 5})), "expected [..., 4]", "[2,5]");
    {  // ModuleList: children "0", "1", ...: parameter names and node scopes read "blk.1.weight", "blk.1.linear"
      nn::Module model("");
      auto blocks = model.register_module("blk", std::make_shared<nn::ModuleList<nn::Linear>>());
      for (int i = 0; i < 3; i++) blocks->push_back(std::make_shared<nn::Linear>(2, 2));
      CHECK(blocks->size() == 3);
      const auto named = model.named_parameters();
      REQUIRE(named.size() == 6);
      CHECK(named[2].first == "blk.1.weight");
      CHECK(named[5].first == "blk.2.bias");
      current_tape().clear();
      Tensor x = Tensor::ones({1, 2}).requires_grad_();
      {
        Scope s(blocks->name());
        for (const auto& b : *blocks) x = b->forward(x);
      }
      CHECK(x.node_name() == "blk.2.linear");
      current_tape().clear();
      CHECK_THROWS_WITH_ALL((*blocks)[3], "ModuleList", "index 3", "'blk'", "of 3");
    }
    {  // a child name used twice would give two parameters one full name: refused at registration
      nn::Module parent("blk");
      parent.register_module("fc", std::make_shared<nn::Linear>(2, 2));
      CHECK_THROWS_WITH_ALL(parent.register_module("fc", std::make_shared<nn::Linear>(2, 2)), "register_module",
                            "'fc' is registered twice in 'blk' (it is already a child module)");
      // nor may a parameter or buffer share a name with anything else, or hold a dot (torch refuses both)
      CHECK_THROWS_WITH_ALL(parent.register_parameter("fc", Tensor::ones({2})), "register_parameter",
                            "'fc' is registered twice in 'blk' (it is already a child module)");
      parent.register_parameter("x", Tensor::ones({2}));
      CHECK_THROWS_WITH_ALL(parent.register_buffer("x", Tensor::zeros({2})), "register_buffer",
                            "(it is already a parameter)");
      parent.register_buffer("b", Tensor::zeros({2}));
      CHECK_THROWS_WITH_ALL(parent.register_buffer("b", Tensor::zeros({3})), "(it is already a buffer)");
      CHECK_THROWS_WITH_ALL(parent.register_parameter("fc.bias", Tensor::ones({2})), "'fc.bias'", "without '.'");
      CHECK_THROWS_WITH_ALL(parent.register_parameter("", Tensor::ones({2})), "must be non-empty");
      CHECK_THROWS_WITH_ALL(parent.register_buffer("u", Tensor()), "register_buffer", "buffer 'u' is undefined");
      // an op's result would be detached, silently cutting its graph (torch refuses it too)
      Tensor base = Tensor::ones({2}).requires_grad_();
      CHECK_THROWS_WITH_ALL(parent.register_parameter("scaled", base * 2.0), "register_parameter", "'scaled'",
                            "result of a recorded op");
    }
    nn::Linear nob(4, 3, false);
    CHECK(!nob.bias.defined());

    nn::Embedding emb(7, 4, 1);
    auto w = emb.weight.to_vector<double>();
    for (int j = 0; j < 4; j++) CHECK(w[4 + j] == 0.0);  // padding row zeroed

    nn::SinusoidalPositions pos(6, 5, 1);
    // first real token sits at position pad+1 = 2: [sin(2 w_i), cos(2 w_i)], w = [1, 1e-2, 1e-4]
    Tensor p = pos.forward(ids({5, 1}, 1, 2));
    check_close(p, {std::sin(2.0), std::sin(2e-2), std::sin(2e-4), std::cos(2.0), std::cos(2e-2), std::cos(2e-4),
                    0, 0, 0, 0, 0, 0},
                1e-6);
    CHECK_THROWS_WITH_ALL(pos.forward(ids({2, 2, 2, 2, 2, 2}, 1, 6)), "exceeds max_positions 5");

    nn::LayerNorm ln(4);
    CHECK(ln.num_parameters() == 8);
    nn::RMSNorm rms(4);
    CHECK(rms.num_parameters() == 4);
    check_close(rms.forward(Tensor::from_vector<float>({2, 2, 2, 2}, {1, 4})), {1, 1, 1, 1}, 1e-5);
    CHECK(nn::make_norm(nn::NormKind::RMSNorm, 4, 1e-6)->num_parameters() == 4);
  }

  TEST_CASE("Sequential: modules and functions in order, numbered names and scopes, train/eval reach every step") {
    manual_seed(5);
    nn::Module model("");
    auto mlp = model.register_module("mlp", std::make_shared<nn::Sequential>());
    auto fc1 = mlp->push_back(std::make_shared<nn::Linear>(3, 4));
    mlp->push_back([](const Tensor& x) { return relu(x); });
    auto drop = mlp->push_back(std::make_shared<nn::Dropout>(0.5));
    auto fc2 = mlp->push_back(std::make_shared<nn::Linear>(4, 2));
    CHECK(mlp->size() == 4);
    const auto named = model.named_parameters();
    REQUIRE(named.size() == 4);
    CHECK(named[0].first == "mlp.0.weight");
    CHECK(named[3].first == "mlp.3.bias");
    model.eval();
    CHECK_FALSE(drop->is_training());
    current_tape().clear();
    Tensor x = Tensor::randn({5, 3}).requires_grad_();
    Tensor y = mlp->forward(x);
    check_close(y, fc2->forward(relu(fc1->forward(x))).to_vector<double>(), 0);
    CHECK(y.node_name() == "mlp.3.linear");
    CHECK(y.autograd_meta()->producer->inputs[0]->producer->name == "mlp.1.relu");  // (eval: no dropout node)
    current_tape().clear();
    nn::Sequential empty;
    CHECK(same_bits(empty.forward(x), x));
    CHECK_THROWS_WITH_ALL(mlp->push_back(nn::Sequential::Step()), "Sequential", "step 4", "empty function");
  }

  TEST_CASE("tie_parameter: one tensor in two modules, listed once, its gradient summing both uses") {
    manual_seed(6);
    nn::Module lm("");
    auto tok = lm.register_module("tok", std::make_shared<nn::Embedding>(10, 4));
    auto head = lm.register_module("head", std::make_shared<nn::Linear>(4, 10, false));
    head->weight = head->tie_parameter("weight", tok->weight);
    lm.name_parameters();
    const auto named = lm.named_parameters();
    REQUIRE(named.size() == 1);  // head.weight is tok.weight
    CHECK(named[0].first == "tok.weight");
    CHECK(lm.num_parameters() == 40);
    CHECK(lm.parameters().size() == 1);
    CHECK(&lm.parameter("head.weight").impl() == &tok->weight.impl());  // found by either name, as torch's
    CHECK(nn::state_dict(lm).size() == 2);  // as torch's state_dict: both names of the tied tensor
    nn::AdamW opt(lm.named_parameters());  // (two names for one tensor would be refused)
    REQUIRE(opt.params().size() == 1);
    const Tensor before = tok->weight.detach().clone();
    Tensor ids = Tensor::from_vector<int64_t>({1, 7, 7}, {3});
    Tensor targets = Tensor::from_vector<int64_t>({7, 2, 0}, {3});
    cross_entropy(head->forward(tok->forward(ids)), targets).backward();
    // the same loss with the two uses on separate copies: the tied gradient is their sum
    Tensor a = tok->weight.detach().clone().requires_grad_(), b = tok->weight.detach().clone().requires_grad_();
    cross_entropy(linear(embedding(a, ids), b), targets).backward();
    check_close(tok->weight.grad(), add(a.grad(), b.grad()).to_vector<double>(), 1e-6);
    opt.step();
    CHECK(&head->weight.impl() == &tok->weight.impl());
    CHECK(max(abs(sub(tok->weight, before)), {0, 1}).item() > 0);  // one step moved the shared tensor
    lm.to(DType::F64);  // one tensor: cast once, still shared
    CHECK(head->weight.dtype() == DType::F64);
    CHECK(&head->weight.impl() == &tok->weight.impl());

    CHECK_THROWS_WITH_ALL(head->tie_parameter("bias", tok->weight), "tie_parameter", "no parameter 'bias'",
                          "weight");
    nn::Linear other(4, 9, false);
    CHECK_THROWS_WITH_ALL(other.tie_parameter("weight", tok->weight), "tie_parameter", "[9,4]", "[10,4]");
    CHECK_THROWS_WITH_ALL(other.tie_parameter("weight", Tensor::zeros({9, 4})), "tie_parameter", "leaf");
    CHECK_THROWS_WITH_ALL(other.tie_parameter("w", tok->weight), "the module has no parameter 'w'");  // unnamed
    // a tied model's state_dict has both names; named_parameters() has the first only, and says so when loaded
    nn::load_state_dict(lm, nn::state_dict(lm));
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(lm, lm.named_parameters()), "no tensor 'head.weight'", "tied",
                          "state_dict(model)");
    // an untied model's tensors: two values for one tensor, refused (nothing copied)
    nn::NamedTensors untied = nn::state_dict(lm);
    untied[1].second = untied[1].second.detach().clone() * 2.0;
    const Tensor kept = tok->weight.detach().clone();
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(lm, untied), "'tok.weight' and 'head.weight' are one tied tensor",
                          "different values");
    CHECK(same_bits(tok->weight, kept));
  }

  TEST_CASE("attention: head norms, init, masks and shape errors") {
    manual_seed(4);
    nn::AttentionConfig a;
    a.d_model = 8;
    a.heads = 2;
    a.head_norm = nn::HeadNormTargets::QKV;
    a.head_norm_kind = nn::HeadNormKind::RMSNorm;
    nn::MultiHeadAttention mha(a);
    CHECK(mha.num_parameters() == 4 * (64 + 8) + 3 * 4);  // q/k/v norms of size d_head = 4, shared by heads
    for (double b : mha.out_proj->bias.to_vector<double>()) CHECK(b == 0.0);
    Tensor x = Tensor::randn({2, 3, 8});
    CHECK(mha.forward(x, x).shape() == Shape{2, 3, 8});
    CHECK_THROWS_WITH_ALL(mha.forward(Tensor::zeros({2, 3, 6}), x), "expected query [B,T,8]", "[2,3,6]");
    CHECK_THROWS_WITH_ALL(mha.forward(x.to(DType::F64), x), "MultiHeadAttention", "expected query [B,T,8] float32",
                          "got float64[2,3,8]");  // (it named only the inner linear)
    // outside any scope an error names the module's kind (it began with a bare ": " before)
    CHECK_THROWS_WITH_ALL(mha.forward(x, x, Tensor::zeros({2, 2}, DType::I64)),
                          "MultiHeadAttention: key padding mask must be [2,3], got [2,2]");

    a.head_norm_kind = nn::HeadNormKind::L2;
    a.head_norm = nn::HeadNormTargets::QK;
    nn::MultiHeadAttention l2(a);
    CHECK(l2.num_parameters() == 4 * (64 + 8));
    CHECK(l2.forward(x, x, Tensor(), true).shape() == Shape{2, 3, 8});

    nn::FeedForward swiglu(8, 6, nn::Activation::SwiGLU, 0.0);
    CHECK(swiglu.fc1->out_features == 12);
    CHECK(swiglu.forward(x).shape() == Shape{2, 3, 8});
  }

  TEST_CASE("state_dict / load_state_dict: one model's tensors into another, strict, nothing copied on a mismatch") {
    nn::TransformerConfig cfg;
    cfg.vocab = 20, cfg.d_model = 8, cfg.heads = 2, cfg.d_ff = 16, cfg.enc_layers = cfg.dec_layers = 1;
    manual_seed(1);
    nn::Transformer a(cfg);
    manual_seed(2);
    nn::Transformer b(cfg);
    const nn::NamedTensors sa = nn::state_dict(a);
    REQUIRE(sa.size() == a.named_parameters().size() + a.named_buffers().size());
    CHECK(sa[0].second.impl_ptr() == a.named_parameters()[0].second.impl_ptr());  // handles, not copies
    nn::NamedTensors bad = sa;
    bad.back().second = Tensor::zeros({3});
    const std::vector<float> before = b.named_parameters()[0].second.to_vector<float>();
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(b, bad), "load_state_dict", bad.back().first.c_str(), "[3]");
    CHECK(b.named_parameters()[0].second.to_vector<float>() == before);  // nothing copied
    bad = sa;
    bad.pop_back();
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(b, bad), "load_state_dict", "no tensor", sa.back().first.c_str());
    bad = sa;
    bad.emplace_back("extra.weight", Tensor::zeros({1}));
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(b, bad), "load_state_dict", "'extra.weight'", "does not have");
    bad = sa;
    bad.push_back(sa[0]);
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(b, bad), "load_state_dict", "given twice");
    bad = sa;  // ids are no weights: an int64 tensor is refused, float64 converts
    bad[0].second = Tensor::zeros(sa[0].second.shape(), DType::I64);
    CHECK_THROWS_WITH_ALL(nn::load_state_dict(b, bad), "load_state_dict", "int64", "only floating dtypes convert");
    CHECK(b.named_parameters()[0].second.to_vector<float>() == before);
    nn::load_state_dict(b, sa);
    const auto pa = a.named_parameters(), pb = b.named_parameters();
    for (size_t i = 0; i < pa.size(); i++) CHECK(pb[i].second.to_vector<float>() == pa[i].second.to_vector<float>());
    CHECK(pb[0].second.impl_ptr() != pa[0].second.impl_ptr());  // copied, not shared
  }

  TEST_CASE("a checkpoint of one topology is refused by a model of another with the same parameters") {
    // pre_ln and resi_dual (post_ln and deep_norm) have the same names and shapes: only the recorded kind tells
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("skipgrad_kind_" + std::to_string(::getpid()) + ".safetensors")).string();
    nn::Transformer pre(tiny_transformer("pre_ln")), same(tiny_transformer("pre_ln"));
    nn::Transformer dual(tiny_transformer("resi_dual"));
    nn::save_checkpoint(path, pre);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, dual), "load_checkpoint", "holds a Transformer(pre_ln",
                          "the model is a Transformer(resi_dual");
    nn::TransformerConfig gelu = tiny_transformer("pre_ln");
    gelu.activation = nn::Activation::GELU;
    nn::Transformer other_activation(gelu);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, other_activation), "gelu");
    nn::TransformerConfig eps = tiny_transformer("pre_ln");
    eps.norm_eps = 1.0000001e-5;  // beyond six digits: the kinds must still differ
    nn::Transformer other_eps(eps);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, other_eps), "eps 1e-05", "eps 1.0000001e-05");
    nn::TransformerConfig heads = tiny_transformer("pre_ln");  // the same names and shapes, another function
    heads.heads = heads.heads == 2 ? 4 : 2;
    nn::Transformer other_heads(heads);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, other_heads), "load_checkpoint", " heads");
    // a file from before the kind named the heads (2026-12-05) still loads into the same model
    nn::SafetensorsFile old = nn::load_safetensors(path);
    std::string& stored = old.metadata.at("skipgrad.model");
    stored.erase(stored.find(", 2 heads"), 9);
    nn::save_safetensors(path, old.tensors, old.metadata);
    nn::load_checkpoint(path, same);
    CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, dual), "load_checkpoint", "Transformer(resi_dual");
    nn::load_checkpoint(path, same);  // the same kind loads
    nn::NamedTensors all = pre.named_parameters();  // a file without the kind (another tool's) is not checked
    for (auto& b : pre.named_buffers()) all.push_back(b);
    nn::save_safetensors(path, all);
    nn::load_checkpoint(path, dual);
    std::filesystem::remove(path);
  }

  TEST_CASE("registry: names, unknown topology error, config validation") {
    auto names = nn::topology_names();
    for (const char* n : {"post_ln", "pre_ln", "resi_dual", "hybrid_norm", "hybrid_norm_star", "deep_norm",
                          "sandwich_ln", "peri_ln", "mix_ln", "res_post_norm", "rezero", "admin", "b2t", "layer_scale",
                          "sub_ln", "normformer", "t_fixup"})
      CHECK(std::find(names.begin(), names.end(), n) != names.end());
    for (const auto& n : names) CHECK(nn::make_topology(n)->name() == n);
    CHECK_THROWS_WITH_ALL(nn::make_topology("pre_post"), "unknown topology 'pre_post'", "resi_dual", "mix_ln");
    nn::TransformerConfig c = tiny("pre_ln");
    c.heads = 3;
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "d_model 16", "heads 3");
    c = tiny("pre_ln");
    c.pad_id = 11;
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "pad_id 11");
    c = tiny("pre_ln");
    c.norm_eps = INFINITY;  // every norm would output 0 (x / sqrt(inf))
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "norm_eps must be finite", "inf");
  }

  TEST_CASE("every topology: parameter names and counts, forward shape with LN and RMSNorm") {
    for (const auto& topo : nn::topology_names()) {
      for (auto norm : {nn::NormKind::LayerNorm, nn::NormKind::RMSNorm}) {
        INFO("topology " << topo << " norm " << nn::norm_kind_name(norm));
        manual_seed(1);
        nn::Transformer m(tiny(topo, norm));
        CHECK(m.num_parameters() == expected_params(topo, norm));
        std::set<std::string> names;
        for (auto& [n, t] : m.named_parameters()) {
          names.insert(n);
          CHECK(t.node_name() == n);  // leaves carry their names
        }
        const auto named = m.named_parameters();  // parameters(): the same tensors in the same order, unnamed
        const std::vector<Tensor> params = m.parameters();
        REQUIRE(params.size() == named.size());
        for (size_t i = 0; i < params.size(); i++) CHECK(params[i].impl_ptr() == named[i].second.impl_ptr());
        for (const char* n : {"embed.weight", "enc.0.self_attn.q_proj.weight", "enc.1.ffn.fc2.bias",
                              "dec.1.cross_attn.out_proj.bias", "dec.0.self_attn.v_proj.weight"})
          CHECK(names.count(n) == 1);
        const bool final_norm =
            topo != "post_ln" && topo != "deep_norm" && topo != "rezero" && topo != "admin" && topo != "b2t" &&
            topo != "t_fixup";
        CHECK(names.count("dec.final_norm.weight") == (final_norm ? 1 : 0));
        if (topo == "rezero") CHECK(names.count("dec.1.rezero_alpha") == 1);
        if (topo == "admin") CHECK(names.count("dec.1.cross_attn_omega") == 1);
        if (topo == "res_post_norm") CHECK(names.count("enc.0.ffn_out_norm.weight") == 1);
        if (topo.rfind("hybrid_norm", 0) == 0) CHECK(names.count("dec.1.cross_attn.k_norm.weight") == 1);
        Tensor logits = m.forward(ids({2, 3, 4, 5, 6, 7, 1, 1}, 2, 4), ids({0, 4, 5, 0, 6, 1}, 2, 3));
        CHECK(logits.shape() == Shape{2, 3, 11});
        for (double v : logits.to_vector<double>()) CHECK(std::isfinite(v));
      }
    }
  }

  TEST_CASE("mix_ln: the first k layers are Post-LN") {
    nn::TransformerConfig c = tiny("mix_ln");
    manual_seed(8);
    nn::Transformer all_pre(c);  // L = 2: floor(L/4) = 0 Post-LN layers, i.e. Pre-LN
    c.mixln_post_layers = 1;
    manual_seed(8);
    nn::Transformer one_post(c);
    c = c.with_topology("pre_ln");  // (mixln_post_layers back to -1: pre_ln refuses Mix-LN's option)
    CHECK(c.mixln_post_layers == -1);
    manual_seed(8);
    nn::Transformer pre(c);
    Tensor src = ids({2, 3, 4}, 1, 3), tgt = ids({0, 4, 5}, 1, 3);
    CHECK(max_abs_diff(all_pre.forward(src, tgt), pre.forward(src, tgt)) < 1e-6);
    CHECK(max_abs_diff(one_post.forward(src, tgt), pre.forward(src, tgt)) > 1e-3);
  }

  TEST_CASE("a topology's own option is refused for another; with_topology resets them for a comparison") {
    nn::TransformerConfig c = tiny("pre_ln");
    c.resi_dual_scale = 0.5;
    CHECK_THROWS_WITH_ALL(c.validate(), "resi_dual_scale 0.5 is ResiDual's", "pre_ln does not use it");
    CHECK_NOTHROW(c.with_topology("resi_dual").validate());
    CHECK(c.with_topology("resi_dual").resi_dual_scale == 0.5);
    CHECK(c.with_topology("post_ln").resi_dual_scale == 1.0);
    c = c.with_topology("mix_ln");
    c.mixln_post_layers = 1;
    CHECK_NOTHROW(c.validate());
    c.topology = "resi_dual";
    CHECK_THROWS_WITH_ALL(c.validate(), "mixln_post_layers 1 is Mix-LN's", "resi_dual does not use it");
    CHECK_NOTHROW(c.check_used_by({"pre_ln", "mix_ln"}, "compare"));  // a comparison: one topology uses it
    CHECK_THROWS_WITH_ALL(c.check_used_by({"pre_ln", "post_ln"}, "compare"), "compare", "mixln_post_layers 1",
                          "acts on mix_ln, which the topologies do not list");
    c.topology = "no_such";  // an unknown name is said first
    CHECK_THROWS_WITH_ALL(c.validate(), "no_such");
  }

  TEST_CASE("untied embeddings and init schemes") {
    nn::TransformerConfig c = tiny("post_ln");
    c.tie_output = false;  // alone it would do nothing: one shared table is tied to the output
    CHECK_THROWS_WITH_ALL(nn::Transformer{c}, "tie_output false needs share_embeddings false");
    c.share_embeddings = false;
    nn::Transformer m(c);
    CHECK(m.num_parameters() == expected_params("post_ln", nn::NormKind::LayerNorm) + 2 * 11 * 16);
    CHECK(m.forward(ids({2, 3}, 1, 2), ids({0, 4, 5}, 1, 3)).shape() == Shape{1, 3, 11});
    CHECK(m.parameter("output_projection.weight").shape() == Shape{11, 16});
    CHECK(m.parameter("src_embed.weight").shape() == Shape{11, 16});

    c = tiny("pre_ln");  // Pre-LN + QK-norm (l2, no weights) and + QKV-norm (RMS, weights of size d_head)
    c.qk_norm = nn::HeadNormTargets::QK;
    c.qk_norm_kind = nn::HeadNormKind::L2;
    nn::Transformer qk(c);
    CHECK(qk.num_parameters() == expected_params("pre_ln", nn::NormKind::LayerNorm));
    CHECK(qk.forward(ids({2, 3}, 1, 2), ids({0, 4}, 1, 2)).shape() == Shape{1, 2, 11});
    c.qk_norm = nn::HeadNormTargets::QKV;
    c.qk_norm_kind = nn::HeadNormKind::RMSNorm;
    nn::Transformer qkv(c);
    CHECK(qkv.num_parameters() == expected_params("pre_ln", nn::NormKind::LayerNorm) + 6 * 3 * 8);
    CHECK(qkv.parameter("dec.0.cross_attn.v_norm.weight").shape() == Shape{8});

    c = tiny("pre_ln");
    c.init = nn::InitScheme::SmallInit;
    nn::Transformer s(c);
    const double sigma = std::sqrt(2.0 / 80.0), sigma_out = sigma / 2.0;  // L = 2: σ/sqrt(2L)
    for (double w : s.parameter("enc.0.self_attn.q_proj.weight").to_vector<double>()) CHECK(std::abs(w) <= 3 * sigma);
    for (double w : s.parameter("dec.1.ffn.fc2.weight").to_vector<double>()) CHECK(std::abs(w) <= 3 * sigma_out);
    for (double b : s.parameter("enc.0.ffn.fc1.bias").to_vector<double>()) CHECK(b == 0.0);
    // GPT-2's: N(0, 0.02) for matrices and the table (its pad row 0), 0.02/√(2L) for out_proj and fc2, biases 0
    c.init = nn::parse_init_scheme("gpt2");
    CHECK(std::string(nn::init_scheme_name(c.init)) == "gpt2");
    c.d_model = 64, c.d_ff = 256, c.enc_layers = c.dec_layers = 8;
    manual_seed(3);
    nn::Transformer g(c);
    auto stdev = [&](const std::string& name) {
      const std::vector<double> v = g.parameter(name).to_vector<double>();
      double sq = 0;
      for (double x : v) sq += x * x;
      return std::sqrt(sq / (double)v.size());
    };
    CHECK(stdev("enc.0.self_attn.q_proj.weight") == doctest::Approx(0.02).epsilon(0.05));
    CHECK(stdev("dec.7.cross_attn.k_proj.weight") == doctest::Approx(0.02).epsilon(0.05));
    CHECK(stdev("dec.3.ffn.fc1.weight") == doctest::Approx(0.02).epsilon(0.03));
    CHECK(stdev("enc.5.ffn.fc2.weight") == doctest::Approx(0.02 / 4.0).epsilon(0.03));  // √(2·8) = 4
    CHECK(stdev("dec.1.self_attn.out_proj.weight") == doctest::Approx(0.005).epsilon(0.05));
    CHECK(stdev("embed.weight") == doctest::Approx(0.02 * std::sqrt(10.0 / 11.0)).epsilon(0.08));  // a zero row
    for (double w : g.parameter("embed.weight").slice(0, 1, 2).to_vector<double>()) CHECK(w == 0.0);  // pad id 1
    for (double b : g.parameter("dec.2.self_attn.v_proj.bias").to_vector<double>()) CHECK(b == 0.0);

    auto enc = nn::deepnorm_coefficients(6, 6, nn::Side::Encoder), dec = nn::deepnorm_coefficients(6, 6, nn::Side::Decoder);
    CHECK(enc.alpha == doctest::Approx(1.419).epsilon(1e-3));
    CHECK(enc.beta == doctest::Approx(0.497).epsilon(1e-3));
    CHECK(dec.alpha == doctest::Approx(2.060).epsilon(1e-3));
    CHECK(dec.beta == doctest::Approx(0.343).epsilon(1e-3));
  }

  TEST_CASE("float64 gradcheck of a tiny model's loss: post_ln, pre_ln, resi_dual") {
    for (const char* topo : {"post_ln", "pre_ln", "resi_dual"}) {
      INFO("topology " << topo);
      manual_seed(7);
      nn::TransformerConfig c = tiny(topo);
      c.d_model = 8;
      c.d_ff = 8;
      c.enc_layers = c.dec_layers = 1;
      nn::Transformer m(c);
      m.to(DType::F64);
      Tensor src = ids({2, 3, 4, 1}, 2, 2), tgt_in = ids({0, 5, 0, 6}, 2, 2), tgt_out = ids({5, 7, 6, 2}, 2, 2);
      std::vector<Tensor> params = {m.parameter("enc.0.self_attn.q_proj.bias"), m.parameter("enc.0.ffn.fc2.bias"),
                                    m.parameter("dec.0.cross_attn.v_proj.bias"), m.parameter("dec.0.ffn_norm.weight"),
                                    m.parameter("embed.weight")};
      auto res = gradcheck(
          [&](const std::vector<Tensor>&) {
            Tensor logits = m.forward(src, tgt_in);
            return cross_entropy(logits.reshape({-1, 11}), tgt_out.reshape({-1}), 1);
          },
          params, 1e-6, 1e-6, 1e-4);
      CHECK_MESSAGE(res.ok, res.message);
    }
  }

  TEST_CASE("causal masking and source padding, every topology") {
    for (const auto& topo : nn::topology_names()) {
      INFO("topology " << topo);
      manual_seed(2);
      nn::Transformer m(tiny(topo));
      m.eval();
      NoGradGuard ng;
      // changing target token 3 leaves the logits of positions 0..2 unchanged
      Tensor src = ids({2, 3, 4, 5}, 1, 4);
      Tensor a = m.forward(src, ids({0, 4, 5, 6, 7}, 1, 5)), b = m.forward(src, ids({0, 4, 5, 9, 7}, 1, 5));
      CHECK(max_abs_diff(a.slice(1, 0, 3), b.slice(1, 0, 3)) < 1e-6);
      CHECK(max_abs_diff(a.slice(1, 3, 5), b.slice(1, 3, 5)) > 1e-4);
      // a padded source gives the same output as the unpadded one
      Tensor tgt = ids({0, 4, 5}, 1, 3);
      Tensor short_src = m.forward(ids({2, 3, 4}, 1, 3), tgt);
      Tensor padded_src = m.forward(ids({2, 3, 4, 1, 1}, 1, 5), tgt);
      CHECK(max_abs_diff(short_src, padded_src) < 1e-5);
      // and batching with a longer sentence does not change it either
      Tensor batch = m.forward(ids({2, 3, 4, 1, 1, 6, 7, 8, 9, 10}, 2, 5), ids({0, 4, 5, 0, 4, 5}, 2, 3));
      CHECK(max_abs_diff(batch.slice(0, 0, 1), short_src) < 1e-5);
    }
  }

  TEST_CASE("ResiDual: s = 1 and s = 0.5 give the same output (LN scale invariance)") {
    for (auto norm : {nn::NormKind::LayerNorm, nn::NormKind::RMSNorm}) {
      nn::TransformerConfig c = tiny("resi_dual", norm);
      manual_seed(5);
      nn::Transformer m1(c);
      c.resi_dual_scale = 0.5;
      manual_seed(5);
      nn::Transformer m2(c);
      Tensor src = ids({2, 3, 4, 5}, 1, 4), tgt = ids({0, 4, 5}, 1, 3);
      CHECK(max_abs_diff(m1.forward(src, tgt), m2.forward(src, tgt)) < 1e-4);
      std::vector<Tensor> xs, duals;
      m2.layer_outputs = &xs;
      m2.dual_outputs = &duals;
      m2.forward(src, tgt);
      CHECK(xs.size() == 4);
      CHECK(duals.size() == 4);
      CHECK(duals[0].defined());
    }
  }

  TEST_CASE("graph node names show layers, residual adds and dual adds") {
    for (const char* topo : {"pre_ln", "resi_dual", "hybrid_norm"}) {
      manual_seed(6);
      nn::Transformer m(tiny(topo));
      current_tape().clear();
      Tensor logits = m.forward(ids({2, 3}, 1, 2), ids({0, 4}, 1, 2));
      std::set<std::string> names;
      for (auto& n : current_tape().nodes()) names.insert(n->name);
      auto any = [&](const std::string& frag) {
        for (auto& n : names)
          if (n.find(frag) != std::string::npos) return true;
        return false;
      };
      INFO("topology " << topo);
      CHECK(any("enc.0.self_attn"));
      CHECK(names.count("enc.1.ffn.residual_add") == 1);
      CHECK(names.count("dec.0.cross_attn.residual_add") == 1);
      CHECK(any("enc.0.self_attn.q_proj"));
      if (std::string(topo) == "resi_dual") CHECK(names.count("dec.1.ffn.dual_add") == 1);
      if (std::string(topo) == "hybrid_norm") CHECK(any("dec.0.cross_attn.q_norm"));
      current_tape().clear();
    }
  }

  TEST_CASE("shape errors at module boundaries name the module") {
    nn::Transformer m(tiny("pre_ln"));
    nn::LayerInputs ctx;
    {
      Scope scope("enc");  // as inside the model's encoder
      CHECK_THROWS_WITH_ALL(m.encoder->layers[1]->forward({Tensor::zeros({2, 3, 8}), Tensor()}, ctx),
                            "enc.1: expected [B,T,16], got [2,3,8]");
    }
    nn::LayerInputs no_memory;
    CHECK_THROWS_WITH_ALL(m.decoder->layers[0]->forward({Tensor::zeros({2, 3, 16}), Tensor()}, no_memory),
                          "a decoder layer needs the encoder output");
    CHECK_THROWS_WITH_ALL(m.forward(Tensor::zeros({1, 2}), ids({0}, 1, 1)), "src_ids must be int64");
    Tensor enc = m.encode(ids({2, 3}, 1, 2));
    CHECK_THROWS_WITH_ALL(m.decode(enc, Tensor(), ids({0, 4, 0, 5}, 2, 2)), "encoder output must be [2,S,16]");
    CHECK_THROWS_WITH_ALL(m.decode(enc.to(DType::F64), Tensor(), ids({0, 4}, 1, 2)), "Transformer::decode",
                          "encoder output must be [1,S,16] float32, got float64[1,2,16]");
    // a cast to an integer dtype would truncate every weight: refused, nothing cast
    const Tensor before = m.parameters()[0].detach().clone();
    CHECK_THROWS_WITH_ALL(m.to(DType::I64), "Module::to", "floating dtype only", "int64");
    CHECK(same_bits(m.parameters()[0], before));
  }

  TEST_CASE("20 steps of SGD on a 4-sentence copy task lower the loss, every topology") {
    // sentences over tokens 3..10, bos 0, eos 2, pad 1
    Tensor src = ids({3, 4, 5, 6, 7, 8, 9, 10, 5, 3, 8, 6, 10, 9, 4, 7}, 4, 4);
    Tensor tgt_in = ids({0, 3, 4, 5, 6, 0, 7, 8, 9, 10, 0, 5, 3, 8, 6, 0, 10, 9, 4, 7}, 4, 5);
    Tensor tgt_out = ids({3, 4, 5, 6, 2, 7, 8, 9, 10, 2, 5, 3, 8, 6, 2, 10, 9, 4, 7, 2}, 4, 5);
    for (const auto& topo : nn::topology_names()) {
      INFO("topology " << topo);
      manual_seed(11);
      nn::Transformer m(tiny(topo));
      const double before = loss_of(m, src, tgt_in, tgt_out);
      // SGD with momentum 0.9, lr 0.05, on raw data (the optimizers live in nn/optim.h)
      std::vector<Tensor> params = m.parameters();
      std::vector<std::vector<float>> velocity(params.size());
      for (size_t i = 0; i < params.size(); i++) velocity[i].assign(params[i].numel(), 0.0f);
      for (int step = 0; step < 20; step++) {
        m.zero_grad();
        Tensor logits = m.forward(src, tgt_in);
        cross_entropy(logits.reshape({-1, 11}), tgt_out.reshape({-1}), 1).backward();
        for (size_t i = 0; i < params.size(); i++) {
          Tensor g = params[i].grad();
          if (!g.defined()) continue;
          std::vector<float> gv = g.to_vector<float>();
          float* p = params[i].data<float>();
          for (size_t j = 0; j < gv.size(); j++) {
            velocity[i][j] = 0.9f * velocity[i][j] + gv[j];
            p[j] -= 0.05f * velocity[i][j];
          }
        }
      }
      const double after = loss_of(m, src, tgt_in, tgt_out);
      MESSAGE(topo << ": loss " << before << " -> " << after);
      CHECK(after < 0.7 * before);
    }
  }

  TEST_CASE("a training step's fan-in sums are folded into the GEMMs and kernels, in every topology") {
    // 2 + 2 layers: the encoder's self-attention input feeds Q, K, V and the residual or its norm (3 sums a
    // layer), its FFN input fc1 and the residual (1); the decoder's self-attention 3, cross-attention query 1,
    // FFN 1; the encoder output feeds 2 x (K, V) (3); the tied embedding 3 uses (2): 8 + 12 + 3 = 23, none left to
    // an add kernel. ResiDual adds: each sublayer's output feeds both streams' adds (dual_add, residual_add), and
    // each stack's input starts both streams: two gradients from adds, which no GEMM makes (10 + 2). ReZero: each
    // layer's α scales all its sublayers, so its gradient sums 2 (encoder) or 3 (decoder) reductions: 1 + 1 + 2 + 2.
    // B2T: its skip's add hands the layer input the very gradient that the FFN input gets from its residual add,
    // so fc1's GEMM cannot sum into that shared tensor (one fold fewer, one add more, per layer), and the layer
    // input sums two gradients from adds (one more): 23 − 4 folded, 4 + 4 added.
    Tensor src = ids({2, 3, 4, 5, 6, 7, 1, 1}, 2, 4), tgt_in = ids({0, 4, 5, 0, 6, 1}, 2, 3),
           tgt_out = ids({4, 5, 2, 6, 1, 1}, 2, 3);
    for (const std::string& topo : nn::topology_names()) {
      CAPTURE(topo);
      manual_seed(5);
      nn::Transformer m(tiny(topo));
      nn::label_smoothed_nll(m.forward(src, tgt_in), tgt_out, 1, 0.1).loss.backward();
      CHECK(last_backward_fan_in().folded == (topo == "b2t" ? 19 : 23));
      CHECK(last_backward_fan_in().added == (topo == "resi_dual" ? 12 : topo == "rezero" ? 6 : topo == "b2t" ? 8 : 0));
    }
  }
}
