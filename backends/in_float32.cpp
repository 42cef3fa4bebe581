#include "backends/in_float32.h"

#include <atomic>
#include <deque>
#include <utility>

namespace skipgrad {

namespace {
std::atomic<int64_t> g_calls{0};

// The float32 stand-ins of one call: in() widens bf16 inputs, out() gives bf16 outputs a float32 stand-in that done()
// rounds back into them.
class Widened {
 public:
  explicit Widened(Backend& backend) : backend_(backend) { g_calls++; }
  // t itself, or a contiguous float32 copy of it when t is bf16.
  const Tensor& in(const Tensor& t) {
    if (!t.defined() || t.dtype() != DType::BF16) return t;
    ins_.push_back(widened(t));
    return ins_.back();
  }
  // t itself, or a float32 stand-in for a bf16 t. keep_values: the stand-in starts with t's values (outputs the
  // kernel accumulates into, or updates in place).
  Tensor& out(Tensor& t, bool keep_values = false) {
    if (!t.defined() || t.dtype() != DType::BF16) return t;
    Tensor stand_in = keep_values ? widened(t) : Tensor::empty(t.shape(), DType::F32, t.device());
    outs_.emplace_back(&t, std::move(stand_in));
    return outs_.back().second;
  }
  // Rounds the stand-ins back into their bf16 tensors; true, for the callers' `return`.
  bool done() {
    for (auto& [target, stand_in] : outs_) backend_.copy(stand_in, *target);
    return true;
  }

 private:
  Tensor widened(const Tensor& t) {
    Tensor f = Tensor::empty(t.shape(), DType::F32, t.device());
    backend_.copy(t, f);
    return f;
  }
  Backend& backend_;
  std::deque<Tensor> ins_;  // deques: references handed out stay valid as they grow
  std::deque<std::pair<Tensor*, Tensor>> outs_;
};
}  // namespace

int64_t in_float32_calls() { return g_calls.load(); }

namespace in_float32 {

bool random_uniform(Backend& b, Tensor& out, double low, double high, uint64_t seed, uint64_t offset) {
  if (!any_bf16({&out})) return false;
  Widened f(b);
  b.random_uniform(f.out(out), low, high, seed, offset);
  f.done();
  // Rounding to bfloat16 (8 significant bits) can land on `high` (u within 2^-9 of 1), or below a `low` that
  // bfloat16 does not hold: those become the largest bfloat16 below high, the smallest at or above low.
  if (high > low && out.numel() > 0) {
    auto step = [](bf16 v, bool up) {  // the next bfloat16 up or down (sign and magnitude bits)
      const bool negative = v.bits & 0x8000;
      if ((v.bits & 0x7FFF) == 0) return bf16::from_bits(up ? 0x0001 : 0x8001);
      return bf16::from_bits(negative == up ? v.bits - 1 : v.bits + 1);
    };
    bf16 top(static_cast<float>(high)), bottom(static_cast<float>(low));
    while ((double)static_cast<float>(top) >= high) top = step(top, false);
    while ((double)static_cast<float>(bottom) < low) bottom = step(bottom, true);
    auto bound = [&](bf16 v) {
      return Tensor::full({}, (double)static_cast<float>(v), DType::BF16, out.device()).expand(out.shape());
    };
    b.binary(BinaryOp::Minimum, out, bound(top), out);
    b.binary(BinaryOp::Maximum, out, bound(bottom), out);
  }
  return true;
}

bool random_normal(Backend& b, Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) {
  if (!any_bf16({&out})) return false;
  Widened f(b);
  b.random_normal(f.out(out), mean, std, seed, offset);
  return f.done();
}

bool unary(Backend& b, UnaryOp op, const Tensor& x, Tensor& out, double alpha) {
  if (!any_bf16({&x, &out})) return false;
  Widened f(b);
  b.unary(op, f.in(x), f.out(out), alpha);
  return f.done();
}

bool unary_backward(Backend& b, UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                    double alpha) {
  if (!any_bf16({&x, &gx})) return false;
  Widened f(b);
  b.unary_backward(op, f.in(x), f.in(y), f.in(gy), f.out(gx), alpha);
  return f.done();
}

bool count_nonfinite(Backend& b, const Tensor& x, int64_t& count) {
  if (!any_bf16({&x})) return false;
  Widened f(b);
  count = b.count_nonfinite(f.in(x));
  return true;
}

bool reduce(Backend& b, ReduceOp op, const Tensor& x, const std::vector<bool>& red, Tensor& out) {
  if (!any_bf16({&x, &out})) return false;
  Widened f(b);
  b.reduce(op, f.in(x), red, f.out(out));
  return f.done();
}

bool cumsum(Backend& b, const Tensor& x, int64_t dim, bool reverse, Tensor& out) {
  if (!any_bf16({&x, &out})) return false;
  Widened f(b);
  b.cumsum(f.in(x), dim, reverse, f.out(out));
  return f.done();
}

bool softmax(Backend& b, const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) {
  if (!any_bf16({&x, &y})) return false;
  Widened f(b);
  b.softmax(f.in(x), f.out(y), log, mask);
  return f.done();
}

bool softmax_backward(Backend& b, const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  if (!any_bf16({&y, &gx})) return false;
  Widened f(b);
  b.softmax_backward(f.in(y), f.in(gy), f.out(gx), log);
  return f.done();
}

bool layer_norm(Backend& b, const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                Tensor& mean, Tensor& rstd) {
  if (!any_bf16({&x, &gamma, &beta, &y})) return false;
  Widened f(b);
  b.layer_norm(f.in(x), f.in(gamma), f.in(beta), eps, f.out(y), f.out(mean), f.out(rstd));
  return f.done();
}

bool layer_norm_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                         const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta, bool accumulate_gx) {
  if (!any_bf16({&gy, &x, &gamma, &gx, &ggamma, &gbeta})) return false;
  Widened f(b);
  b.layer_norm_backward(f.in(gy), f.in(x), f.in(mean), f.in(rstd), f.in(gamma), f.out(gx, accumulate_gx),
                        f.out(ggamma), f.out(gbeta), accumulate_gx);
  return f.done();
}

bool rms_norm(Backend& b, const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  if (!any_bf16({&x, &weight, &y})) return false;
  Widened f(b);
  b.rms_norm(f.in(x), f.in(weight), eps, f.out(y), f.out(rstd));
  return f.done();
}

bool rms_norm_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                       Tensor& gx, Tensor& gweight, bool accumulate_gx) {
  if (!any_bf16({&gy, &x, &weight, &gx, &gweight})) return false;
  Widened f(b);
  b.rms_norm_backward(f.in(gy), f.in(x), f.in(rstd), f.in(weight), f.out(gx, accumulate_gx), f.out(gweight),
                      accumulate_gx);
  return f.done();
}

bool dyt(Backend& b, const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) {
  if (!any_bf16({&x, &alpha, &weight, &bias, &y})) return false;
  Widened f(b);
  b.dyt(f.in(x), f.in(alpha), f.in(weight), f.in(bias), f.out(y));
  return f.done();
}

bool dyt_backward(Backend& b, const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                  Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) {
  if (!any_bf16({&gy, &x, &alpha, &weight, &gx, &galpha, &gweight, &gbias})) return false;
  Widened f(b);
  b.dyt_backward(f.in(gy), f.in(x), f.in(alpha), f.in(weight), f.out(gx, accumulate_gx), f.out(galpha),
                 f.out(gweight), f.out(gbias), accumulate_gx);
  return f.done();
}

bool embedding(Backend& b, const Tensor& weight, const Tensor& ids, Tensor& out) {
  if (!any_bf16({&weight, &out})) return false;
  Widened f(b);
  b.embedding(f.in(weight), ids, f.out(out));
  return f.done();
}

bool embedding_backward(Backend& b, const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) {
  if (!any_bf16({&gout, &gweight})) return false;
  Widened f(b);
  b.embedding_backward(ids, f.in(gout), f.out(gweight, /*keep_values=*/true), padding_idx);
  return f.done();
}

bool cross_entropy(Backend& b, const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                   double label_smoothing, Tensor& loss, Tensor& stats) {
  if (!any_bf16({&logits, &loss})) return false;
  Widened f(b);
  b.cross_entropy(f.in(logits), targets, ignore_index, label_smoothing, f.out(loss), f.out(stats));
  return f.done();
}

bool cross_entropy_backward(Backend& b, const Tensor& logits, const Tensor& targets, const Tensor& stats,
                            const Tensor& gloss, int64_t ignore_index, double label_smoothing, Tensor& glogits) {
  if (!any_bf16({&logits, &glogits})) return false;
  Widened f(b);
  b.cross_entropy_backward(f.in(logits), targets, f.in(stats), f.in(gloss), ignore_index, label_smoothing,
                           f.out(glogits));
  return f.done();
}

bool dropout(Backend& b, const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) {
  if (!any_bf16({&x, &y})) return false;
  Widened f(b);
  b.dropout(f.in(x), f.out(y), p, seed, offset);
  return f.done();
}

bool rotary(Backend& b, const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) {
  if (!any_bf16({&x, &out})) return false;  // (cos and sin are float32 for bf16 x)
  check_rotary_operands(x, cos, sin, out);
  Widened f(b);
  b.rotary(f.in(x), cos, sin, inverse, f.out(out));
  return f.done();
}

bool adam_update(Backend& b, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
  if (!any_bf16({&param, &grad, &m, &v})) return false;
  Widened f(b);
  b.adam_update(f.out(param, true), f.in(grad), f.out(m, true), f.out(v, true), lr, beta1, beta2, eps, weight_decay,
                decoupled, step);
  return f.done();
}

}  // namespace in_float32

}  // namespace skipgrad
