// Subword vocabulary: a joint SentencePiece model (unigram) trained on the training split's two sides and cached
// next to the data. Ids: 0 = <pad>, 1 = <unk>, 2 = <s> (bos), 3 = </s> (eos).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace translate {

class Vocab {
 public:
  static constexpr int kPad = 0, kUnk = 1, kBos = 2, kEos = 3;

  // Loads `model_path` when it exists, otherwise trains it on `train` (both sides) and saves it there.
  // `model_path` + ".source" records what it was trained on and the model file's hash; a model made from other
  // text, or changed since it was written, is trained again.
  static Vocab load_or_train(const std::string& model_path, const std::vector<Pair>& train, int vocab_size);
  // What a vocabulary of `vocab_size` pieces trained on `train` is made from, as one line (a hash of the text):
  // kept beside a cached model and in checkpoints, to tell when the data changed.
  static std::string fingerprint(const std::vector<Pair>& train, int vocab_size);
  // Whether `model_path` is cached and was trained on other text than `train` (load_or_train would retrain it).
  static bool cached_for_other_text(const std::string& model_path, const std::vector<Pair>& train, int vocab_size);
  static Vocab load(const std::string& model_path);
  // The model file's bytes, base64-encoded, and back: checkpoints carry their vocabulary this way ("vocab_model"), so
  // they translate wherever they are copied. `name` only names it in errors and path().
  std::string to_base64() const;
  static Vocab from_base64(const std::string& text, const std::string& name);
  ~Vocab();
  Vocab(Vocab&&) noexcept;
  Vocab& operator=(Vocab&&) noexcept;

  int size() const;
  std::vector<int> encode(const std::string& text) const;  // no bos/eos
  std::string decode(const std::vector<int>& ids) const;   // stops at eos, skips pad/bos
  const std::string& path() const { return path_; }

 private:
  Vocab() = default;
  // A model from its serialized bytes (a file's, or a checkpoint's): `name` names it in errors (as `what`, for
  // `op`) and path().
  static Vocab from_model(const std::string& bytes, const std::string& name, const char* op, const std::string& what);
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace translate
