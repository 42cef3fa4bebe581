#include "vocab.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "analysis/graph.h"
#include "nn/checkpoint.h"
#include "tensor/error.h"

namespace translate {

using skipgrad::check;

Vocab::~Vocab() = default;
Vocab::Vocab(Vocab&&) noexcept = default;
Vocab& Vocab::operator=(Vocab&&) noexcept = default;

static bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

namespace {
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// RFC 4648 base64 with '=' padding.
std::string base64_encode(const std::string& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t k = 0; k < 3; k++) v = v << 8 | (k < n ? (unsigned char)bytes[i + k] : 0);
    for (size_t k = 0; k < 4; k++) out += k <= n ? kBase64[(v >> (18 - 6 * k)) & 63] : '=';
  }
  return out;
}

// The bytes of base64 `text`; false when it is not base64.
bool base64_decode(const std::string& text, std::string& bytes) {
  if (text.size() % 4) return false;
  bytes.clear();
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; k++) {
      const char c = text[i + k];
      const char* at = c ? std::strchr(kBase64, c) : nullptr;
      if (c == '=' && i + 4 == text.size() && k >= 2) pad++;
      else if (!at || pad) return false;
      v = v << 6 | (at ? (uint32_t)(at - kBase64) : 0);
    }
    for (int k = 0; k < 3 - pad; k++) bytes += (char)((v >> (16 - 8 * k)) & 255);
  }
  return true;
}
}  // namespace

// Checks that a loaded model numbers its special pieces as the example does.
static void check_special_ids(const sentencepiece::SentencePieceProcessor& sp, const std::string& name) {
  check(sp.pad_id() == Vocab::kPad && sp.eos_id() == Vocab::kEos && sp.bos_id() == Vocab::kBos, "Vocab::load",
        ": model '", name, "' does not use pad=0 unk=1 bos=2 eos=3");
}

Vocab Vocab::from_model(const std::string& bytes, const std::string& name, const char* op, const std::string& what) {
  Vocab v;
  v.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto status = v.sp_->LoadFromSerializedProto(bytes);
  check(status.ok(), op, ": ", what, " is not a SentencePiece model: ", status.ToString());
  check_special_ids(*v.sp_, name);
  v.path_ = name;
  return v;
}

Vocab Vocab::load(const std::string& model_path) {
  return from_model(skipgrad::read_file(model_path, "Vocab::load"), model_path, "Vocab::load",
                    "model '" + model_path + "'");
}

std::string Vocab::to_base64() const { return base64_encode(sp_->serialized_model_proto()); }

Vocab Vocab::from_base64(const std::string& text, const std::string& name) {
  std::string bytes;
  check(base64_decode(text, bytes), "Vocab::from_base64", ": the vocabulary stored in '", name, "' is not base64");
  return from_model(bytes, name, "Vocab::from_base64", "the vocabulary stored in '" + name + "'");
}

// What a vocabulary was trained on: FNV-1a (64 bits) of the training text and the requested size, as one line
// (kept beside the model as "<model>.source", and in checkpoints), so a model made for other data is not reused.
std::string Vocab::fingerprint(const std::vector<Pair>& train, int vocab_size) {
  uint64_t h = skipgrad::nn::fnv1a64(nullptr, 0);  // of the TSV text, "src\ttgt\n" a pair, as checksums hash
  auto add = [&h](std::string_view bytes) { h = skipgrad::nn::fnv1a64(bytes.data(), bytes.size(), h); };
  for (const Pair& p : train) {
    add(p.src);
    add("\t");
    add(p.tgt);
    add("\n");
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "fnv1a64 %016llx pairs %zu vocab_size %d", (unsigned long long)h, train.size(),
                vocab_size);
  return buf;
}

namespace {
// Both sides of every pair, a sentence at a time: SentencePiece reads no file, so no path is parsed (its `input`
// option splits on commas).
class PairSentences : public sentencepiece::SentenceIterator {
 public:
  explicit PairSentences(const std::vector<Pair>& pairs) : pairs_(pairs) { set(); }
  bool done() const override { return i_ >= 2 * pairs_.size(); }
  void Next() override {
    ++i_;
    set();
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void set() {
    if (!done()) value_ = i_ % 2 ? pairs_[i_ / 2].tgt : pairs_[i_ / 2].src;
  }
  const std::vector<Pair>& pairs_;
  size_t i_ = 0;
  std::string value_;
};
}  // namespace

// "<model>.source": the training text's fingerprint on its first line, then (since 2026-12-06) "model fnv1a64 <h>",
// the hash of the model file's bytes as they were written: a cached model changed or damaged since (SentencePiece
// reads a model with a flipped piece without a word) is trained again rather than used.
namespace {
std::string model_line(const std::string& model_bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "model fnv1a64 %016llx",
                (unsigned long long)skipgrad::nn::fnv1a64(model_bytes.data(), model_bytes.size()));
  return buf;
}
struct SourceRecord {
  std::string text;   // the fingerprint of the training text
  std::string model;  // model_line of the model file; "" in a record from before 2026-12-06
};
SourceRecord read_record(const std::string& source_path) {
  const std::string all = skipgrad::read_file(source_path, "Vocab::load_or_train");
  const size_t end = all.find('\n');
  SourceRecord r{all.substr(0, end), ""};
  if (end != std::string::npos) r.model = all.substr(end + 1, all.find('\n', end + 1) - end - 1);
  return r;
}
std::string record_text(const std::string& fingerprint, const std::string& model_bytes) {
  return fingerprint + "\n" + model_line(model_bytes) + "\n";
}
}  // namespace

bool Vocab::cached_for_other_text(const std::string& model_path, const std::vector<Pair>& train, int vocab_size) {
  return file_exists(model_path) && file_exists(model_path + ".source") &&
         read_record(model_path + ".source").text != fingerprint(train, vocab_size);
}

Vocab Vocab::load_or_train(const std::string& model_path, const std::vector<Pair>& train, int vocab_size) {
  const std::string source_path = model_path + ".source", source = fingerprint(train, vocab_size);
  auto loaded = [&](const std::string& bytes) {  // (the file read once: hashed, then parsed)
    return from_model(bytes, model_path, "Vocab::load", "model '" + model_path + "'");
  };
  if (file_exists(model_path)) {
    const bool recorded = file_exists(source_path);
    const SourceRecord record = recorded ? read_record(source_path) : SourceRecord{source, ""};
    if (record.text != source) {
      std::printf("vocabulary: %s was trained on other text (the corpus changed since): training it again\n",
                  model_path.c_str());
    } else {
      const std::string bytes = skipgrad::read_file(model_path, "Vocab::load");
      if (!recorded) {  // cached before 2026-12-06, when no fingerprint was kept: taken as this text's
        try {
          skipgrad::write_file_atomic(source_path, record_text(source, bytes));
        } catch (const skipgrad::Error&) {  // a read-only corpus folder: used as before, without the record
        }
        return loaded(bytes);
      }
      if (record.model.empty() || record.model == model_line(bytes)) return loaded(bytes);
      std::printf("vocabulary: %s is not the file that was trained (changed or damaged since): training it again\n",
                  model_path.c_str());
    }
  }
  check(!train.empty(), "Vocab::load_or_train", ": no training text to build a vocabulary from");
  const std::unordered_map<std::string, std::string> options = {
      {"vocab_size", std::to_string(vocab_size)}, {"model_type", "unigram"}, {"character_coverage", "1.0"},
      {"pad_id", "0"}, {"unk_id", "1"}, {"bos_id", "2"}, {"eos_id", "3"}, {"hard_vocab_limit", "false"},
      {"minloglevel", "2"}, {"num_threads", "1"}};
  PairSentences sentences(train);
  std::string model;  // the trained model's bytes, written here atomically: a killed run leaves no half a model
  auto status = sentencepiece::SentencePieceTrainer::Train(options, &sentences, &model);
  check(status.ok(), "Vocab::load_or_train", ": SentencePiece training of a vocabulary of ", vocab_size,
        " pieces (--vocab-size) failed: ", status.ToString(),
        vocab_size < 16 ? " (the 4 special pieces and the corpus's characters need a larger --vocab-size)" : "");
  try {
    skipgrad::write_file_atomic(model_path, model);
  } catch (const skipgrad::Error& e) {
    skipgrad::fail("Vocab::load_or_train", ": the vocabulary is built beside the corpus, whose folder must be "
                   "writable: ", e.what());
  }
  skipgrad::write_file_atomic(source_path, record_text(source, model));
  return loaded(model);
}

int Vocab::size() const { return sp_->GetPieceSize(); }

std::vector<int> Vocab::encode(const std::string& text) const {
  std::vector<int> ids;
  auto status = sp_->Encode(text, &ids);
  check(status.ok(), "Vocab::encode", ": ", status.ToString());
  return ids;
}

std::string Vocab::decode(const std::vector<int>& ids) const {
  std::vector<int> clean;
  for (int id : ids) {
    if (id == kEos) break;
    if (id == kPad || id == kBos) continue;
    clean.push_back(id);
  }
  std::string out;
  auto status = sp_->Decode(clean, &out);
  check(status.ok(), "Vocab::decode", ": ", status.ToString());
  return out;
}

}  // namespace translate
