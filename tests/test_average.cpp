// Checkpoint averaging (examples/translate/average.h): `train --keep-last N` keeps the newest N step checkpoints,
// `average` writes their elementwise mean without optimizer state, and refuses files that cannot be averaged.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "average.h"
#include "config_json.h"
#include "eval.h"
#include "nn/checkpoint.h"
#include "vocab.h"
#include "test_util.h"
#include "translate_test_util.h"

using namespace sgtest;
using namespace translate;
namespace fs = std::filesystem;

namespace {

const ScratchDir scratch("skipgrad_average");  // removed when the test process exits

// A checkpoint of a tiny pre_ln model whose parameters all equal `value`, as `train` writes them (config, vocab
// and step metadata), with the AdamW state when `with_optimizer`.
std::string constant_checkpoint(const std::string& name, double value, int64_t step, bool with_optimizer = false,
                                const nn::TransformerConfig& cfg = tiny_transformer("pre_ln"),
                                const std::string& vocab = "spm64.model") {
  nn::Transformer model(cfg);
  for (Tensor& p : model.parameters()) p.copy_(Tensor::full({}, value));
  nn::AdamW opt(model.named_parameters(), nn::AdamOptions{});
  const std::string path = (scratch.path() / name).string();
  fs::create_directories(scratch.path());
  nn::save_checkpoint(path, model, with_optimizer ? &opt : nullptr,
                      {{"config", config_to_json(cfg)}, {"vocab", vocab}, {"step", std::to_string(step)}});
  return path;
}

void touch(const fs::path& p) { std::ofstream(p.string()) << "x"; }

}  // namespace

TEST_SUITE("translate") {
  TEST_CASE("average_checkpoints: the elementwise mean, no optimizer state, the last step, refused mismatches") {
    const std::string a = constant_checkpoint("a.safetensors", 1, 100, /*with_optimizer=*/true);
    const std::string b = constant_checkpoint("b.safetensors", 2, 200);
    const std::string c = constant_checkpoint("c.safetensors", 6, 300);
    const std::string out = (scratch.path() / "mean.safetensors").string();
    average_checkpoints({a, b, c}, out);
    const nn::SafetensorsFile mean = nn::load_safetensors(out);
    CHECK(mean.metadata.at("step") == "300");
    CHECK(mean.metadata.at("averaged_from") == "a.safetensors,b.safetensors,c.safetensors");
    CHECK(mean.metadata.at("vocab") == "spm64.model");
    nn::Transformer model(tiny_transformer("pre_ln"));
    // parameters (1, 2 and 6: mean 3) and buffers (the same sinusoid table in every file), AdamW's m and v of `a`
    // left out
    CHECK(mean.tensors.size() == model.named_parameters().size() + model.named_buffers().size());
    for (auto& named : model.named_parameters()) {  // (no structured binding: clang's INFO cannot capture one)
      const std::string& name = named.first;
      const Tensor& p = named.second;
      INFO(name);
      const Tensor t = mean.find(name);
      REQUIRE(t.defined());
      CHECK(t.dtype() == DType::F32);
      CHECK(t.to_vector<float>() == std::vector<float>((size_t)p.numel(), 3.0f));
    }
    for (auto& named : model.named_buffers()) {
      INFO(named.first);
      CHECK(mean.find(named.first).to_vector<float>() == named.second.to_vector<float>());
    }
    nn::load_checkpoint(out, model, nullptr, /*restore_rng=*/false);  // loads into the model it came from

    CHECK_THROWS_WITH_ALL(average_checkpoints({}, out), "average_checkpoints", "no checkpoints");
    const std::string deeper = constant_checkpoint("deeper.safetensors", 1, 1, false, tiny_transformer("post_ln"));
    CHECK_THROWS_WITH_ALL(average_checkpoints({a, deeper}, out), "deeper.safetensors",
                          "different model configuration", "a.safetensors", "topology \"pre_ln\" vs \"post_ln\"");
    {  // a file written before the config recorded its positions: the same model, so it averages
      nlohmann::json before = nlohmann::json::parse(config_to_json(tiny_transformer("pre_ln")));
      before.erase("positions");
      before.erase("rope_theta");
      nn::Transformer m(tiny_transformer("pre_ln"));
      const std::string old = (scratch.path() / "old.safetensors").string();
      nn::save_checkpoint(old, m, nullptr, {{"config", before.dump()}, {"vocab", "spm64.model"}, {"step", "50"}});
      CHECK_NOTHROW(average_checkpoints({old, b}, (scratch.path() / "old_and_new.safetensors").string()));
    }
    const std::string other_vocab = constant_checkpoint("v.safetensors", 1, 1, false, tiny_transformer("pre_ln"),
                                                        "spm128.model");
    CHECK_THROWS_WITH_ALL(average_checkpoints({a, other_vocab}, out), "different vocabulary", "spm128.model");
    const std::string bare = (scratch.path() / "bare.safetensors").string();
    nn::save_safetensors(bare, {{"w", Tensor::zeros({2})}});
    CHECK_THROWS_WITH_ALL(average_checkpoints({bare, a}, out), "bare.safetensors", "no 'config' metadata");
    CHECK_THROWS_WITH_ALL(average_checkpoints({a, (scratch.path() / "missing.safetensors").string()}, out),
                          "missing.safetensors");
    // a corrupt input is refused by its checksum and the previous output stays whole
    const std::string corrupt = (scratch.path() / "corrupt.safetensors").string();
    fs::copy_file(b, corrupt);
    {
      std::fstream f(corrupt, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-3, std::ios::end);
      f.put('\x7f');
    }
    CHECK_THROWS_WITH_ALL(average_checkpoints({a, corrupt}, out), "corrupt.safetensors", "checksum");
    CHECK(nn::load_safetensors(out).metadata.at("step") == "300");
  }

  TEST_CASE("step checkpoints: found in step order (9 before 10), others ignored; pruning keeps the newest N") {
    const fs::path dir = scratch.path() / "steps";
    fs::create_directories(dir);
    for (const char* name : {"checkpoint_10.safetensors", "checkpoint_9.safetensors", "checkpoint_200.safetensors",
                             "checkpoint_last.safetensors", "checkpoint_best.safetensors",
                             "checkpoint_average.safetensors", "checkpoint_12.safetensors.tmp.77.1",
                             "checkpoint_.safetensors", "notes.txt"})
      touch(dir / name);
    auto names = [&] {
      std::vector<std::string> n;
      for (auto& p : step_checkpoints(dir.string())) n.push_back(fs::path(p).filename().string());
      return n;
    };
    CHECK(names() == std::vector<std::string>{"checkpoint_9.safetensors", "checkpoint_10.safetensors",
                                              "checkpoint_200.safetensors"});
    prune_step_checkpoints(dir.string(), 2);
    CHECK(names() == std::vector<std::string>{"checkpoint_10.safetensors", "checkpoint_200.safetensors"});
    CHECK(fs::exists(dir / "checkpoint_last.safetensors"));
    CHECK(step_checkpoints((scratch.path() / "no_such_folder").string()).empty());
  }

  TEST_CASE("train --keep-last 3 keeps the models of its last 3 saves; their mean evaluates like a checkpoint") {
    TrainOptions o = tiny_train_options(write_tiny_corpus(scratch.path() / "corpus", 400));
    o.max_steps = 10;
    o.save_every = 3;
    o.keep_last = 3;
    o.out_dir = (scratch.path() / "run").string();
    train(o);
    std::vector<std::string> kept = step_checkpoints(o.out_dir);  // saves at 3, 6, 9 and the end, 10
    REQUIRE(kept.size() == 3);
    CHECK(fs::path(kept[0]).filename() == "checkpoint_6.safetensors");
    CHECK(fs::path(kept[2]).filename() == "checkpoint_10.safetensors");
    for (auto& p : kept) CHECK(fs::file_size(p) < fs::file_size(o.out_dir + "/checkpoint_last.safetensors"));
    const std::string out = o.out_dir + "/checkpoint_average.safetensors";
    average_checkpoints(kept, out);
    EvalOptions e;
    e.checkpoint = out;
    e.data = o;
    e.beam = 1;
    e.test_sentences = 4;
    const EvalResult r = evaluate_checkpoint(e);
    CHECK(r.step == 10);
    CHECK(std::isfinite(r.loss));
    CHECK(r.loss > 0);

    // The checkpoints carry their vocabulary: with the SentencePiece file gone they score the same.
    const fs::path spm = scratch.path() / "corpus" / "spm64.model", moved = scratch.path() / "spm64.model.away";
    fs::rename(spm, moved);
    const EvalResult again = evaluate_checkpoint(e);
    fs::rename(moved, spm);
    CHECK(again.loss == r.loss);
    CHECK(again.hypotheses == r.hypotheses);
    // a checkpoint from before the vocabulary was stored averages with one that stores it, keeping the stored copy
    nn::SafetensorsFile old = nn::load_safetensors(kept[0]);
    old.metadata.erase("vocab_model");
    const std::string old_path = (scratch.path() / "old.safetensors").string();
    nn::save_safetensors(old_path, old.tensors, old.metadata);
    average_checkpoints({old_path, kept[2]}, out);
    CHECK(nn::load_safetensors(out).metadata.count("vocab_model") == 1);
    // A fresh run into the same folder moves the earlier run's step checkpoints to previous_run/: they would
    // outrank its own.
    o.max_steps = 4;
    o.save_every = 2;
    train(o);
    std::vector<std::string> names;
    for (auto& p : step_checkpoints(o.out_dir)) names.push_back(fs::path(p).filename().string());
    CHECK(names == std::vector<std::string>{"checkpoint_2.safetensors", "checkpoint_4.safetensors"});
    CHECK_THROWS_WITH_ALL(Vocab::from_base64("not base64!", "x.safetensors"), "x.safetensors", "not base64");
    CHECK_THROWS_WITH_ALL(Vocab::from_base64("AAAA", "y.safetensors"), "y.safetensors", "not a SentencePiece model");
  }
}
