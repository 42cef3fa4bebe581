#include "backends/backend.h"

#include "backends/cpu/cpu_backend.h"

namespace skipgrad {

namespace {
Backend* g_cuda_backend = nullptr;
}

Backend& backend_for(Device d) {
  if (d.is_cpu()) {
    static CpuBackend cpu;
    return cpu;
  }
  check(g_cuda_backend != nullptr, "backend", ": device ", d.str(),
        " requested but this build has no CUDA backend (configure with -DSKIPGRAD_CUDA=ON) or no GPU is present");
  return *g_cuda_backend;
}

void register_backend(Device::Kind kind, Backend* b) {
  if (kind == Device::Kind::CUDA) g_cuda_backend = b;
}

bool cuda_available() { return g_cuda_backend != nullptr; }

}  // namespace skipgrad
