#include "autograd/autocast.h"

namespace skipgrad {

namespace {
thread_local bool g_autocast_bf16 = false;
}

AutocastBF16::AutocastBF16(bool enabled) : previous_(g_autocast_bf16) { g_autocast_bf16 = enabled; }
AutocastBF16::~AutocastBF16() { g_autocast_bf16 = previous_; }
bool autocast_bf16_enabled() { return g_autocast_bf16; }

namespace autocast {
namespace {
bool any_of_dtype(std::initializer_list<const Tensor*> ts, DType dt) {
  for (const Tensor* t : ts)
    if (t->defined() && t->dtype() == dt) return true;
  return false;
}
}  // namespace

bool wants_bf16(std::initializer_list<const Tensor*> ts) { return g_autocast_bf16 && any_of_dtype(ts, DType::F32); }
bool wants_f32(std::initializer_list<const Tensor*> ts) { return g_autocast_bf16 && any_of_dtype(ts, DType::BF16); }
Tensor to_bf16(const Tensor& t) { return t.defined() && t.dtype() == DType::F32 ? t.to(DType::BF16) : t; }
Tensor to_f32(const Tensor& t) { return t.defined() && t.dtype() == DType::BF16 ? t.to(DType::F32) : t; }
}  // namespace autocast

}  // namespace skipgrad
