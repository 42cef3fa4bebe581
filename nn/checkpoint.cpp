#include "nn/checkpoint.h"
#include "nn/checkpoint_optim.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>

#include "autograd/tape.h"
#include "tensor/files.h"
#include "tensor/random.h"

namespace skipgrad::nn {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so must the host be");

using json = nlohmann::json;

namespace {
constexpr const char* kChecksumKey = "skipgrad.checksum";
constexpr const char* kHeaderChecksumKey = "skipgrad.header_checksum";
constexpr const char* kModelKindKey = "skipgrad.model";  // Module::kind()
constexpr const char* kOptimPrefix = "optim.";
// The checksums cover the file as written (the header's text, the data in file order): a file another tool
// rewrote, even with the same values (Python's save_file sorts the tensors), no longer matches them.
constexpr const char* kRewrittenHint =
    " (or another tool rewrote the file and kept skipgrad's metadata: drop its 'skipgrad.checksum' and "
    "'skipgrad.header_checksum' entries to load it unchecked)";
constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the Python package's limit

const char* safetensors_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::BF16: return "BF16";
  }
  return "?";
}
bool parse_dtype(const std::string& s, DType& out) {
  for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32, DType::BF16})
    if (s == safetensors_dtype(t)) {
      out = t;
      return true;
    }
  return false;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

// Whether nlohmann can write s as a JSON string (it refuses text that is not UTF-8).
bool writable_as_json(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

// Whether a and b have one length and differ in exactly one byte.
bool one_byte_apart(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); i++) differ += a[i] != b[i];
  return differ == 1;
}

// FNV-1a 64 of the header as JSON text (nlohmann's objects keep their keys sorted, so a parsed header dumps to the
// same text), without its own checksum entry: what "skipgrad.header_checksum" holds.
std::string header_checksum(json header) {
  header["__metadata__"].erase(kHeaderChecksumKey);
  const std::string text = header.dump();
  return hex64(fnv1a64(text.data(), text.size()));
}

// A contiguous cpu copy of t (t itself when it already is one).
Tensor host_contiguous(const Tensor& t) {
  Tensor c = t.detach();
  if (!c.device().is_cpu()) c = c.to(Device::cpu());
  return c.is_contiguous() ? c : c.contiguous();
}
}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t hash) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; i++) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

Tensor SafetensorsFile::find(const std::string& name) const {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  return Tensor();
}

// ---------------------------------------------------------------- save

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  NoGradGuard no_grad;
  json header = json::object();
  std::vector<Tensor> blobs;
  std::set<std::string> names;
  uint64_t offset = 0, checksum = fnv1a64(nullptr, 0);
  for (auto& [name, t] : tensors) {
    check(!name.empty() && name != "__metadata__", "save_safetensors", ": '", path, "': invalid tensor name '",
          name, "'");
    check(names.insert(name).second, "save_safetensors", ": '", path, "': tensor '", name, "' given twice");
    check(t.defined(), "save_safetensors", ": '", path, "': tensor '", name, "' is undefined");
    Tensor c = host_contiguous(t);
    const uint64_t n = c.nbytes();
    header[name] = {{"dtype", safetensors_dtype(c.dtype())}, {"shape", c.shape()}, {"data_offsets", {offset, offset + n}}};
    checksum = fnv1a64(c.data_ptr(), n, checksum);
    offset += n;
    blobs.push_back(c);
  }
  json meta = json::object();
  for (auto& [k, v] : metadata) meta[k] = v;
  meta[kChecksumKey] = hex64(checksum);
  header["__metadata__"] = meta;
  std::string text;
  try {
    header["__metadata__"][kHeaderChecksumKey] = header_checksum(header);
    text = header.dump();
  } catch (const json::exception&) {  // nlohmann refuses to write a string that is not UTF-8
    for (auto& [name, t] : tensors)
      if (!writable_as_json(name))
        fail("save_safetensors", ": '", path, "': tensor name '", name, "' is not valid UTF-8");
    for (auto& [k, v] : metadata)
      if (!writable_as_json(k) || !writable_as_json(v))
        fail("save_safetensors", ": '", path, "': metadata entry '", k, "' is not valid UTF-8");
    throw;
  }
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // pad so the data starts 8-byte aligned
  std::string prefix(8, '\0');
  const uint64_t len = text.size();
  std::memcpy(prefix.data(), &len, 8);
  // atomic (temporary, fsync, rename, fsync of the folder): a crash leaves the old file or the new one, never a mix
  std::vector<std::string_view> pieces = {prefix, text};
  for (const Tensor& b : blobs) pieces.emplace_back(static_cast<const char*>(b.data_ptr()), b.nbytes());
  write_file_atomic(path, pieces, "save_safetensors");
}

// ---------------------------------------------------------------- load

SafetensorsFile load_safetensors(const std::string& path) {
  return parse_safetensors(read_file(path, "load_safetensors"), path);
}

SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& path) {
  const char* op = "load_safetensors";
  const uint64_t size = bytes.size();
  check(size >= 8, op, ": '", path, "' is truncated: ", size, " bytes, less than the 8-byte header length");
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  check(header_len <= kMaxHeaderBytes, op, ": '", path, "' has a bad header: its length field says ", header_len,
        " bytes");
  check(header_len <= size - 8, op, ": '", path, "' is truncated: the header needs ", header_len, " bytes, the file has ",
        size - 8, " after the length field");
  const char* header_begin = bytes.data() + 8;
  // (a NUL byte never belongs in JSON text, and nlohmann would take it for the end of the input: a header padded
  // with NULs, which the Python package refuses, would pass)
  check(std::memchr(header_begin, 0, header_len) == nullptr, op, ": '", path,
        "' has a bad header: a NUL byte in its JSON");
  json header = json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  check(!header.is_discarded() && header.is_object() && header_len > 0 && header_begin[0] == '{', op, ": '", path,
        "' has a bad header: not a JSON object");

  SafetensorsFile file;
  if (header.contains("__metadata__")) {
    const json& meta = header["__metadata__"];
    check(meta.is_object(), op, ": '", path, "' has a bad header: __metadata__ is not a string map");
    for (auto& [k, v] : meta.items()) {
      check(v.is_string(), op, ": '", path, "' has a bad header: __metadata__ entry '", k, "' is not a string");
      file.metadata[k] = v.get<std::string>();
    }
  }

  // Each tensor's entry, then a check that the entries tile the data section exactly.
  struct Entry { std::string name; DType dtype; Shape shape; uint64_t begin, end; };
  std::vector<Entry> entries;
  for (auto& item : header.items()) {  // not a structured binding: clang 14 cannot capture one in a lambda
    const std::string& name = item.key();
    const json& e = item.value();
    if (name == "__metadata__") continue;
    auto bad = [&](const char* what) { fail(op, ": '", path, "' has a bad header: tensor '", name, "' ", what); };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      bad("needs dtype, shape and data_offsets");
    Entry en{name, DType::F32, {}, 0, 0};
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), en.dtype))
      bad("has a dtype skipgrad does not read (F32, F64, BF16, I64, I32)");
    if (!e["shape"].is_array()) bad("has a shape that is not a list");
    // span: the product with zero sizes counted as 1, the largest stride; [0, 2^40, 2^40] holds nothing but its
    // strides overflow (fuzz/corpus/safetensors/zero_dim_huge_strides.st).
    uint64_t numel = 1, span = 1;
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40)) bad("has a shape with a bad dimension");
      en.shape.push_back(d.get<int64_t>());
      if (__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel) ||
          __builtin_mul_overflow(span, std::max<uint64_t>(d.get<uint64_t>(), 1), &span) || span > (1ull << 60))
        bad("has a shape too large to exist");
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("has data_offsets that are not two non-negative integers");
    en.begin = off[0].get<uint64_t>();
    en.end = off[1].get<uint64_t>();
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, (uint64_t)dtype_size(en.dtype), &nbytes)) bad("has a shape too large to exist");
    if (en.end < en.begin || en.end - en.begin != nbytes) bad("has data_offsets that do not fit its dtype and shape");
    entries.push_back(std::move(en));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_size = size - 8 - header_len;
  uint64_t expected = 0;
  for (const Entry& en : entries) {
    check(en.begin == expected, op, ": '", path, "' has a bad header: tensor '", en.name, "' starts at byte ",
          en.begin, " of the data, expected ", expected, " (overlap or gap)");
    expected = en.end;
  }
  check(expected <= data_size, op, ": '", path, "' is truncated: the header describes ", expected,
        " bytes of data, the file holds ", data_size,
        entries.empty() ? std::string() : "; the last tensor is '" + entries.back().name + "'");
  check(expected == data_size, op, ": '", path, "' has ", data_size - expected, " unexpected bytes after the last tensor");

  const char* data = header_begin + header_len;
  // A data checksum without the header's: a file from before the header checksum (2026-12-05), unless a key one
  // byte away from the header checksum's name is there, that name damaged, which would switch the header's check off.
  // Searched in the raw text, at every quoted string of the key's length (a damaged byte can also be a '\' that
  // JSON decodes into another length; a damaged quote breaks the JSON itself).
  if (file.metadata.count(kChecksumKey) && !file.metadata.count(kHeaderChecksumKey)) {
    const std::string_view key = kHeaderChecksumKey;
    for (uint64_t at = 1; at + key.size() < header_len; at++)
      if (header_begin[at - 1] == '"' && header_begin[at + key.size()] == '"' &&
          one_byte_apart(std::string_view(header_begin + at, key.size()), key))
        fail(op, ": '", path, "' is corrupted: '", std::string(header_begin + at, key.size()), "' in its header is '",
             key, "' with a damaged byte");
  }
  if (auto it = file.metadata.find(kHeaderChecksumKey); it != file.metadata.end()) {
    const std::string computed = header_checksum(header);
    check(computed == it->second, op, ": '", path, "' is corrupted: checksum of the header is ", computed,
          ", the header says ", it->second, kRewrittenHint);
  }
  if (auto it = file.metadata.find(kChecksumKey); it != file.metadata.end()) {
    const std::string computed = hex64(fnv1a64(data, data_size));
    check(computed == it->second, op, ": '", path, "' is corrupted: checksum of the data is ", computed,
          ", the header says ", it->second, kRewrittenHint);
  }
  for (const Entry& en : entries) {
    Tensor t = Tensor::empty(en.shape, en.dtype, Device::cpu());
    if (en.end > en.begin) std::memcpy(t.data_ptr(), data + en.begin, en.end - en.begin);
    file.tensors.emplace_back(en.name, t);
  }
  return file;
}

// ---------------------------------------------------------------- checkpoints

namespace {
// The model's parameters and buffers, by full name: a tied tensor under each of its names (as torch's state_dict).
NamedTensors model_tensors(const Module& model) {
  NamedTensors out = model.named_parameters("", false);
  for (auto& b : model.named_buffers()) out.push_back(b);
  return out;
}

// A tensor tied under two names gets one value: refuses sources that differ for two names of one tensor (an untied
// model's file loaded into a tied model would otherwise keep whichever came last).
void check_tied_sources(const char* op, const std::string& where, const NamedTensors& dest,
                        const std::vector<Tensor>& sources) {
  std::map<const TensorImpl*, size_t> first;
  for (size_t i = 0; i < dest.size(); i++) {
    auto [it, inserted] = first.emplace(&dest[i].second.impl(), i);
    if (inserted) continue;
    const Tensor a = sources[it->second].to(Device::cpu()).contiguous(), b = sources[i].to(Device::cpu()).contiguous();
    const bool same = a.dtype() == b.dtype() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
    check(same, op, where, ": '", dest[it->second].first, "' and '", dest[i].first, "' are one tied tensor in the "
          "model but have different values here (saved from an untied model?)");
  }
}

// Every buffer's source passes its module's check_loaded_buffer (T5's buckets must be its settings' own). `source`
// gives the tensor for a buffer's full name (one that the caller has checked is there).
void check_loaded_buffers(const char* op, const std::string& where, Module& model,
                          const std::function<Tensor(const std::string&)>& source) {
  for (auto& [path, m] : model.named_modules())
    for (auto& [name, t] : m->named_buffers()) {
      if (name.find('.') != std::string::npos) continue;  // a child's, checked with the child
      const std::string full = path.empty() ? name : path + "." + name;
      m->check_loaded_buffer(name, source(full), std::string(op) + where + ": buffer '" + full + "'");
    }
}

}  // namespace

NamedTensors state_dict(const Module& model) { return model_tensors(model); }

void load_state_dict(Module& model, const NamedTensors& tensors) {
  const char* op = "load_state_dict";
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : tensors) check(given.emplace(name, &t).second, op, ": tensor '", name, "' given twice");
  NamedTensors dest = model_tensors(model);
  std::set<std::string> expected;
  for (const auto& [name, t] : dest) expected.insert(name);
  for (const auto& [name, t] : tensors)
    check(expected.count(name), op, ": tensor '", name, "', which the model does not have");
  std::vector<Tensor> sources;
  for (const auto& [name, t] : dest) {
    auto it = given.find(name);
    if (it == given.end()) {
      const TensorImpl* impl = &t.impl();  // (not the binding itself: clang 14 cannot capture one)
      const bool tied = std::count_if(dest.begin(), dest.end(), [impl](const auto& d) {
        return &d.second.impl() == impl;
      }) > 1;
      fail(op, ": no tensor '", name, "' for the model's ", t.meta_str(),
           tied ? " (a tied parameter: state_dict(model) lists it under each of its names; named_parameters() "
                  "under the first only)"
                : "");
    }
    const Tensor& src = *it->second;
    check(src.defined() && src.shape() == t.shape(), op, ": tensor '", name, "' is ",
          src.defined() ? src.meta_str() : "undefined", ", the model's ", t.meta_str());
    // floating dtypes convert into each other (a float32 model's weights into its float64 copy); integers would
    // become weights (or weights be truncated into ids) without a word
    if (is_floating(src.dtype()) ? !is_floating(t.dtype()) : src.dtype() != t.dtype())
      fail(op, ": tensor '", name, "' is ", src.meta_str(), ", the model's ", t.meta_str(),
           ": only floating dtypes convert into each other");
    sources.push_back(src);
  }
  check_tied_sources(op, "", dest, sources);
  check_loaded_buffers(op, "", model, [&given](const std::string& name) { return *given.at(name); });
  NoGradGuard no_grad;
  for (size_t i = 0; i < dest.size(); i++) dest[i].second.copy_(sources[i]);
}

void save_checkpoint(const std::string& path, const Module& model, const Optimizer* optimizer, const Metadata& metadata) {
  Metadata meta;
  for (auto& [k, v] : metadata) {
    check(k.rfind("skipgrad.", 0) != 0, "save_checkpoint", ": metadata key '", k, "' is reserved (skipgrad.*)");
    meta[k] = v;
  }
  NamedTensors tensors = model_tensors(model);
  if (optimizer) {
    for (auto& [name, t] : optimizer->named_state()) tensors.emplace_back(kOptimPrefix + name, t);
    for (auto& [k, v] : optimizer_metadata(*optimizer)) meta[k] = v;
  }
  if (const std::string kind = model.kind(); !kind.empty()) meta[kModelKindKey] = kind;
  meta["skipgrad.rng.seed"] = std::to_string(default_generator().seed());
  meta["skipgrad.rng.offset"] = std::to_string(default_generator().offset());
  save_safetensors(path, tensors, meta);
}

Metadata load_checkpoint(const std::string& path, Module& model, Optimizer* optimizer, bool restore_rng) {
  return load_checkpoint(load_safetensors(path), path, model, optimizer, restore_rng);
}

Metadata load_checkpoint(const SafetensorsFile& file, const std::string& path, Module& model, Optimizer* optimizer,
                         bool restore_rng) {
  const char* op = "load_checkpoint";
  if (auto it = file.metadata.find(kModelKindKey); it != file.metadata.end()) {
    const std::string kind = model.kind();
    check(kind.empty() || model.reads_kind(it->second), op, ": '", path, "' holds a ", it->second, "; the model is a ",
          kind);
  }

  // Every destination, with the file's tensor for it, checked before anything is copied.
  NamedTensors dest = model_tensors(model);
  std::set<std::string> expected;
  for (auto& [name, t] : dest) expected.insert(name);
  OptimizerRecord record;
  if (optimizer) {
    record = read_optimizer_metadata(file.metadata, *optimizer, path);
    for (auto& [name, t] : optimizer->named_state()) {
      dest.emplace_back(kOptimPrefix + name, t);
      expected.insert(kOptimPrefix + name);
    }
  }
  for (auto& [name, t] : file.tensors) {
    if (!optimizer && name.rfind(kOptimPrefix, 0) == 0) continue;
    check(expected.count(name), op, ": '", path, "' has tensor '", name, "', which the ",
          name.rfind(kOptimPrefix, 0) == 0 ? "optimizer" : "model", " does not have");
  }
  std::vector<Tensor> sources;
  for (auto& [name, t] : dest) {
    Tensor src = file.find(name);
    check(src.defined(), op, ": '", path, "' has no tensor '", name, "'");
    const char* owner = name.rfind(kOptimPrefix, 0) == 0 ? "optimizer" : "model";
    check(src.shape() == t.shape(), op, ": '", path, "': tensor '", name, "' has shape ", src.shape(),
          " in the file but ", t.shape(), " in the ", owner);
    check(src.dtype() == t.dtype(), op, ": '", path, "': tensor '", name, "' is ", dtype_name(src.dtype()),
          " in the file but ", dtype_name(t.dtype()), " in the ", owner);
    sources.push_back(src);
  }
  check_tied_sources(op, ": '" + path + "'", dest, sources);
  check_loaded_buffers(op, ": '" + path + "'", model, [&file](const std::string& name) { return file.find(name); });
  const bool has_rng = file.metadata.count("skipgrad.rng.seed") && file.metadata.count("skipgrad.rng.offset");
  uint64_t seed = 0, offset = 0;
  if (restore_rng && has_rng) {
    seed = parse_u64(file.metadata, "skipgrad.rng.seed", path);
    offset = parse_u64(file.metadata, "skipgrad.rng.offset", path);
  }

  // The settings are checked by setting them (undone if one is refused); then every check has passed: copy in place.
  if (optimizer) restore_optimizer_settings(*optimizer, record, path);
  NoGradGuard no_grad;
  for (size_t i = 0; i < dest.size(); i++) dest[i].second.copy_(sources[i]);
  if (optimizer) restore_optimizer_record(*optimizer, record);
  if (restore_rng && has_rng) default_generator().set_state(seed, offset);
  return file.metadata;
}

}  // namespace skipgrad::nn
