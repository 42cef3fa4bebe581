// bfloat16 for the kernels that have no bf16 path of their own: the kernel runs in float32 on float32 copies of its
// bf16 operands, and its float32 results are rounded into the bf16 outputs. Correct everywhere and small; it costs a
// conversion of every operand, so the GPU has native bf16 kernels for the ops a mixed-precision step runs most
// (docs/mixed_precision.md lists them).
//
// One function per Backend method, shared by the backends: it returns false when no operand is bf16 (the caller's
// own kernel runs), else it runs the method on float32 copies and returns true. A backend's method starts with
//
//   if (in_float32::softmax(*this, x, y, log, mask)) return;
#pragma once
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "backends/backend.h"

namespace skipgrad {

// Whether any defined tensor among ts is bfloat16.
inline bool any_bf16(std::initializer_list<const Tensor*> ts) { return any_of_dtype(ts, DType::BF16); }

// How many kernel calls have gone through float32 copies so far, on any device (tests check that a
// mixed-precision step on the GPU makes none).
int64_t in_float32_calls();

namespace in_float32 {
bool random_uniform(Backend& b, Tensor& out, double low, double high, uint64_t seed, uint64_t offset);
bool random_normal(Backend& b, Tensor& out, double mean, double std, uint64_t seed, uint64_t offset);
bool unary(Backend& b, UnaryOp op, const Tensor& x, Tensor& out, double alpha);
bool unary_backward(Backend& b, UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                    double alpha);
// count: the result when true is returned
bool count_nonfinite(Backend& b, const Tensor& x, int64_t& count);
bool reduce(Backend& b, ReduceOp op, const Tensor& x, const std::vector<bool>& red, Tensor& out);
bool cumsum(Backend& b, const Tensor& x, int64_t dim, bool reverse, Tensor& out);
bool softmax(Backend& b, const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask);
bool softmax_backward(Backend& b, const Tensor& y, const Tensor& gy, Tensor& gx, bool log);
bool layer_norm(Backend& b, const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                Tensor& mean, Tensor& rstd);
bool layer_norm_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta, bool accumulate_gx);
bool rms_norm(Backend& b, const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd);
bool rms_norm_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                       Tensor& gx, Tensor& gweight, bool accumulate_gx);
bool dyt(Backend& b, const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y);
bool dyt_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                  Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx);
bool embedding(Backend& b, const Tensor& weight, const Tensor& ids, Tensor& out);
bool embedding_backward(Backend& b, const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx);
bool cross_entropy(Backend& b, const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                   double label_smoothing, Tensor& loss, Tensor& stats);
bool cross_entropy_backward(Backend& b, const Tensor& logits, const Tensor& targets, const Tensor& stats,
                            const Tensor& gloss, int64_t ignore_index, double label_smoothing, Tensor& glogits);
bool dropout(Backend& b, const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset);
bool rotary(Backend& b, const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out);
bool adam_update(Backend& b, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool decoupled, int64_t step);
}  // namespace in_float32

}  // namespace skipgrad
