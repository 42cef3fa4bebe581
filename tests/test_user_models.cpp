// What a program builds on the library without changing it: its own modules (a train() override, walking the tree
// with named_modules and apply) and its own topology (nn::TopologyRegistration makes its name known to
// TransformerConfig, the checkpoints and the analysis while the registration lives).
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "analysis/graph.h"
#include "analysis/paths.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/transformer.h"
#include "test_util.h"

using namespace sgtest;
namespace nn = skipgrad::nn;

namespace {

// Pre-LN's equations (nn/topologies/pre_ln.cpp), written again outside the library:
//   h = x + D(SA(LN_sa(x)));  [decoder: h = h + D(CA(LN_ca(h), enc))];  y = h + D(F(LN_ff(h)));  final LN per stack.
// half_migrated: the layer as written before decoder-only models (README: "a topology written before this"), its
// cross-attention norm built under is_decoder(), so that a decoder-only model has one that nothing calls.
class MyPreLNLayer : public nn::Layer {
 public:
  MyPreLNLayer(const nn::TransformerConfig& cfg, nn::Side side, int64_t index, bool half_migrated = false)
      : Layer(cfg, side, index) {
    self_attn_norm = add_norm("self_attn_norm");
    if (half_migrated ? is_decoder() : has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
    ffn_norm = add_norm("ffn_norm");
  }

 protected:
  nn::Stream apply(const nn::Stream& in, const nn::LayerInputs& ctx) override {
    Tensor x = in.x;
    x = residual_add("self_attn", x, D("self_attn", SA(self_attn_norm->forward(x), ctx)));
    if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
    x = residual_add("ffn", x, D("ffn", F(ffn_norm->forward(x))));
    return {x, Tensor()};
  }

 private:
  std::shared_ptr<nn::Norm> self_attn_norm, cross_attn_norm, ffn_norm;
};

using MyPreLN = nn::LayerTopology<MyPreLNLayer, nn::FinalNormTopology>;

// docs/using.md's example, as it is written there: x = x + D(F(N(x))) + D(SA(N(x))), a parallel block (GPT-J)
class ParallelLayer : public nn::Layer {
 public:
  ParallelLayer(const nn::TransformerConfig& cfg, nn::Side side, int64_t index) : Layer(cfg, side, index) {
    norm = add_norm("norm");
    if (has_cross_attention()) cross_attn_norm = add_norm("cross_attn_norm");
  }

 protected:
  nn::Stream apply(const nn::Stream& in, const nn::LayerInputs& ctx) override {
    skipgrad::Tensor x = in.x, h = norm->forward(x);
    x = residual_add("self_attn", x, D("self_attn", SA(h, ctx)));
    x = residual_add("ffn", x, D("ffn", F(h)));
    if (has_cross_attention()) x = residual_add("cross_attn", x, D("cross_attn", CA(cross_attn_norm->forward(x), ctx)));
    return {x, skipgrad::Tensor()};
  }

 private:
  std::shared_ptr<nn::Norm> norm, cross_attn_norm;
};

class HalfMigratedLayer : public MyPreLNLayer {
 public:
  HalfMigratedLayer(const nn::TransformerConfig& cfg, nn::Side side, int64_t index)
      : MyPreLNLayer(cfg, side, index, /*half_migrated=*/true) {}
};

struct Run {
  Tensor loss;
  nn::NamedTensors grads;
  std::string paths;  // the path analysis' tables of the step's graph
};

// One forward + loss + backward of `topology` from seed 8; the gradients by parameter name.
Run run_step(const std::string& topology) {
  manual_seed(8);
  nn::Transformer model(tiny_transformer(topology));
  Tensor src = Tensor::from_vector<int64_t>({4, 5, 6, 7, 3, 8, 1, 1}, {2, 4});
  Tensor tgt_in = Tensor::from_vector<int64_t>({2, 9, 4, 2, 10, 5}, {2, 3});
  Tensor tgt_out = Tensor::from_vector<int64_t>({9, 4, 6, 10, 5, 1}, {2, 3});
  current_tape().clear();
  Run r;
  r.loss = nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, 1, 0.1).loss;
  GraphOptions go;
  go.value_norms = false;
  Graph g = Graph::from_tape(current_tape(), go);
  r.paths = paths_markdown(g, analyze_paths(g, g.id_of(r.loss)));
  r.loss.backward();
  for (auto& [name, p] : model.named_parameters()) r.grads.emplace_back(name, p.grad());
  return r;
}

// A module with state for a mode, as torch's BatchNorm: its train() override must be reached through its parent.
struct ModeAware : nn::Module {
  int mode_changes = 0;
  void train(bool on = true) override {
    ++mode_changes;
    Module::train(on);
  }
};
struct Block : nn::Module {
  std::shared_ptr<nn::Linear> fc;
  std::shared_ptr<ModeAware> state;
  Block() {
    fc = register_module("fc", std::make_shared<nn::Linear>(3, 3));
    state = register_module("state", std::make_shared<ModeAware>());
  }
};

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("a program's own modules: train() overrides are called, named_modules and apply walk the tree once") {
    auto net = std::make_shared<nn::Module>();
    auto blocks = net->register_module("blk", std::make_shared<nn::ModuleList<Block>>());
    blocks->push_back(std::make_shared<Block>());
    blocks->push_back(std::make_shared<Block>());
    auto shared = net->register_module("also", (*blocks)[1]);  // one module under two names: visited once
    CHECK(shared->name() == "1");  // its first name, as named_modules lists it, and so its nodes' scope
    net->eval();
    CHECK((*blocks)[0]->state->mode_changes == 1);
    CHECK_FALSE((*blocks)[0]->state->is_training());
    net->train();
    CHECK((*blocks)[0]->state->mode_changes == 2);

    std::vector<std::string> names;
    for (auto& [name, m] : net->named_modules()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"", "blk", "blk.0", "blk.0.fc", "blk.0.state", "blk.1", "blk.1.fc",
                                            "blk.1.state"});
    CHECK(net->named_modules("model")[1].first == "model.blk");
    std::vector<nn::Module*> order;
    net->apply([&](nn::Module& m) { order.push_back(&m); });
    REQUIRE(order.size() == 8);
    CHECK(order.front() == (*blocks)[0]->fc.get());  // children before their parent, the root last
    CHECK(order.back() == net.get());
    net->apply([](nn::Module& m) {  // torch's idiom: re-initialise every Linear
      if (auto* lin = dynamic_cast<nn::Linear*>(&m)) lin->weight.copy_(Tensor::full(lin->weight.shape(), 0.5));
    });
    CHECK(shared->fc->weight.to_vector<float>() == std::vector<float>(9, 0.5f));
  }


  TEST_CASE("a program's own topology: registered by name, it builds, trains, saves and is analysed like a built-in") {
    const size_t builtins = nn::topology_names().size();
    {
      nn::TopologyRegistration mine("my_pre_ln", [] { return std::make_unique<MyPreLN>("my_pre_ln"); });
      std::vector<std::string> names = nn::topology_names();
      REQUIRE(names.size() == builtins + 1);
      CHECK(names.back() == "my_pre_ln");
      CHECK(nn::make_topology("my_pre_ln")->name() == "my_pre_ln");
      CHECK_THROWS_WITH_ALL(nn::make_topology("pre_post"), "unknown topology 'pre_post'", "my_pre_ln");

      // the same equations as pre_ln: the same parameters, loss, gradients and path tables, to the bit
      Run ours = run_step("my_pre_ln"), built_in = run_step("pre_ln");
      CHECK(ours.loss.item() == built_in.loss.item());
      REQUIRE(ours.grads.size() == built_in.grads.size());
      for (size_t i = 0; i < ours.grads.size(); ++i) {
        INFO(ours.grads[i].first);
        CHECK(ours.grads[i].first == built_in.grads[i].first);
        CHECK(max_abs_diff(ours.grads[i].second, built_in.grads[i].second) == 0.0);
      }
      CHECK(ours.paths == built_in.paths);
      CHECK(ours.paths.find("enc.1.ffn") != std::string::npos);

      // a checkpoint records the topology's name: it loads into the same topology, not into pre_ln
      const std::string path = (std::filesystem::temp_directory_path() /
                                ("skipgrad_custom_topology_" + std::to_string(::getpid()) + ".safetensors")).string();
      manual_seed(9);
      nn::Transformer saved(tiny_transformer("my_pre_ln"));
      CHECK(saved.kind().find("Transformer(my_pre_ln") == 0);
      nn::save_checkpoint(path, saved);
      nn::Transformer loaded(tiny_transformer("my_pre_ln")), pre(tiny_transformer("pre_ln"));
      nn::load_checkpoint(path, loaded);
      for (const auto& entry : saved.named_parameters()) {  // no structured binding: clang 14's INFO cannot
        INFO(entry.first);                                      // capture one
        CHECK(max_abs_diff(entry.second, loaded.parameter(entry.first)) == 0.0);
      }
      CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, pre), "load_checkpoint", "holds a Transformer(my_pre_ln");
      std::filesystem::remove(path);

      // what the registry refuses
      auto factory = [] { return std::make_unique<MyPreLN>("x"); };
      CHECK_THROWS_WITH_ALL(nn::TopologyRegistration("my_pre_ln", factory), "'my_pre_ln' is registered already");
      CHECK_THROWS_WITH_ALL(nn::TopologyRegistration("pre_ln", factory), "'pre_ln' is a built-in topology");
      CHECK_THROWS_WITH_ALL(nn::TopologyRegistration("My-LN", factory), "'My-LN' may hold only a-z, 0-9 and _");
      CHECK_THROWS_WITH_ALL(nn::TopologyRegistration("", factory), "1 to 64 characters");
      CHECK_THROWS_WITH_ALL(nn::TopologyRegistration("no_factory", nullptr), "no factory given for topology "
                                                                             "'no_factory'");
      CHECK(nn::topology_names().size() == builtins + 1);  // a refused registration leaves nothing behind

      // a factory whose topology answers to another name, or to none, is refused where it is used
      nn::TopologyRegistration misnamed("misnamed", factory);
      CHECK_THROWS_WITH_ALL(nn::make_topology("misnamed"), "make_topology", "made a topology named 'x'");
      CHECK_THROWS_WITH_ALL(nn::Transformer(tiny_transformer("misnamed")), "made a topology named 'x'");
      nn::TopologyRegistration empty("empty", [] { return std::unique_ptr<nn::Topology>(); });
      CHECK_THROWS_WITH_ALL(nn::make_topology("empty"), "the factory registered for 'empty' returned no topology");
    }
    {
      // docs/using.md's parallel block: one norm feeds both branches, so each layer's norm gets both gradients
      const nn::TopologyRegistration parallel("parallel", [] {
        return std::make_unique<nn::LayerTopology<ParallelLayer, nn::FinalNormTopology>>("parallel");
      });
      Run r = run_step("parallel");
      CHECK(std::isfinite(r.loss.item()));
      int64_t norms = 0;
      for (const auto& entry : r.grads) {
        INFO(entry.first);
        REQUIRE(entry.second.defined());
        if (entry.first.find(".norm.") == std::string::npos) continue;
        ++norms;
        CHECK(max_abs_diff(entry.second, Tensor::zeros(entry.second.shape())) > 0);
      }
      CHECK(norms == 2 * (2 + 2));  // weight and bias of one norm per layer, 2+2 layers
      CHECK(r.paths.find("enc.0.ffn") != std::string::npos);
    }
    {
      // a constant the factory gives its topology is part of the model's kind (Topology::settings): a checkpoint of
      // one value is refused by a model of another; the factory runs once per Transformer
      struct Scaled : MyPreLN {
        double k;
        explicit Scaled(double k_) : MyPreLN("scaled"), k(k_) {}
        std::string settings() const override { return "k " + std::to_string(k); }
      };
      double k = 0.5;
      int made = 0;
      const nn::TopologyRegistration scaled("scaled", [&] {
        ++made;
        return std::make_unique<Scaled>(k);
      });
      nn::Transformer half(tiny_transformer("scaled"));
      CHECK(made == 1);
      CHECK(half.kind().find(", scaled k 0.5") != std::string::npos);
      const std::string path = (std::filesystem::temp_directory_path() /
                                ("skipgrad_scaled_" + std::to_string(::getpid()) + ".safetensors")).string();
      nn::save_checkpoint(path, half);
      k = 0.05;
      nn::Transformer other(tiny_transformer("scaled"));
      CHECK_THROWS_WITH_ALL(nn::load_checkpoint(path, other), "load_checkpoint", "scaled k 0.5", "scaled k 0.05");
      std::filesystem::remove(path);
      const nn::TopologyRegistration failing("failing", []() -> std::unique_ptr<nn::Topology> {
        throw std::runtime_error("no such file: my_topology.json");
      });
      CHECK_THROWS_WITH_ALL(nn::Transformer(tiny_transformer("failing")), "make_topology",
                            "factory registered for 'failing' failed: no such file: my_topology.json");
    }
    // the registrations ended with their scope
    CHECK(nn::topology_names().size() == builtins);
    CHECK_THROWS_WITH_ALL(nn::make_topology("my_pre_ln"), "unknown topology 'my_pre_ln'");
    CHECK_THROWS_WITH_ALL(nn::Transformer(tiny_transformer("my_pre_ln")), "unknown topology 'my_pre_ln'");
  }
}

TEST_SUITE("nn") {
  TEST_CASE("parameters_without_grad: a module built but never called is named after the first backward") {
    const Tensor ids = Tensor::from_vector<int64_t>({2, 9, 4, 2, 10, 5}, {2, 3});
    const Tensor next = Tensor::from_vector<int64_t>({9, 4, 6, 10, 5, 1}, {2, 3});
    {
      const nn::TopologyRegistration half("half_migrated", [] {
        return std::make_unique<nn::LayerTopology<HalfMigratedLayer, nn::FinalNormTopology>>("half_migrated");
      });
      nn::TransformerConfig c = tiny_transformer("half_migrated");
      c.enc_layers = 0;  // decoder-only: the cross-attention norms are built, never called
      manual_seed(3);
      nn::Transformer lm(c);
      // before any backward, every parameter (the question is asked after a backward)
      CHECK(nn::parameters_without_grad(lm).size() == lm.named_parameters().size());
      nn::label_smoothed_nll(lm.forward(ids), next, c.pad_id, 0.0).loss.backward();
      const std::vector<std::string> unused = nn::parameters_without_grad(lm);
      CHECK(unused == std::vector<std::string>{"dec.0.cross_attn_norm.weight", "dec.0.cross_attn_norm.bias",
                                               "dec.1.cross_attn_norm.weight", "dec.1.cross_attn_norm.bias"});
      CHECK(nn::without_grad_warning(unused, 2) ==
            "4 parameters got no gradient in the first step (the forward does not use them; a module built but never "
            "called?): dec.0.cross_attn_norm.weight, dec.0.cross_attn_norm.bias, ...");
      CHECK(nn::without_grad_warning({}).empty());
    }
    // every built-in topology uses all its parameters, encoder-decoder and decoder-only (Admin after its profiling)
    const Tensor src = Tensor::from_vector<int64_t>({4, 5, 6, 7, 3, 8, 1, 1}, {2, 4});
    for (const std::string& topology : nn::topology_names())
      for (bool decoder_only : {false, true}) {
        CAPTURE(topology);
        CAPTURE(decoder_only);
        nn::TransformerConfig c = tiny_transformer(topology);
        if (decoder_only) c.enc_layers = 0;
        manual_seed(3);
        nn::Transformer model(c);
        model.init_from_batch(decoder_only ? Tensor() : src, ids);
        const Tensor logits = decoder_only ? model.forward(ids) : model.forward(src, ids);
        nn::label_smoothed_nll(logits, next, c.pad_id, 0.1).loss.backward();
        CHECK(nn::parameters_without_grad(model) == std::vector<std::string>{});
      }
  }
}
