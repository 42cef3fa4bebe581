// Mixed precision, as torch.autocast(dtype=torch.bfloat16): inside an AutocastBF16 scope the matrix products
// (matmul, linear, attention) cast their float32 inputs to bfloat16 and return bfloat16, computed on bf16 tensor
// cores with float32 accumulation; log_softmax casts bfloat16 inputs to float32; layer_norm and rms_norm
// normalise a bf16 input in float32 with float32 parameters (bf16 parameters are cast) and return bf16, a float32
// input float32; cross_entropy reads bf16 logits as they are into a float32 loss (the last two in or out of a
// scope); rotary rotates bf16 q and k by float32 angles into bf16. Everything else runs in the dtype it is given; an
// elementwise op on a bfloat16 and a float32 tensor reads the bf16 one as it is into a float32 result. So
// parameters stay float32 (the master weights Adam updates), the residual stream stays float32 (embedding +
// positions are float32, and x + sublayer(x) is float32), and the activations the products save for backward are
// bfloat16.
//
// Each cast is a recorded `to_dtype` node, so the graph dump shows where precision changes. A cast's backward
// converts the gradient back to its source's dtype; linear and attention write the gradients of cast float32
// tensors in float32 directly (grad_dtype, autograd/tape.h), so a layer's weight gets its gradient in float32
// unrounded. A plain matmul returns bf16 gradients, which the cast converts, as torch's autocast does.
// docs/mixed_precision.md has the details.
#pragma once
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensor/tensor.h"

namespace skipgrad {

class AutocastBF16 {
 public:
  explicit AutocastBF16(bool enabled = true);
  ~AutocastBF16();
  AutocastBF16(const AutocastBF16&) = delete;
  AutocastBF16& operator=(const AutocastBF16&) = delete;

  // Casts the float32 tensors among ts (a model's parameters) to bfloat16 now, all of a device in one launch
  // (Backend::copy_many), instead of one launch per weight where a product meets it. A product in this scope that
  // meets one of them takes its cast and records it then, as the same `to_dtype` node it would have made, so the
  // graph is the one without precast; casts no product uses (a norm's weight) are never recorded. A use under
  // NoGradGuard records nothing, and each backward's graph records the casts it uses again, so several steps may run
  // in one scope; a tensor written since its cast (an optimizer step in the scope: Tensor::version) is cast again at
  // its next use.
  void precast(const std::vector<Tensor>& ts);

 private:
  bool previous_enabled_;
  struct Cast {
    Tensor source, cast;  // cast: the bf16 copy, attached to its to_dtype node while that node is on the live tape
    uint64_t version;     // source.version() when cast
  };
  AutocastBF16* previous_precast_;  // the enclosing scope whose precasts apply, restored on exit
  std::unordered_map<const TensorImpl*, Cast> casts_;
  friend Tensor cached_bf16_cast(const Tensor& t);
};
bool autocast_bf16_enabled();
// A command line's --autocast: "off" -> false, "bf16" -> true; anything else is an Error naming the choices.
bool parse_autocast(const std::string& s);

namespace autocast {
// Inside a scope: true when a product op should cast (some defined input is float32, none float64).
bool wants_bf16(std::initializer_list<const Tensor*> ts);
// Inside a scope: true when a float32 op should cast (some defined input is bfloat16).
bool wants_f32(std::initializer_list<const Tensor*> ts);
Tensor to_bf16(const Tensor& t);  // float32 -> bfloat16 (recorded; a precast one when there is); others as they are
Tensor to_f32(const Tensor& t);   // bfloat16 -> float32 (recorded); other tensors as they are
// t as the products will read it: inside a scope its bf16 cast (to_bf16), outside t itself. For a module that feeds
// one tensor to several products (self-attention's Q, K and V projections; every decoder layer's cross-attention
// reading the encoder's output): one cast for all of them instead of one each.
Tensor for_products(const Tensor& t);
}  // namespace autocast

}  // namespace skipgrad
