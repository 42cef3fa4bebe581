// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_) and per-parameter gradient norms.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace skipgrad::nn {

// total = sqrt(sum over parameters with a gradient of ||grad||^2), computed with device reductions and read
// back once. When max_norm > 0 and total + 1e-6 > max_norm, every gradient is scaled in place by
// max_norm / (total + 1e-6): torch's min(1, max_norm / (total + 1e-6)). max_norm == 0 only measures (fairseq's
// --clip-norm 0).
// Returns total before clipping. A NaN/Inf total is returned without touching the gradients, so the caller can
// skip the step (fairseq's overflow check).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
double clip_grad_norm(const std::vector<std::pair<std::string, Tensor>>& named_params, double max_norm);

// The two halves of clip_grad_norm, for a step that must not wait on the GPU more than once (examples/translate
// reads the loss and this norm in one copy):
// total_grad_norm: sqrt(sum_p ||g_p||^2) as a float64 [1] tensor on the gradients' device, not read back;
// undefined when no parameter has a gradient.
Tensor total_grad_norm(const std::vector<Tensor>& params);
// Scales every gradient by max_norm / (total + 1e-6) when max_norm > 0, total is finite and total + 1e-6 > max_norm.
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, double total);
// The same with total a [1] tensor on the gradients' device (total_grad_norm's), never read by the host: the
// factor is computed there and every gradient scaled by it in one backend call (Backend::scale_many), so a
// training step that clips need not wait for the GPU at all (examples/translate, --sync-every). Same results as
// the host version (the factor is the same double, rounded once to each gradient's dtype).
void clip_grads_to_norm(const std::vector<Tensor>& params, double max_norm, const Tensor& total);

// ||grad||_2 of each parameter that has a gradient, in order, with its name (one read-back for all).
std::vector<std::pair<std::string, double>> grad_norms(const std::vector<std::pair<std::string, Tensor>>& named_params);
// The same, left on the gradients' device: the names, and their norms as one float64 [n] tensor (one backend call,
// no read-back; undefined when no parameter has a gradient), for a caller that reads it later with other values.
struct GradNorms {
  std::vector<std::string> names;
  Tensor norms;
};
GradNorms grad_norms_on_device(const std::vector<std::pair<std::string, Tensor>>& named_params);

}  // namespace skipgrad::nn
