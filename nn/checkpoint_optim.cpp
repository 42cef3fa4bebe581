#include "nn/checkpoint_optim.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <system_error>

namespace skipgrad::nn {

namespace {

constexpr const char* kLoad = "load_checkpoint";

// The double `word` spells in decimal (std::from_chars: any locale, no hex); none when there is more text, or the
// value is past double's range (1e-400 is not silently 0).
std::optional<double> read_number(const std::string& word) {
  double v = 0;
  const auto r = std::from_chars(word.data(), word.data() + word.size(), v);
  if (r.ec != std::errc() || r.ptr != word.data() + word.size() || word.empty()) return std::nullopt;
  return v;
}

// Each parameter's lr_scale or weight decay, space-separated, in named_params() order.
std::string format_per_parameter(const Optimizer& opt, double (Optimizer::*value)(size_t) const) {
  std::string out;
  for (size_t i = 0; i < opt.named_params().size(); i++) {
    if (i) out += ' ';
    out += number_str((opt.*value)(i));
  }
  return out;
}

// The values of a per-parameter entry, checked: one finite value >= 0 per parameter of the optimizer. Empty when
// the file has no such entry (written before it existed).
std::vector<double> parse_per_parameter(const Metadata& meta, const std::string& key, const std::string& path,
                                        size_t count) {
  auto it = meta.find(key);
  if (it == meta.end()) return {};
  std::istringstream in(it->second);
  std::vector<double> values;
  std::string word;
  while (in >> word) {
    const std::optional<double> v = read_number(word);
    check(v && std::isfinite(*v) && *v >= 0, kLoad, ": '", path, "': metadata '", key, "' holds '", word,
          "', not a value >= 0");
    values.push_back(*v);
  }
  check(values.size() == count, kLoad, ": '", path, "': metadata '", key, "' has ", values.size(),
        " values; the optimizer has ", count, " parameters");
  return values;
}

// The names of the optimizer's parameters, in named_params() order, as a JSON array: the order of the values of
// the per-parameter entries.
std::string format_param_names(const Optimizer& opt) {
  nlohmann::json names = nlohmann::json::array();
  for (const auto& [name, t] : opt.named_params()) names.push_back(name);
  return names.dump();
}

// Where each of the file's per-parameter values goes in `opt`: place[j] = the index in opt.named_params() of the
// file's j-th name. The file must name the optimizer's parameters, each once, and no other (a model whose modules
// are registered in another order, or parameter groups listed in another order, still gets each parameter's own
// lr_scale and weight decay). None when the file has no such entry (written before 2026-12-06: by position).
std::optional<std::vector<size_t>> parse_param_places(const Metadata& meta, const Optimizer& opt,
                                                      const std::string& path) {
  const char* key = "skipgrad.optim.param_names";
  auto it = meta.find(key);
  if (it == meta.end()) return std::nullopt;
  const nlohmann::json names = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  check(names.is_array() && std::all_of(names.begin(), names.end(), [](const auto& n) { return n.is_string(); }),
        kLoad, ": '", path, "': metadata '", key, "' is not a JSON array of names");
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < opt.named_params().size(); i++) index.emplace(opt.named_params()[i].first, i);
  std::vector<size_t> place;
  std::vector<bool> taken(index.size(), false);
  for (const auto& n : names) {
    const std::string name = n.get<std::string>();
    auto found = index.find(name);
    check(found != index.end(), kLoad, ": '", path, "': the file's optimizer has a parameter '", name,
          "', which this optimizer does not");
    check(!taken[found->second], kLoad, ": '", path, "': metadata '", key, "' names '", name, "' twice");
    taken[found->second] = true;
    place.push_back(found->second);
  }
  for (size_t i = 0; i < taken.size(); i++)
    check(taken[i], kLoad, ": '", path, "': this optimizer's parameter '", opt.named_params()[i].first,
          "' is not in the file's optimizer");
  return place;
}

// values (in the file's order) put in the optimizer's order.
std::vector<double> in_optimizer_order(const std::vector<double>& values, const std::vector<size_t>& place) {
  if (values.empty()) return values;
  std::vector<double> out(values.size());
  for (size_t j = 0; j < values.size(); j++) out[place[j]] = values[j];
  return out;
}

// The optimizer's settings() as "beta1=0.9 beta2=0.98 eps=1e-08".
std::string format_settings(const Optimizer& opt) {
  std::string out;
  for (const auto& [name, value] : opt.settings()) {
    if (!out.empty()) out += ' ';
    out += name + "=" + number_str(value);
  }
  return out;
}

// The file's settings (empty when it has no entry: written before it existed): each name one the optimizer has,
// all of them present, each value a number; their ranges are set_setting's to check.
std::vector<std::pair<std::string, double>> parse_settings(const Metadata& meta, const Optimizer& opt,
                                                           const std::string& path) {
  const char* key = "skipgrad.optim.settings";
  auto it = meta.find(key);
  if (it == meta.end()) return {};
  std::map<std::string, double> values;
  std::istringstream in(it->second);
  std::string word;
  while (in >> word) {
    const size_t eq = word.find('=');
    const std::optional<double> v = eq == std::string::npos ? std::nullopt : read_number(word.substr(eq + 1));
    check(eq != std::string::npos && eq > 0 && v, kLoad, ": '", path, "': metadata '", key, "' holds '", word,
          "', not name=value");
    check(values.emplace(word.substr(0, eq), *v).second, kLoad, ": '", path, "': metadata '", key, "' gives ",
          word.substr(0, eq), " twice");
  }
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [name, current] : opt.settings()) {
    auto v = values.find(name);
    check(v != values.end(), kLoad, ": '", path, "': metadata '", key, "' has no ", name, " ('", it->second, "')");
    out.emplace_back(name, v->second);
    values.erase(v);
  }
  if (!values.empty())
    fail(kLoad, ": '", path, "': metadata '", key, "' holds '", values.begin()->first, "', which a ", opt.kind(),
         " optimizer does not have");
  return out;
}

}  // namespace

uint64_t parse_u64(const Metadata& meta, const std::string& key, const std::string& path) {
  const std::string& s = meta.at(key);
  check(!s.empty() && s.find_first_not_of("0123456789") == std::string::npos, kLoad, ": '", path, "': metadata '",
        key, "' is not a non-negative integer: '", s, "'");
  try {
    return std::stoull(s);
  } catch (const std::exception&) {
    fail(kLoad, ": '", path, "': metadata '", key, "' is out of range: '", s, "'");
  }
}

Metadata optimizer_metadata(const Optimizer& opt) {
  Metadata meta;
  meta["skipgrad.optim.kind"] = opt.kind();
  meta["skipgrad.optim.step"] = std::to_string(opt.step_count());
  meta["skipgrad.optim.lr"] = number_str(opt.lr());
  meta["skipgrad.optim.lr_scale"] = format_per_parameter(opt, &Optimizer::lr_scale);
  meta["skipgrad.optim.weight_decay"] = format_per_parameter(opt, &Optimizer::weight_decay);
  meta["skipgrad.optim.param_names"] = format_param_names(opt);
  meta["skipgrad.optim.settings"] = format_settings(opt);
  return meta;
}

OptimizerRecord read_optimizer_metadata(const Metadata& meta, const Optimizer& opt, const std::string& path) {
  auto kind = meta.find("skipgrad.optim.kind");
  check(kind != meta.end(), kLoad, ": '", path, "' holds no optimizer state (saved without an optimizer)");
  check(kind->second == opt.kind(), kLoad, ": '", path, "' holds the state of a '", kind->second,
        "' optimizer, not '", opt.kind(), "'");
  check(meta.count("skipgrad.optim.step") && meta.count("skipgrad.optim.lr"), kLoad, ": '", path,
        "': optimizer step or lr missing from the metadata");
  OptimizerRecord r;
  const size_t n = opt.named_params().size();
  // names first: an optimizer over other parameters is told which, before the lists' lengths could differ
  const auto place = parse_param_places(meta, opt, path);
  r.lr_scales = parse_per_parameter(meta, "skipgrad.optim.lr_scale", path, n);
  r.weight_decays = parse_per_parameter(meta, "skipgrad.optim.weight_decay", path, n);
  if (place) {  // by name
    r.lr_scales = in_optimizer_order(r.lr_scales, *place);
    r.weight_decays = in_optimizer_order(r.weight_decays, *place);
  }
  r.settings = parse_settings(meta, opt, path);
  const uint64_t step = parse_u64(meta, "skipgrad.optim.step", path);
  check(step <= (uint64_t)INT64_MAX, kLoad, ": '", path, "': metadata 'skipgrad.optim.step' is past int64: ", step);
  r.step = (int64_t)step;
  const std::string& s = meta.at("skipgrad.optim.lr");
  const std::optional<double> lr = read_number(s);
  check(lr && std::isfinite(*lr) && *lr >= 0, kLoad, ": '", path,
        "': metadata 'skipgrad.optim.lr' is not a learning rate: '", s, "'");
  r.lr = *lr;
  return r;
}

void restore_optimizer_settings(Optimizer& opt, const OptimizerRecord& record, const std::string& path) {
  const auto before = opt.settings();
  try {
    for (const auto& [name, value] : record.settings) opt.set_setting(name, value);
  } catch (const Error& e) {
    for (const auto& [name, value] : before) opt.set_setting(name, value);
    fail(kLoad, ": '", path, "': metadata 'skipgrad.optim.settings': ", e.what());
  }
}

void restore_optimizer_record(Optimizer& opt, const OptimizerRecord& record) {
  opt.set_step_count(record.step);
  opt.set_lr(record.lr);
  for (size_t i = 0; i < record.lr_scales.size(); i++) opt.set_lr_scale(i, record.lr_scales[i]);
  for (size_t i = 0; i < record.weight_decays.size(); i++) opt.set_weight_decay(i, record.weight_decays[i]);
}

}  // namespace skipgrad::nn
