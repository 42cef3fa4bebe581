// bfloat16 for the kernels that have no bf16 path of their own: the kernel runs in float32 on float32 copies of its
// bf16 operands, and its float32 results are rounded into the bf16 outputs when it is done. Correct everywhere and
// small; it costs a conversion of every operand, so the GPU has native bf16 kernels for the ops a mixed-precision
// step runs most (docs/mixed_precision.md lists them). A backend's method starts with
//
//   if (any_bf16({&x, &y})) { InFloat32 f(*this); softmax(f.in(x), f.out(y), log, mask); return f.done(); }
#pragma once
#include <atomic>
#include <deque>
#include <initializer_list>
#include <utility>

#include "backends/backend.h"

namespace skipgrad {

// Whether any defined tensor among ts is bfloat16.
inline bool any_bf16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() && t->dtype() == DType::BF16) return true;
  return false;
}

// How many kernel calls have gone through InFloat32 so far, on any device (tests check that a mixed-precision step
// on the GPU makes none).
inline std::atomic<int64_t> g_in_float32_calls{0};
inline int64_t in_float32_calls() { return g_in_float32_calls.load(); }

class InFloat32 {
 public:
  explicit InFloat32(Backend& backend) : backend_(backend) { g_in_float32_calls++; }
  // t itself, or a contiguous float32 copy of it when t is bf16.
  const Tensor& in(const Tensor& t) {
    if (!t.defined() || t.dtype() != DType::BF16) return t;
    ins_.push_back(widened(t));
    return ins_.back();
  }
  // t itself, or a float32 stand-in for a bf16 t that done() rounds back into t. keep_values: the stand-in starts
  // with t's values (outputs the kernel accumulates into, or updates in place).
  Tensor& out(Tensor& t, bool keep_values = false) {
    if (!t.defined() || t.dtype() != DType::BF16) return t;
    Tensor stand_in = keep_values ? widened(t) : Tensor::empty(t.shape(), DType::F32, t.device());
    outs_.emplace_back(&t, std::move(stand_in));
    return outs_.back().second;
  }
  void done() {
    for (auto& [target, stand_in] : outs_) backend_.copy(stand_in, *target);
    outs_.clear();
  }

 private:
  Tensor widened(const Tensor& t) {
    Tensor f = Tensor::empty(t.shape(), DType::F32, t.device());
    backend_.copy(t, f);
    return f;
  }
  Backend& backend_;
  std::deque<Tensor> ins_;  // a deque: references handed out stay valid as it grows
  std::deque<std::pair<Tensor*, Tensor>> outs_;
};

}  // namespace skipgrad
