// libFuzzer target: the model-config reader (translate::config_from_json), which reads the "config" entry of a
// checkpoint. Any input must give a validated config or throw skipgrad::Error; a config that loads must write
// JSON that loads back to the same text.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config_json.h"
#include "tensor/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  skipgrad::nn::TransformerConfig c;
  try {
    c = translate::config_from_json(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const skipgrad::Error&) {
    return 0;
  }
  const std::string text = translate::config_to_json(c);
  if (translate::config_to_json(translate::config_from_json(text)) != text) std::abort();
  return 0;
}
