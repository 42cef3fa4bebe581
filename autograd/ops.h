// Every differentiable op. Each checks its arguments (throwing skipgrad::Error that names the op and the
// offending shapes/dtypes/devices), runs its forward through the device's backend and, when grad mode is on
// and an input requires grad, records a node whose backward is written next to the forward in the .cpp file of
// its family:
//   ops_elementwise.cpp  arithmetic with broadcasting, scalar ops, activations
//   ops_matmul.cpp       matmul / batched matmul, linear
//   ops_reduce.cpp       sum, mean, max, min, cumsum; sum_to (a gradient summed back to a broadcast input's shape),
//                        norm2 / norm2_f64 (L2 norms, not recorded)
//   ops_view.cpp         reshape, transpose, permute, slice, expand, contiguous, casts, concat/split/stack
//   ops_nn.cpp           softmax, log_softmax, layer_norm, rms_norm, l2_norm, dyt, embedding, cross_entropy,
//                        dropout, masked_fill, where
//   ops_index.cpp        argmax, topk, sort, argsort, gather, index_select, multinomial
//   ops_attention.cpp    fused scaled-dot-product attention, rotary embedding
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "tensor/random.h"
#include "tensor/tensor.h"

namespace skipgrad {

// ---- elementwise, numpy broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor reciprocal(const Tensor& a);
Tensor pow(const Tensor& a, double exponent);
Tensor abs(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
enum class GeluApprox { Erf, Tanh };
Tensor gelu(const Tensor& a, GeluApprox approx = GeluApprox::Erf);
Tensor silu(const Tensor& a);
// Comparisons (not differentiable): 1 or 0 in a's dtype.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(const Tensor& a, double s);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(const Tensor& a, double s);

// ---- matrix products ----
// [..., n, k] @ [..., k, m] with broadcast leading dims; 1-D operands as in numpy. trans_* transposes the last two
// dims of that operand first (no copy).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x [..., in] @ weight[out, in]^T + bias[out] (bias may be undefined). One GEMM over all leading dims.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- reductions ----
// Sums of an integer tensor are exact int64 and its max/min exact in its dtype (torch's); mean takes floats.
Tensor sum(const Tensor& a);
Tensor sum(const Tensor& a, const Shape& dims, bool keepdim = false);
Tensor mean(const Tensor& a);  // of no elements: 0 (torch gives NaN); so is a mean over an empty dim
Tensor mean(const Tensor& a, const Shape& dims, bool keepdim = false);
// Maximum over dims (empty dims: all of them); the gradient is shared equally among tied maxima.
Tensor max(const Tensor& a, const Shape& dims, bool keepdim = false);
Tensor min(const Tensor& a, const Shape& dims, bool keepdim = false);
Tensor max(const Tensor& a);  // over all elements (torch.max(a)), a 0-d tensor
Tensor min(const Tensor& a);
// Inclusive prefix sums along dim (torch.cumsum); any dtype, differentiable for floats; integers sum into int64.
Tensor cumsum(const Tensor& a, int64_t dim);
// Sums `g` down to `shape` (the reverse of broadcasting); not recorded. Used by backward functions.
Tensor sum_to(const Tensor& g, const Shape& shape);
// sqrt(sum(t^2)) over all elements as a [1] tensor of t's dtype on t's device: one backend reduction accumulated in
// double, no temporary the size of t, the root taken before the store (a float32 norm of 2e20 is not inf); not
// recorded. Used for gradient norms (tracking in backward, clipping).
Tensor norm2(const Tensor& t);
// Each tensor's norm kept in float64 ([ts.size()] on their device, one Backend::norm_many call): no rounding to a
// tensor's dtype, so a bf16 tensor's norm has all its digits and a float32 one is right past float32's range. For
// clipping's gradient norms and the graph's value and gradient norms; ts not empty, all on one device.
Tensor norm2_f64(const std::vector<Tensor>& ts);

// ---- views and layout (the Tensor methods forward here) ----
Tensor reshape(const Tensor& a, const Shape& shape);
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);
Tensor permute(const Tensor& a, const Shape& order);
Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& a, const Shape& shape);
Tensor concat(const std::vector<Tensor>& ts, int64_t dim);
std::vector<Tensor> split(const Tensor& a, int64_t size, int64_t dim);  // chunks of `size` (last may be smaller)
// `chunks` pieces of equal size but the last (fewer when they would be empty; `chunks` empty ones of an empty dim)
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim);
Tensor stack(const std::vector<Tensor>& ts, int64_t dim);

// ---- neural-network ops ----
// A row holding NaN or +inf is NaN throughout, as torch's. A row of only -inf (every class masked by hand with
// masked_fill) gives zeros in softmax, with no gradient, and -inf in log_softmax, where torch gives NaN; log_softmax
// passes a -inf entry's gradient through unchanged (gx = g - exp(y) sum(g) = g), in such a row as in any other.
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Normalises over the last dim; gamma/beta [d] may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5);
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// x / max(||x||_2, eps) over the last dim (the QK-norm of Henry et al.).
Tensor l2_norm(const Tensor& x, double eps = 1e-12);
// DyT, the element-wise stand-in for a norm of Zhu et al. 2025 ("Transformers without Normalization"):
// weight ⊙ tanh(alpha · x) + bias over the last dim, alpha one number ([1] or []), weight/bias [d] or undefined.
Tensor dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias);
// weight [V, d], ids int64 of any shape -> [..., d]; rows of padding_idx get no gradient (-1: none).
Tensor embedding(const Tensor& weight, const Tensor& ids, int64_t padding_idx = -1);
enum class Reduction { Mean, Sum, None };
// logits [N, V] (or [..., V]), targets int64 [N] (or [...]). Mean is over targets != ignore_index; with every
// target ignored (a batch of padding) it is 0 with zero gradients, where torch gives NaN.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     double label_smoothing = 0.0, Reduction reduction = Reduction::Mean);
// Inverted dropout, p in [0, 1]; identity when !training or p == 0, zeros at p = 1. Random numbers from `gen`
// (default generator if null).
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr);
// x where mask == 0, value where mask != 0 (mask broadcast to x).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- indices: pick, read and draw elements by index ----
// Index (int64) of the largest value along dim, the first of equal ones, a NaN's if there is one (torch.argmax).
// Not differentiable: nothing is recorded.
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);
// The k largest (smallest when !largest) elements along dim, in order, and their int64 indices (torch.topk, sorted):
// equal values in index order, a NaN counted as the largest. values is gather(a, dim, indices), so it carries a's
// gradient. Per line of n on the CPU: k scans for k = 1 or n <= 16, else a sort, O(n log k); on the GPU a thread
// scans each line of n <= 64, a block a longer one k times for k <= 32, and all lines are merge-sorted together for
// more. A 0-d a is a line of one (dim 0 or -1, k 1), as torch; so for sort, argsort, argmax, softmax, log_softmax
// and cumsum.
struct TopK {
  Tensor values, indices;
};
TopK topk(const Tensor& a, int64_t k, int64_t dim = -1, bool largest = true);
// a sorted along dim, ascending (descending: largest first), and where each value came from (torch.sort with
// stable=True): equal values keep their index order, NaNs go last (first when descending). The values carry a's
// gradient, as topk's. O(n log n) per line of n on the CPU; on the GPU a merge sort, O(n log^2 n), in parallel.
TopK sort(const Tensor& a, int64_t dim = -1, bool descending = false);
// sort's indices alone (torch.argsort(stable=True)); not differentiable.
Tensor argsort(const Tensor& a, int64_t dim = -1, bool descending = false);
// out[..., j, ...] = a[..., index[..., j, ...], ...] along dim (torch.gather): index int64 of a's rank, no larger
// than a on the other dims; out has index's shape. The gradient of a element read several times is their sum. An
// index out of range is an error (on the GPU: found by the kernel, reported at the next sync, as embedding's).
// An integer a (ids) is gathered too, every value exactly, without a gradient.
Tensor gather(const Tensor& a, int64_t dim, const Tensor& index);
// a's slices at the positions of a 1-D int64 index along dim (torch.index_select); recorded as a gather.
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);
// num_samples category indices (int64 [..., num_samples]) per row of weights [..., V] (nonnegative, finite, at least
// one positive per row; need not sum to 1), as torch.multinomial; without replacement a row needs num_samples
// positive weights. Checks the weights with one host read. Reproducible from `gen`'s seed on every device.
Tensor multinomial(const Tensor& probs, int64_t num_samples, bool replacement = false, Generator* gen = nullptr);

// ---- fused attention ----
// q [B, H, Tq, dh], k and v [B, H, Tk, dh]. softmax(q k^T * scale + mask) v, one node, analytic backward.
// key_padding_mask: [B, Tk], nonzero = masked out (may be undefined). causal masks key j > query i + (Tk - Tq).
// A query whose keys are all masked (causal with Tq > Tk, a fully padded row) gets zeros and no gradient, where
// torch's softmax over -inf scores gives NaN.
// ALiBi (Press et al. 2022), when alibi_slopes is defined: the score of query i and key j in head h of batch entry b
// gets the bias  - alibi_slopes[h] * |query_positions[b, i] - key_positions[b, j]|  before the masks and softmax
// (a causal query's keys are never after it, so this is the paper's -m (i - j); an encoder's is symmetric).
// alibi_slopes [H] in q's dtype (float32 for bf16 q), positions int64 [B, Tq] and [B, Tk]: constants, no gradient
// (slopes that require grad are refused). nn::alibi_slopes(H) gives the paper's.
// bias, when defined: added to the scaled scores before the masks, as SDPA's float attn_mask; 4-D, each dim of size
// 1 or of [B, H, Tq, Tk]'s (broadcast), q's dtype. It may require grad (a learned relative-position bias, T5's): its
// gradient is the scores' gradient dS summed over the broadcast dims.
struct AttentionOptions {
  bool causal = false;
  double scale = -1;  // -1: 1/sqrt(dh)
  double dropout = 0;
  bool training = true;
  Generator* gen = nullptr;
  Tensor alibi_slopes, query_positions, key_positions;
  Tensor bias;
};
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask = Tensor(),
                 const AttentionOptions& opt = {});

// ---- rotary position embedding (RoPE; GPT-NeoX / LLaMA's half split) ----
// x [B, H, T, dh], dh even: each pair (x_i, x_{i+dh/2}) of row (b, h, t) rotates by the angle of (b, t, i), given
// by its cosine and sine in cos, sin [B or 1, T, dh/2]:
//   y = x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin],   rotate_half(x) = [-x_{dh/2:}, x_{:dh/2}]
// One node; the gradient is the inverse rotation of the output's, to x only: cos and sin are constants (one that
// requires grad is refused). They take x's dtype (float32 for bf16 x). The output is laid out like x when x is a
// projection's [B, T, H, dh] buffer seen with heads second (as the attention op's output), else contiguous.
Tensor rotary(const Tensor& x, const Tensor& cos, const Tensor& sin);

// ---- helpers for op authors ----
// Throws unless all defined tensors share a device (naming op and devices).
void check_same_device(const char* op, const std::vector<Tensor>& ts);
// Throws unless all defined tensors share a floating dtype.
void check_same_float_dtype(const char* op, const std::vector<Tensor>& ts);
// Records out (already holding src's values in another floating dtype) as Tensor::to(dtype) of src would: a
// `to_dtype` node whose backward casts the gradient back. For casts computed elsewhere (AutocastBF16::precast).
void record_cast(const Tensor& src, Tensor& out);

}  // namespace skipgrad
