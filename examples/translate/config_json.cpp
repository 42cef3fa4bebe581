#include "config_json.h"

#include <cctype>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "tensor/error.h"

namespace translate {

using namespace skipgrad::nn;
using json = nlohmann::json;

std::string config_to_json(const TransformerConfig& c) {
  json j = {{"vocab", c.vocab}, {"d_model", c.d_model}, {"heads", c.heads}, {"d_ff", c.d_ff},
            {"enc_layers", c.enc_layers}, {"dec_layers", c.dec_layers}, {"dropout", c.dropout},
            {"attn_dropout", c.attn_dropout}, {"act_dropout", c.act_dropout}, {"norm", norm_kind_name(c.norm)},
            {"norm_eps", c.norm_eps}, {"dyt_alpha", c.dyt_alpha}, {"dyt_alpha_at", c.dyt_alpha_at},
            {"activation", activation_name(c.activation)},
            {"topology", c.topology},
            {"qk_norm", head_norm_targets_name(c.qk_norm)}, {"qk_norm_kind", head_norm_kind_name(c.qk_norm_kind)},
            {"resi_dual_scale", c.resi_dual_scale}, {"mixln_post_layers", c.mixln_post_layers},
            {"b2t_rescale", c.b2t_rescale}, {"layer_scale_init", c.layer_scale_init},
            {"normformer_scale_resids", c.normformer_scale_resids},
            {"normformer_fairseq_head_scale", c.normformer_fairseq_head_scale},
            {"init", init_scheme_name(c.init)}, {"share_embeddings", c.share_embeddings},
            {"tie_output", c.tie_output}, {"max_positions", c.max_positions}, {"pad_id", c.pad_id},
            {"positions", position_encoding_name(c.positions)}, {"rope_theta", c.rope_theta},
            {"rope_dims", c.rope_dims}, {"relative_buckets", c.relative_buckets},
            {"relative_max_distance", c.relative_max_distance}};
  return j.dump();
}

std::string config_differences(const TransformerConfig& a, const TransformerConfig& b) {
  const json ja = json::parse(config_to_json(a)), jb = json::parse(config_to_json(b));
  std::string out;
  for (auto it = ja.begin(); it != ja.end(); ++it)
    if (jb.at(it.key()) != it.value())
      out += (out.empty() ? "" : ", ") + it.key() + " " + it.value().dump() + " vs " + jb.at(it.key()).dump();
  return out;
}

TransformerConfig config_from_json(const std::string& s) {
  json j;
  try {
    j = json::parse(s);
  } catch (const std::exception& e) {
    skipgrad::fail("config_from_json", ": not valid JSON: ", e.what());
  }
  TransformerConfig c;
  // Integer fields must be JSON integers in int64 range: nlohmann would cast a float such as 1e300 to int64_t,
  // which is undefined behaviour (fuzz/corpus/config_json/huge_float.json).
  auto integer = [&](const char* key) -> int64_t {
    const json& v = j.at(key);
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t)INT64_MAX))
      skipgrad::fail("config_from_json", ": field '", key, "' must be an integer, got ", v.dump());
    return v.get<int64_t>();
  };
  try {
    c.vocab = integer("vocab"); c.d_model = integer("d_model"); c.heads = integer("heads"); c.d_ff = integer("d_ff");
    c.enc_layers = integer("enc_layers"); c.dec_layers = integer("dec_layers"); c.dropout = j.at("dropout");
    c.attn_dropout = j.at("attn_dropout"); c.act_dropout = j.at("act_dropout");
    c.norm = parse_norm_kind(j.at("norm")); c.norm_eps = j.at("norm_eps");
    c.activation = parse_activation(j.at("activation")); c.topology = j.at("topology");
    c.qk_norm = parse_head_norm_targets(j.at("qk_norm")); c.qk_norm_kind = parse_head_norm_kind(j.at("qk_norm_kind"));
    c.resi_dual_scale = j.at("resi_dual_scale"); c.mixln_post_layers = integer("mixln_post_layers");
    c.init = parse_init_scheme(j.at("init")); c.share_embeddings = j.at("share_embeddings");
    c.tie_output = j.at("tie_output"); c.max_positions = integer("max_positions"); c.pad_id = integer("pad_id");
    // (files from before 2026-12-06 have neither: sinusoidal positions)
    if (j.contains("positions")) c.positions = parse_position_encoding(j.at("positions"));
    if (j.contains("rope_theta")) c.rope_theta = j.at("rope_theta");
    if (j.contains("rope_dims")) c.rope_dims = integer("rope_dims");
    if (j.contains("relative_buckets")) c.relative_buckets = integer("relative_buckets");
    if (j.contains("relative_max_distance")) c.relative_max_distance = integer("relative_max_distance");
    if (j.contains("b2t_rescale")) c.b2t_rescale = j.at("b2t_rescale").get<bool>();  // (these two from 2026-12-07)
    if (j.contains("layer_scale_init")) c.layer_scale_init = j.at("layer_scale_init").get<double>();
    if (j.contains("normformer_scale_resids"))  // (from 2026-12-07's second session)
      c.normformer_scale_resids = j.at("normformer_scale_resids").get<bool>();
    if (j.contains("normformer_fairseq_head_scale"))  // (from 2026-12-07's third session)
      c.normformer_fairseq_head_scale = j.at("normformer_fairseq_head_scale").get<bool>();
    if (j.contains("dyt_alpha")) c.dyt_alpha = j.at("dyt_alpha").get<double>();  // (from 2026-12-07's fourth)
    if (j.contains("dyt_alpha_at"))  // (from 2026-12-07's fifth session)
      c.dyt_alpha_at = j.at("dyt_alpha_at").get<std::vector<std::pair<std::string, double>>>();
  } catch (const json::exception& e) {
    skipgrad::fail("config_from_json", ": missing or mistyped field: ", e.what());
  }
  // Files from before 2026-12-06 may give another topology's option to this one (compare --resi-dual-scale gave
  // it to every topology), or tie_output false with one shared table: they did nothing, so they read as defaults
  // (the checkpoint's stored kind is matched alike: Transformer::reads_kind).
  c = c.with_topology(c.topology);
  if (c.share_embeddings) c.tie_output = true;
  c.validate();
  skipgrad::check(!c.decoder_only(), "config_from_json",
                  ": enc_layers 0 is a decoder-only language model; translation needs an encoder");
  return c;
}

namespace {
template <class T, class Parse>
T metadata_value(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path,
                 const char* what, Parse parse) {
  auto it = m.find(key);
  if (it == m.end()) skipgrad::fail("checkpoint", ": '", path, "' has no '", key, "' metadata");
  size_t used = 0;
  T v{};
  try {
    v = parse(it->second, &used);
  } catch (const std::exception&) {
    used = std::string::npos;
  }
  if (used != it->second.size() || it->second.empty())
    skipgrad::fail("checkpoint", ": '", path, "': metadata '", key, "' is '", it->second, "', not ", what);
  return v;
}
}  // namespace

int64_t metadata_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  return metadata_value<int64_t>(m, key, path, "a whole number",
                                 [](const std::string& s, size_t* used) { return (int64_t)std::stoll(s, used); });
}
uint64_t metadata_u64(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  return metadata_value<uint64_t>(m, key, path, "a whole number >= 0", [](const std::string& s, size_t* used) {
    if (s.empty() || !std::isdigit((unsigned char)s[0])) throw std::invalid_argument("not digits");  // stoull takes -1
    return (uint64_t)std::stoull(s, used);
  });
}
double metadata_number(const std::map<std::string, std::string>& m, const std::string& key, const std::string& path) {
  return metadata_value<double>(m, key, path, "a number",
                                [](const std::string& s, size_t* used) { return std::stod(s, used); });
}

}  // namespace translate
