#include "autograd/autocast.h"

#include <algorithm>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "backends/backend.h"

namespace skipgrad {

namespace {
thread_local bool g_autocast_bf16 = false;
thread_local AutocastBF16* g_precast_scope = nullptr;  // the innermost scope that precast anything
}  // namespace

AutocastBF16::AutocastBF16(bool enabled) : previous_enabled_(g_autocast_bf16), previous_precast_(g_precast_scope) {
  g_autocast_bf16 = enabled;
}
AutocastBF16::~AutocastBF16() {
  g_autocast_bf16 = previous_enabled_;
  g_precast_scope = previous_precast_;
}
bool autocast_bf16_enabled() { return g_autocast_bf16; }
bool parse_autocast(const std::string& s) {
  check(s == "off" || s == "bf16", "autocast", ": --autocast must be off or bf16, got '", s, "'");
  return s == "bf16";
}

void AutocastBF16::precast(const std::vector<Tensor>& ts) {
  // per device (a model has one or two), the indices into ts of the float32 tensors not cast yet
  std::vector<std::pair<Device, std::vector<size_t>>> by_device;
  for (size_t i = 0; i < ts.size(); i++) {
    if (!ts[i].defined() || ts[i].dtype() != DType::F32 || casts_.count(ts[i].impl_ptr().get())) continue;
    auto it = std::find_if(by_device.begin(), by_device.end(), [&](const auto& e) { return e.first == ts[i].device(); });
    if (it == by_device.end()) it = by_device.insert(by_device.end(), {ts[i].device(), {}});
    it->second.push_back(i);
  }
  casts_.reserve(casts_.size() + ts.size());
  for (auto& [device, indices] : by_device) {
    std::vector<const Tensor*> srcs;
    std::vector<Tensor> outs;
    for (size_t i : indices) {
      srcs.push_back(&ts[i]);
      outs.push_back(Tensor::empty(ts[i].shape(), DType::BF16, ts[i].device()));
    }
    std::vector<Tensor*> dsts;
    for (Tensor& o : outs) dsts.push_back(&o);
    backend_for(ts[indices[0]].device()).copy_many(srcs, dsts);
    for (size_t j = 0; j < indices.size(); j++)
      casts_.emplace(ts[indices[j]].impl_ptr().get(), Cast{ts[indices[j]], outs[j], ts[indices[j]].version()});
  }
  if (!casts_.empty()) g_precast_scope = this;
}

// The precast bf16 copy of t in the innermost scope that has one, or an undefined tensor. Its `to_dtype` node is
// recorded at a use that records (grad mode on, t requiring grad), in the scope of the op that uses it, and again
// after a backward (or a cleared tape) has freed it: each step's graph gets its own cast node over the same bf16
// data. A use under NoGradGuard records nothing and leaves the next use to record.
Tensor cached_bf16_cast(const Tensor& t) {
  if (!g_precast_scope) return Tensor();
  auto it = g_precast_scope->casts_.find(t.impl_ptr().get());
  if (it == g_precast_scope->casts_.end()) return Tensor();
  AutocastBF16::Cast& c = it->second;
  if (t.version() != c.version) {  // written since its cast (a step in the scope): cast again, not yet recorded
    NoGradGuard no_grad;
    c.cast = t.to(DType::BF16);
    c.version = t.version();
  }
  const AutogradMeta* meta = c.cast.impl().autograd.get();
  if (!(meta && meta->producer)) {  // not on the live tape: a fresh handle on the same data, recorded if grad is on
    c.cast = c.cast.detach();
    record_cast(c.source, c.cast);
  }
  return c.cast;
}

namespace autocast {
// Not with a float64 input: float64 is left alone, and a float32 one beside it is the op's dtype error to report
// as the caller wrote it (not as "float64 and bfloat16").
bool wants_bf16(std::initializer_list<const Tensor*> ts) {
  return g_autocast_bf16 && any_of_dtype(ts, DType::F32) && !any_of_dtype(ts, DType::F64);
}
bool wants_f32(std::initializer_list<const Tensor*> ts) { return g_autocast_bf16 && any_of_dtype(ts, DType::BF16); }
Tensor to_bf16(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::F32) return t;
  Tensor cached = cached_bf16_cast(t);
  return cached.defined() ? cached : t.to(DType::BF16);
}
Tensor for_products(const Tensor& t) { return g_autocast_bf16 ? to_bf16(t) : t; }
Tensor to_f32(const Tensor& t) { return t.defined() && t.dtype() == DType::BF16 ? t.to(DType::F32) : t; }
}  // namespace autocast

}  // namespace skipgrad
