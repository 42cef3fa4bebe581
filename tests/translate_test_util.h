// What the translation-example tests (SKIPGRAD_TRANSLATE_TESTS in CMakeLists.txt) share: one tiny training
// configuration that trains in a fraction of a second.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>

#include "data.h"
#include "trainer.h"

namespace sgtest {

// "<temp>/<name>_<pid>": a folder of this test process, removed with everything in it when the object is destroyed
// (a file-scope object: when the process exits).
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {}
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A number-words corpus of `pairs` pairs (train/valid/test.tsv) written into `dir` unless it is there already;
// returns the folder, to pass as TrainOptions::corpus.
inline std::string write_tiny_corpus(const std::filesystem::path& dir, int pairs) {
  if (!std::filesystem::exists(dir / "test.tsv")) {
    std::filesystem::create_directories(dir);
    translate::Splits s = translate::make_number_corpus(pairs, 7, 9999);
    translate::write_tsv((dir / "train.tsv").string(), s.train);
    translate::write_tsv((dir / "valid.tsv").string(), s.valid);
    translate::write_tsv((dir / "test.tsv").string(), s.test);
  }
  return dir.string();
}

// 1+1 layers, d = 16, 2 heads, FFN 32, vocabulary 64, sentences up to 24 tokens, batches of 192 tokens, lr 3e-3
// after 5 warm-up steps, quiet; dropout as TransformerConfig's default; no periodic evaluation or save, 2 sentences
// decoded greedily for the final BLEU. The caller names the corpus and sets the steps, what it needs of evaluation
// and saving, and the output folder.
inline translate::TrainOptions tiny_train_options(const std::string& corpus) {
  translate::TrainOptions o;
  o.corpus = corpus;
  o.vocab_size = 64;
  o.max_len = 24;
  o.model.enc_layers = o.model.dec_layers = 1;
  o.model.d_model = 16;
  o.model.heads = 2;
  o.model.d_ff = 32;
  o.lr = 3e-3;
  o.warmup = 5;
  o.max_tokens = 192;
  o.quiet = true;
  o.eval_every = o.save_every = 0;
  o.eval_sentences = o.test_sentences = 2;
  o.beam = 1;
  return o;
}

}  // namespace sgtest
