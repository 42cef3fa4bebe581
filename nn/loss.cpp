#include "nn/loss.h"

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

LabelSmoothedLoss label_smoothed_nll(const Tensor& logits, const Tensor& targets, int64_t pad_id, double eps) {
  const char* op = "label_smoothed_nll";
  check_defined(op, logits, "logits");
  check_defined(op, targets, "targets");
  if (!is_floating(logits.dtype()))
    fail(op, ": logits must be floating, got ", logits.meta_str());
  if (targets.dtype() != DType::I64)
    fail(op, ": targets must be int64, got ", targets.meta_str());
  check(logits.dim() >= 2, op, ": logits must be [B, T, V] or [N, V], got ", logits.shape());
  const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  check(targets.shape() == lead, op, ": targets ", targets.shape(), " do not match logits ", logits.shape(),
        " (expected targets ", lead, ")");
  if (logits.device() != targets.device())
    fail(op, ": logits on ", logits.device().str(), ", targets on ", targets.device().str());
  const int64_t V = logits.size(-1);
  check(eps >= 0 && eps < 1, op, ": eps must be in [0, 1), got ", eps);
  check(eps == 0 || V > 1, op, ": label smoothing needs a vocabulary of at least 2, got V = ", V);

  // fairseq's eps over V-1 wrong classes == PyTorch's smoothing eps * V / (V-1) over all V classes.
  const double smoothing = eps == 0 ? 0.0 : eps * (double)V / (double)(V - 1);
  check(smoothing <= 1, op, ": eps must be at most (V-1)/V = ", (double)(V - 1) / (double)V, ", got ", eps);
  LabelSmoothedLoss out;
  out.loss = cross_entropy(logits, targets, pad_id, smoothing, Reduction::Mean);
  NoGradGuard no_grad;
  // ntokens = N - count(target == pad), counted in float64 on the device (every id compares exactly), kept in the
  // loss's dtype: float32 for bfloat16 logits, which would round counts above 256
  Tensor ids = targets.to(DType::F64);
  Tensor is_pad = eq(ids, Tensor::scalar((double)pad_id, DType::F64, targets.device()));
  out.ntokens = rsub(sum(is_pad), (double)targets.numel()).to(out.loss.dtype());
  out.logits = logits;
  out.targets = targets;
  out.pad_id = pad_id;
  out.eps = eps;
  return out;
}

Tensor LabelSmoothedLoss::nll_sum() const {
  NoGradGuard no_grad;
  if (eps == 0) return mul(loss.detach(), ntokens);
  return cross_entropy(logits, targets, pad_id, 0.0, Reduction::Sum);
}

}  // namespace skipgrad::nn
