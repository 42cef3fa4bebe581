// libFuzzer target: the safetensors checkpoint reader (nn::parse_safetensors, the body of load_safetensors).
// Any input must either load or throw skipgrad::Error; anything else (another exception, a sanitizer report,
// an allocation past -malloc_limit_mb) is a finding. A file that loads must save and load back the same.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "nn/checkpoint.h"

using namespace skipgrad;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nn::SafetensorsFile file;
  try {
    file = nn::parse_safetensors(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz-input");
  } catch (const Error&) {
    return 0;
  }
  // Every tensor holds exactly the bytes its entry describes.
  for (auto& [name, t] : file.tensors) {
    if (t.nbytes() == 0) continue;
    unsigned char sum = 0;
    const unsigned char* p = static_cast<const unsigned char*>(t.data_ptr());
    for (size_t i = 0; i < t.nbytes(); i++) sum ^= p[i];
    volatile unsigned char keep = sum;  // every byte is read (ASan checks each access)
    (void)keep;
  }
  return 0;
}
