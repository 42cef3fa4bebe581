#include "average.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "autograd/ops.h"
#include "config_json.h"
#include "nn/checkpoint.h"
#include "tensor/error.h"

namespace translate {

using namespace skipgrad;
namespace fs = std::filesystem;

namespace {

// The step of "checkpoint_<digits>.safetensors", or -1 for any other name (checkpoint_last, checkpoint_best, temps).
int64_t step_of(const std::string& name) {
  const std::string prefix = "checkpoint_", suffix = ".safetensors";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(digits);
}

bool is_optimizer_state(const std::string& name) { return name.rfind("optim.", 0) == 0; }  // nn/checkpoint.h

const std::string& required(const nn::SafetensorsFile& f, const std::string& key, const std::string& path) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end())
    fail("average_checkpoints", ": '", path, "' has no '", key,
         "' metadata: not a checkpoint of skipgrad-translate train");
  return it->second;
}

// metadata[key], or "" when the file has none (the checkpoints of 2026-12-04 and before have no "vocab_model").
std::string metadata_or(const nn::SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata.find(key);
  return it == f.metadata.end() ? std::string() : it->second;
}

}  // namespace

std::vector<std::string> step_checkpoints(const std::string& dir) {
  std::map<int64_t, std::string> by_step;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    const int64_t step = step_of(e.path().filename().string());
    if (step >= 0) by_step[step] = e.path().string();
  }
  std::vector<std::string> paths;
  for (auto& kv : by_step) paths.push_back(kv.second);
  return paths;
}

size_t set_aside_earlier_run(const std::string& dir, const std::vector<std::string>& checkpoints,
                             const std::string& log) {
  std::vector<std::string> files = step_checkpoints(dir);
  for (const std::string& f : checkpoints)
    if (fs::exists(f)) files.push_back(f);
  if (files.empty()) return 0;
  if (fs::exists(log)) files.push_back(log);
  const fs::path keep = fs::path(dir) / "previous_run", tmp = fs::path(dir) / "previous_run.tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // a half-made one of an earlier failure (its files were put back)
  fs::create_directory(tmp, ec);
  if (ec) fail("train", ": cannot make '", tmp.string(), "' for the earlier run's files: ", ec.message());
  std::vector<std::string> moved;
  auto put_back = [&] {
    std::error_code ignored;
    for (const std::string& f : moved) fs::rename(tmp / fs::path(f).filename(), f, ignored);
  };
  for (const std::string& f : files) {
    fs::rename(f, tmp / fs::path(f).filename(), ec);
    if (ec) {
      put_back();
      fail("train", ": cannot move the earlier run's '", f, "' into '", tmp.string(), "': ", ec.message());
    }
    moved.push_back(f);
  }
  fs::remove_all(keep, ec);
  if (!ec) fs::rename(tmp, keep, ec);
  if (ec) {
    put_back();
    fail("train", ": cannot replace '", keep.string(), "' with the earlier run's files: ", ec.message());
  }
  return files.size();
}

void prune_step_checkpoints(const std::string& dir, int keep) {
  const std::vector<std::string> paths = step_checkpoints(dir);
  for (size_t i = 0; i + (size_t)std::max(keep, 0) < paths.size(); i++) {
    std::error_code ec;
    fs::remove(paths[i], ec);
    check(!ec, "train", ": cannot remove the old checkpoint '", paths[i], "': ", ec.message());
  }
}

void average_checkpoints(const std::vector<std::string>& inputs, const std::string& out) {
  check(!inputs.empty(), "average_checkpoints", ": no checkpoints to average");
  for (const std::string& in : inputs) {
    std::error_code ec;
    check(!fs::equivalent(in, out, ec), "average_checkpoints", ": the output '", out, "' is one of the inputs ('", in,
          "'): write the average to another file");
  }
  const std::string& first_path = inputs.front();
  const nn::SafetensorsFile first = nn::load_safetensors(first_path);
  const std::string config = required(first, "config", first_path), vocab = required(first, "vocab", first_path);
  std::string vocab_model = metadata_or(first, "vocab_model");  // the first stored copy (older files have none)
  // Running sums in float64, in the first file's tensor order; the first file's own tensors for the rest.
  nn::NamedTensors sums;
  for (auto& [name, t] : first.tensors)
    if (!is_optimizer_state(name)) sums.emplace_back(name, is_floating(t.dtype()) ? t.to(DType::F64) : t);
  std::string step = first.metadata.count("step") ? first.metadata.at("step") : "-1", sources;
  for (size_t k = 0; k < inputs.size(); k++) {
    const std::string& path = inputs[k];
    if (k) sources += ",";
    sources += fs::path(path).filename().string();
    if (k == 0) continue;
    const nn::SafetensorsFile f = nn::load_safetensors(path);  // checksum verified
    // compared as configs, not as text: files from before a field was added (positions, 2026-12-06) lack it
    if (const std::string here = required(f, "config", path); here != config)
      if (const std::string diff = config_differences(config_from_json(config), config_from_json(here)); !diff.empty())
        fail("average_checkpoints", ": '", path, "' is a different model configuration from '", first_path, "' (",
             diff, ")");
    // The vocabulary itself where both files store it (the path may be spelled differently: data vs ./data);
    // the path where one is older and names only its file.
    const std::string model_here = metadata_or(f, "vocab_model");
    if (model_here.empty() || vocab_model.empty())
      check(required(f, "vocab", path) == vocab, "average_checkpoints", ": '", path, "' has a different vocabulary ('",
            f.metadata.at("vocab"), "') from '", first_path, "' ('", vocab, "')");
    check(model_here.empty() || vocab_model.empty() || model_here == vocab_model, "average_checkpoints", ": '", path,
          "' stores a different vocabulary model from '", first_path, "'");
    if (vocab_model.empty()) vocab_model = model_here;
    size_t model_tensors = 0;
    for (auto& [name, t] : f.tensors) model_tensors += !is_optimizer_state(name);
    check(model_tensors == sums.size(), "average_checkpoints", ": '", path, "' has ", model_tensors,
          " model tensors, '", first_path, "' has ", sums.size());
    for (auto& [name, sum] : sums) {
      const Tensor t = f.find(name);
      if (!t.defined())
        fail("average_checkpoints", ": '", path, "' has no tensor '", name, "' ('", first_path, "' has)");
      const Tensor mine = first.find(name);
      if (t.shape() != mine.shape() || t.dtype() != mine.dtype())
        fail("average_checkpoints", ": tensor '", name, "' is ", shape_str(t.shape()), " ", dtype_name(t.dtype()),
             " in '", path, "' but ", shape_str(mine.shape()), " ", dtype_name(mine.dtype()), " in '", first_path, "'");
      if (is_floating(t.dtype())) {
        sum = add(sum, t.to(DType::F64));
      } else if (t.to(DType::I64).to_vector<int64_t>() != sum.to(DType::I64).to_vector<int64_t>()) {
        fail("average_checkpoints", ": the integer tensor '", name, "' differs between '", first_path, "' and '", path,
             "': it cannot be averaged");
      }
    }
    if (f.metadata.count("step")) step = f.metadata.at("step");
  }
  nn::NamedTensors mean;
  for (auto& [name, sum] : sums) {
    const DType dtype = first.find(name).dtype();
    mean.emplace_back(name, is_floating(dtype) ? mul(sum, 1.0 / (double)inputs.size()).to(dtype) : sum);
  }
  nn::Metadata meta = {{"config", config}, {"vocab", vocab}, {"step", step}, {"averaged_from", sources}};
  if (!vocab_model.empty()) meta["vocab_model"] = vocab_model;
  if (const std::string kind = metadata_or(first, "skipgrad.model"); !kind.empty()) meta["skipgrad.model"] = kind;
  nn::save_safetensors(out, mean, meta);
}

}  // namespace translate
