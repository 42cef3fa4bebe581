// Label-smoothed cross-entropy over non-padding tokens, as fairseq's label_smoothed_cross_entropy criterion.
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace skipgrad::nn {

struct LabelSmoothedLoss {
  Tensor loss;     // mean label-smoothed loss over non-pad tokens: a differentiable scalar, backward() this
  Tensor ntokens;  // number of non-pad tokens: a scalar of the loss's dtype (float32 for bfloat16 logits) and device
  // Sum over non-pad tokens of -log p(target): a scalar, not differentiable (for reporting). With eps > 0 it is a
  // second, unrecorded cross-entropy pass over the logits, made only when asked for (a training step that reports
  // the smoothed loss does not pay it); with eps = 0 it is loss * ntokens.
  Tensor nll_sum() const;

  Tensor logits, targets;  // what nll_sum() reads (the loss's own graph holds the logits until backward anyway)
  int64_t pad_id = 0;
  double eps = 0;
};

// logits [B, T, V] (or [N, V]), targets int64 [B, T] (or [N]); tokens whose target is pad_id are ignored.
// fairseq's label_smoothed_nll_loss (epsilon spread over the V-1 wrong classes):
//   loss_i = (1 - eps - eps/(V-1)) * nll_i + eps/(V-1) * sum_j -log p_j
// which is PyTorch's cross_entropy(label_smoothing = eps * V / (V-1)); to get PyTorch's convention for a
// smoothing s instead, pass eps = s * (V-1) / V. fairseq reports loss and nll per token (in base 2):
// nll_sum() / ntokens / ln 2. Nothing is read back from the device. A batch of only padding gives loss 0 and
// ntokens 0. Keep only `.loss` (as a training step does) when nothing else is wanted: the struct holds the logits.
LabelSmoothedLoss label_smoothed_nll(const Tensor& logits, const Tensor& targets, int64_t pad_id, double eps);

}  // namespace skipgrad::nn
