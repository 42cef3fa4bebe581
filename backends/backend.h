// The kernel interface every device implements.
//
// Kernels work on Tensors as plain data (storage, shape, strides, dtype); they know nothing of autograd.
// The op layer (autograd/) validates arguments, allocates outputs and then calls one of these. Unless a kernel
// says otherwise, float kernels support float32 and float64, inputs may be strided, and outputs are contiguous
// tensors allocated by the caller.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace skipgrad {

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Rsqrt, Abs, Tanh, Sigmoid, Relu,
  GeluTanh,   // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  GeluErf,    // 0.5 x (1 + erf(x / sqrt(2)))
  Silu,       // x * sigmoid(x)
  Pow,        // x^alpha
  AddScalar,  // x + alpha
  MulScalar,  // x * alpha
  RsubScalar, // alpha - x
  Reciprocal, // 1 / x
};

enum class BinaryOp {
  Add, Sub, Mul, Div,
  Maximum, Minimum,
  Eq, Ne, Lt, Le, Gt, Ge,  // 1 or 0 in the output dtype
};

// Norm2: sqrt(sum x^2), accumulated in double and rooted before the store, so a float32 result holds every norm
// that fits float32 even when its square does not (gradients of 1e20 or 1e-23).
enum class ReduceOp { Sum, Mean, Max, Min, Norm2 };

// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], row-major, for b in [0, batch).
// op(X) is X or X^T. A batch stride of 0 reuses one matrix for every batch entry.
// Two batch dims: with batch_inner > 0, entry b of X starts at (b / batch_inner) * stride_x_outer +
// (b % batch_inner) * stride_x (batch_offset below), e.g. attention's (batch, head) matrices inside the
// [B, T, H, dh] output of a projection, whose heads are dh apart and batch entries T*H*dh.
struct GemmArgs {
  DType dtype = DType::F32;
  bool trans_a = false, trans_b = false;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  const void* a = nullptr; int64_t lda = 0, stride_a = 0;
  const void* b = nullptr; int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;       int64_t ldc = 0, stride_c = 0;
  double alpha = 1, beta = 0;
  int64_t batch_inner = 0, stride_a_outer = 0, stride_b_outer = 0, stride_c_outer = 0;
  // C is float32 while A and B are bfloat16 (dtype BF16 only): the float32 accumulation stored unrounded. Autocast's
  // gradients of float32 tensors cast to bf16 (master weights, activations) come out of their GEMM in float32, and
  // the cast's backward has nothing to convert (autograd's grad_dtype).
  bool c_float32 = false;
  DType c_dtype() const { return c_float32 ? DType::F32 : dtype; }
};
// A float32 and a bfloat16 operand (either order): the one mix of dtypes Backend::binary takes, into float32.
inline bool float32_with_bf16(DType a, DType b) {
  return (a == DType::F32 && b == DType::BF16) || (a == DType::BF16 && b == DType::F32);
}
// Throws an Error naming `op` unless a, b and out have dtypes Backend::binary takes; true when they are mixed.
bool check_binary_dtypes(const char* op, const Tensor& a, const Tensor& b, const Tensor& out);
// Throws an Error naming `op` unless c_float32 comes with bfloat16 operands.
void check_gemm_dtypes(const char* op, const GemmArgs& g);
// Throws an Error naming `op` and `library` unless m, n, k, the leading dimensions and the batch count fit the int
// that BLAS libraries (OpenBLAS's CBLAS, cuBLAS) take.
void check_gemm_sizes(const char* op, const GemmArgs& g, const char* library);

// Where batch entry b starts, in elements, for an operand with these strides (GemmArgs' two batch dims).
inline int64_t batch_offset(int64_t b, int64_t inner, int64_t stride, int64_t stride_outer) {
  return inner > 0 ? (b / inner) * stride_outer + (b % inner) * stride : b * stride;
}

// Attention's masks, applied inside Backend::softmax as if masked_fill had put -inf there first (y = 0 there; log:
// -inf; a row with every column masked gives y = 0). x's rows are then scores [B, H, Tq, Tk] seen as
// [B*H*Tq, Tk]:
//   causal_queries = Tq > 0: in row i of each block of Tq rows (queries), the columns (keys) j > i + Tk - Tq;
//   key_padding, when defined: contiguous int64 [B, Tk]; in every row of batch entry b = row / rows_per_batch
//   (rows_per_batch = H*Tq), the columns j with key_padding[b, j] != 0.
// ALiBi's bias, when alibi_slopes is defined, is added to the scores first (attention's AttentionOptions): row
// r = (b*H + h)*Tq + i, column j gets  - alibi_slopes[h] * |query_positions[b, i] - key_positions[b, j]|,  with
// alibi_slopes contiguous [H] of x's dtype (float32 for bf16 x), the positions contiguous int64 [B, Tq], [B, Tk].
struct SoftmaxMask {
  int64_t causal_queries = 0;
  Tensor key_padding;
  int64_t rows_per_batch = 0;
  Tensor alibi_slopes, query_positions, key_positions;
};
// Throws an Error naming `op` unless `mask` fits x's rows and cols as described above (every backend checks).
void check_softmax_mask(const char* op, const Tensor& x, const SoftmaxMask& mask);

// One parameter of a multi-tensor Adam update (Backend::adam_update_many): its four tensors (contiguous, of one
// shape) and its own weight decay (0 for norms and biases when the optimizer spares them).
struct AdamTensors {
  Tensor* param;
  const Tensor* grad;
  Tensor* m;
  Tensor* v;
  double weight_decay;
};

// The id gather (which looks its elements up with Backend::embedding) gives an index that was out of range.
constexpr int64_t kGatherOutOfRange = std::numeric_limits<int64_t>::min();

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory and data movement ----
  virtual void fill(Tensor& out, double value) = 0;
  // dst[i] = src[i], any strides on both sides, converting dtype; shapes equal (caller broadcasts src).
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  // dsts[i] = srcs[i] converted to dsts[i]'s dtype, for many pairs of tensors of one shape each (autocast's casts
  // of a model's weights, AutocastBF16::precast). The default calls copy per pair; the CUDA backend launches one
  // kernel for all pairs when they are contiguous and share one pair of dtypes.
  virtual void copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts);
  // t *= scale for every tensor, in place, with scale a floating [1] tensor on their device that is read there,
  // never by the host (gradient clipping's factor: nn::clip_grads_to_norm). A float32 t is multiplied by
  // float(scale), as unary MulScalar would. The default: a broadcast multiply per tensor; the CUDA backend: one
  // launch for all (copy_many's kernel) when they are contiguous and of one dtype.
  virtual void scale_many(const std::vector<Tensor*>& ts, const Tensor& scale);
  // out[i] = sqrt(sum of ts[i]'s squares), accumulated in double; out a contiguous float64 [ts.size()] on the tensors'
  // device: all gradient norms of a clipping step in one call (PyTorch's _foreach_norm). The CPU backend: one pass
  // over all of them, the CUDA backend two launches per dtype; every norm stays in double (a strided or bf16 tensor
  // included), so each backend implements it rather than a per-tensor default that would round.
  virtual void norm_many(const std::vector<const Tensor*>& ts, Tensor& out) = 0;
  virtual void arange(Tensor& out, double start, double step) = 0;  // contiguous out
  virtual void random_uniform(Tensor& out, double low, double high, uint64_t seed, uint64_t offset) = 0;
  virtual void random_normal(Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) = 0;
  // Uniform [0, 1) with a counter per row: out[r, c] = random_uniform01(seed, row_counters[r] + c), out a contiguous
  // float64 [R, C], row_counters int64 [R] (read as uint64) on out's device. A row's numbers depend on its counter
  // alone, not on the rows beside it (sampling: a sentence draws the same whatever batch it is decoded in).
  virtual void random_uniform_rows(Tensor& out, const Tensor& row_counters, uint64_t seed) = 0;

  // ---- elementwise ----
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) = 0;
  // gx = gy * d op(x)/dx; y = op(x) is given for ops whose derivative reads it cheaply. Relu's reads the sign of
  // x only, which y has too: autograd passes y as x.
  virtual void unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                              double alpha) = 0;
  // a and b are already broadcast (possibly zero strides) to out's shape; all three of one dtype, or a float32 out
  // with a float32 and a bfloat16 operand (read as it is, widened: autocast's x + sublayer(x)).
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  // out = cond != 0 ? a : b; all three broadcast to out's shape.
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) = 0;

  // ---- reductions ----
  // out has x's rank with size 1 on every reduced dim (reduce[d] true).
  virtual void reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce, Tensor& out) = 0;
  // Inclusive prefix sums along dim: out[.., i, ..] = sum_{j <= i} x[.., j, ..] (reverse: sum_{j >= i}).
  // x and out are contiguous and of one shape and dtype; floats accumulate in double, integers in int64.
  virtual void cumsum(const Tensor& x, int64_t dim, bool reverse, Tensor& out) = 0;
  // The indices along dim of each line's k first elements in topk's order (elementwise::topk_before: largest or
  // smallest values first, equal ones in index order, a NaN counting as the largest), in that order. x contiguous,
  // not bfloat16, 0 <= k <= its size at dim; out contiguous int64 of x's shape with size k at dim. argmax is k = 1,
  // sort k = n. Small k: k scans of a line of n, O(n k); larger k: the CPU sorts (O(n log k)), the GPU merge-sorts
  // every line in log2(n) passes.
  virtual void topk(const Tensor& x, int64_t dim, int64_t k, bool largest, Tensor& out) = 0;
  // Number of NaN/Inf elements (anomaly mode; synchronises on devices).
  virtual int64_t count_nonfinite(const Tensor& x) = 0;

  // ---- matrix products ----
  virtual void gemm(const GemmArgs& args) = 0;
  // A linear layer's GEMMs with their bias work (args: batch 1, beta 0). The defaults run the bias work as
  // kernels of its own around gemm; the CUDA backend fuses it into the GEMM (cuBLASLt epilogues) where it can.
  //   gemm_bias:      C = op(A) op(B) + bias, the contiguous bias [n] added to every row; c is C as a
  //                   contiguous [m, n] tensor (a linear layer's forward).
  //   gemm_bias_grad: C = op(A) op(B), and bias_grad[i] = sum_k op(A)[i, k] for i < m into the contiguous
  //                   bias_grad [m]; a is A as stored ([k, m] if args.trans_a, else [m, k]). With A the output
  //                   gradient g^T, these are a linear layer's weight and bias gradients from one read of g.
  virtual void gemm_bias(const GemmArgs& args, const Tensor& bias, Tensor& c);
  virtual void gemm_bias_grad(const GemmArgs& args, const Tensor& a, Tensor& bias_grad);

  // ---- fused row kernels: x is contiguous [rows, cols], the op works along cols ----
  // mask: attention's masks inside the softmax (SoftmaxMask below); {} for a plain softmax.
  virtual void softmax(const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) = 0;
  virtual void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) = 0;
  // y = (x - mean) * rstd * gamma + beta; saves mean [rows, 2] (each row's mean as hi + lo: hi its rounding to the
  // stats' dtype, lo the rest, so the backward's x - mean is the forward's) and rstd [rows]. gamma/beta may be
  // undefined.
  virtual void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) = 0;
  // gx/ggamma/gbeta may be undefined (not needed). accumulate_gx: gx += the input gradient (a fan-in sum that
  // gx already holds, autograd's take_grad_accumulator) instead of gx = it.
  virtual void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta,
                                   bool accumulate_gx) = 0;
  // y = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps); weight may be undefined.
  virtual void rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) = 0;
  virtual void rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                                 Tensor& gx, Tensor& gweight, bool accumulate_gx) = 0;  // as layer_norm's
  // DyT (Zhu et al. 2025): y = weight ⊙ tanh(alpha·x) + bias along the rows; alpha a one-element tensor read where it
  // lives (never by the host), weight/bias [cols] or undefined; parameters of x's dtype, or float32 for a bf16 x.
  virtual void dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) = 0;
  // t = tanh(alpha·x), gu = gy ⊙ weight ⊙ (1 − t²):  gx (+)= alpha·gu (accumulate_gx as layer_norm's),
  // galpha [1] = Σ gu ⊙ x,  gweight = Σ_rows gy ⊙ t,  gbias = Σ_rows gy. Undefined outputs are not computed; the sums
  // are in a fixed order (deterministic).
  virtual void dyt_backward(const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                            Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) = 0;

  // ---- embedding: weight [V, d], ids int64 any shape, out [..., d] ----
  // An id out of [0, V) is an error: the CPU throws, the GPU writes a zero row and reports it at the next sync
  // (as gather's when the id is kGatherOutOfRange, which gather puts where its index was out of range).
  virtual void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) = 0;
  // gweight (zeroed by the caller) += scatter of gout rows; rows of padding_idx get nothing (-1: none).
  virtual void embedding_backward(const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) = 0;

  // ---- cross entropy over rows of logits [N, V] with int64 targets [N] ----
  // loss[i] = (1-ls) * (-logp[i, t_i]) + ls * mean_j(-logp[i, j]), and 0 where t_i == ignore_index.
  // stats [N, 2], saved for backward: row i's max m_i and log(sum_j exp(x_ij - m_i)) (their sum, the logsumexp,
  // would round: softmax = exp((x - m) - log_s) keeps its accuracy for logits of any size). loss, stats and gloss
  // are float32 for bf16 logits (computed in float32 on the widened logits), else of the logits' dtype; glogits
  // has the logits' dtype.
  virtual void cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                             double label_smoothing, Tensor& loss, Tensor& stats) = 0;
  // glogits[i, :] = gloss[i] * (softmax(row) - (1-ls) onehot(t_i) - ls/V); zero rows where ignored.
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& stats,
                                      const Tensor& gloss, int64_t ignore_index, double label_smoothing,
                                      Tensor& glogits) = 0;

  // ---- dropout: y[i] = x[i] * mask_i, mask_i = (u_i >= p) / (1 - p) with u_i uniform from (seed, offset + i) ----
  // x and y contiguous, of one shape and dtype (y may be x). The mask is never stored: dropout's backward is this
  // same call on the output gradient, with the same seed and offset.
  virtual void dropout(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) = 0;

  // ---- rotary position embedding (RoPE, GPT-NeoX's half split): x and out [B, H, T, dh], dh even, any strides
  // (out may be a view laid out like x); cos and sin contiguous [B or 1, T, dh/2] in x's dtype (float32 for
  // bf16 x). With c = cos[b, t, i], s = sin[b, t, i] (s negated when inverse) and i < dh/2:
  //   out[.., i] = x[.., i] c - x[.., i + dh/2] s,   out[.., i + dh/2] = x[.., i + dh/2] c + x[.., i] s
  // A rotation of each pair (x_i, x_{i+dh/2}) by the angle whose cos and sin are given; inverse rotates back,
  // which is also the backward (the rotation's transpose).
  virtual void rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) = 0;

  // ---- optimizers: fused updates; a parameter's tensors are all contiguous and of one shape ----
  // Adam/AdamW; decoupled=true applies weight decay as p -= lr*wd*p (AdamW), else adds wd*p to the gradient.
  virtual void adam_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, double lr, double beta1,
                           double beta2, double eps, double weight_decay, bool decoupled, int64_t step) = 0;
  // The same update for many parameters, each with its own weight decay: the results are those of adam_update
  // on each entry. The default calls adam_update once per entry (the CPU backend); the CUDA backend launches
  // one kernel over all of them.
  virtual void adam_update_many(const std::vector<AdamTensors>& ts, double lr, double beta1, double beta2,
                                double eps, bool decoupled, int64_t step);

  // ---- timing marks, for the profiler (autograd/profiler.h) ----
  // A point on this device's timeline, after the work queued so far. The default is the host clock, right for
  // the CPU (its work is done when a call returns); the CUDA backend records an event on its stream.
  struct TimeMark {
    virtual ~TimeMark() = default;
  };
  virtual std::unique_ptr<TimeMark> time_mark();
  // Milliseconds from mark `from` to the later mark `to`, both made by this backend; waits until `to` is reached.
  virtual double elapsed_ms(const TimeMark& from, const TimeMark& to);
};

// Backend::cumsum's operands seen as [outer, n, inner] around dim, after checking its contract (x and out
// contiguous, of one shape and dtype): every backend's cumsum kernel walks this layout.
struct ScanLayout {
  int64_t outer = 1, n = 1, inner = 1;
};
ScanLayout cumsum_layout(const Tensor& x, int64_t dim, const Tensor& out);
// The same layout for Backend::topk's x, after checking its contract (out is [outer, k, inner]).
ScanLayout topk_layout(const Tensor& x, int64_t dim, int64_t k, const Tensor& out);
// Backend::random_uniform_rows' contract (out float64 [R, C] and row_counters int64 [R], contiguous, one device).
void check_random_rows_operands(const Tensor& out, const Tensor& row_counters);
// Backend::dropout's contract (x and y contiguous, of one shape and dtype), checked by every backend's dropout.
void check_dropout_operands(const Tensor& x, const Tensor& y);
// Backend::rotary's contract (shapes, dtypes, devices, cos and sin contiguous), checked by every backend's rotary.
void check_rotary_operands(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out);
// Backend::scale_many's contract (floating tensors on the scale's device, a one-element floating scale).
void check_scale_many(const std::vector<Tensor*>& ts, const Tensor& scale);
// Backend::norm_many's contract (floating tensors on out's device; out float64, contiguous, one element per tensor).
void check_norm_many(const std::vector<const Tensor*>& ts, const Tensor& out);

// How float32 matrix products may compute, for every backend (like torch.set_float32_matmul_precision): FP32
// (the default; float32 throughout, so devices agree), TF32 tensor cores (operands rounded to 10 mantissa bits) or
// BF16 tensor cores (operands rounded to bfloat16's 7); inputs, outputs and accumulation stay float32, float64
// products are unaffected. Only the CUDA backend has tensor cores: the CPU computes in float32 whatever the setting.
enum class MatmulPrecision { FP32, TF32, BF16 };
void set_float32_matmul_precision(MatmulPrecision p);
MatmulPrecision float32_matmul_precision();
// "fp32" | "tf32" | "bf16"; anything else is an Error naming the choices.
MatmulPrecision parse_matmul_precision(const std::string& s);
const char* matmul_precision_name(MatmulPrecision p);

// The backend of a device; throws a clear Error when the device's backend is not available.
Backend& backend_for(Device d);
void register_backend(Device::Kind kind, Backend* b);
bool cuda_available();  // built with CUDA and at least one device present

}  // namespace skipgrad
