// TransformerConfig <-> JSON, stored in checkpoints so `translate` can rebuild the model that was trained; and the
// other entries `train` stores in a checkpoint's metadata, read back with their file named when they are bad.
#pragma once
#include <map>
#include <string>

#include "nn/topology.h"

namespace translate {
std::string config_to_json(const skipgrad::nn::TransformerConfig& c);
skipgrad::nn::TransformerConfig config_from_json(const std::string& s);
// The fields where two configurations differ, "enc_layers 2 vs 1, d_model 32 vs 16" (a's value first); "" if none.
std::string config_differences(const skipgrad::nn::TransformerConfig& a, const skipgrad::nn::TransformerConfig& b);

// metadata[key] of checkpoint `path` as a whole number or a number ("inf" included); a missing entry or one that
// is not such a number throws skipgrad::Error naming the file, the key and the text.
int64_t metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key,
                     const std::string& path);
uint64_t metadata_u64(const std::map<std::string, std::string>& metadata, const std::string& key,
                      const std::string& path);  // digits only (a seed)
double metadata_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                       const std::string& path);
}  // namespace translate
