// The CPU backend: OpenBLAS for every matrix product, plain loops with OpenMP for the rest.
// Member definitions are split by kernel family: cpu_elementwise.cpp, cpu_reduce.cpp, cpu_gemm.cpp,
// cpu_nn.cpp (softmax, norms, embedding, cross entropy, dropout) and cpu_optim.cpp.
#pragma once
#include "backends/backend.h"

namespace skipgrad {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  void fill(Tensor& out, double value) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void arange(Tensor& out, double start, double step) override;
  void random_uniform(Tensor& out, double low, double high, uint64_t seed, uint64_t offset) override;
  void random_normal(Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) override;
  void random_uniform_rows(Tensor& out, const Tensor& row_counters, uint64_t seed) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                      double alpha) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce, Tensor& out) override;
  void norm_many(const std::vector<const Tensor*>& ts, Tensor& out) override;
  void cumsum(const Tensor& x, int64_t dim, bool reverse, Tensor& out) override;
  void topk(const Tensor& x, int64_t dim, int64_t k, bool largest, Tensor& out) override;
  int64_t count_nonfinite(const Tensor& x) override;
  void gemm(const GemmArgs& args) override;
  void softmax(const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) override;
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) override;
  void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y, Tensor& mean,
                  Tensor& rstd) override;
  void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                           const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta,
                           bool accumulate_gx) override;
  void rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) override;
  void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight, Tensor& gx,
                         Tensor& gweight, bool accumulate_gx) override;
  void dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) override;
  void dyt_backward(const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                    Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) override;
  void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  void embedding_backward(const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) override;
  void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index, double label_smoothing,
                     Tensor& loss, Tensor& stats) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& stats, const Tensor& gloss,
                              int64_t ignore_index, double label_smoothing, Tensor& glogits) override;
  void dropout(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) override;
  void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) override;
  void adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1, double beta2,
                   double eps, double weight_decay, bool decoupled, int64_t step) override;
};

}  // namespace skipgrad
