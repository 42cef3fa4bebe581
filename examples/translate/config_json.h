// TransformerConfig <-> JSON, stored in checkpoints so `translate` can rebuild the model that was trained.
#pragma once
#include <string>

#include "nn/topology.h"

namespace translate {
std::string config_to_json(const skipgrad::nn::TransformerConfig& c);
skipgrad::nn::TransformerConfig config_from_json(const std::string& s);
}  // namespace translate
