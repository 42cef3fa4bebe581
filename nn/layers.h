// Basic layers: Linear, Embedding, SinusoidalPositions, RotaryEmbedding, Dropout, LayerNorm, RMSNorm, L2Norm, DyT, and
// the initialisers they use. Each forward opens `Scope s(name())`, so a node reads "enc.0.ffn.fc1.linear".
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "nn/module.h"
#include "tensor/tensor.h"

namespace skipgrad::nn {

// ---- initialisers: fill a tensor in place (not recorded), random numbers from the default generator ----
namespace init {
void uniform_(Tensor& t, double low, double high);
void normal_(Tensor& t, double mean, double std);
// normal(0, std) redrawn until inside ±cutoff·std (Megatron / OLMo "trunc_normal", cutoff 3)
void trunc_normal_(Tensor& t, double std, double cutoff = 3.0);
// fan_in = size(1), fan_out = size(0) of a 2-D weight [out, in] (torch's convention)
void xavier_uniform_(Tensor& t, double gain = 1.0);  // U(±gain·sqrt(6 / (fan_in + fan_out)))
void xavier_normal_(Tensor& t, double gain = 1.0);   // N(0, gain·sqrt(2 / (fan_in + fan_out)))
void constant_(Tensor& t, double value);
void scale_(Tensor& t, double s);  // t ← s·t: an init scaled on top of another (B2T's, Sub-LN's, T-Fixup's)
}  // namespace init

// y = x Wᵀ + b, W [out, in]. Default init is PyTorch's nn.Linear: kaiming_uniform(a=√5) = U(±1/√in) for W,
// U(±1/√in) for b. The reset_* methods re-initialise for other schemes.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x);

  void reset_torch_default();
  void reset_xavier_uniform(double gain = 1.0);
  void reset_xavier_normal(double gain = 1.0);
  void reset_trunc_normal(double std, double cutoff = 3.0);
  void zero_bias();
  // W ← s·W (and b ← s·b when with_bias), in place and not recorded: an init scaled on top of another (B2T's
  // L^-1/2, Sub-LN's γ).
  void rescale(double s, bool with_bias);

  int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined when built without one
};

// Token embedding E [V, d]; fairseq init N(0, d^-0.5) with the padding row zeroed. The √d scaling of fairseq is
// done by the model, not here. The padding row gets no gradient.
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, int64_t padding_idx = -1);
  Tensor forward(const Tensor& ids);  // int64 [...] -> [..., d]
  void reset_normal(double std, double cutoff = 0);  // cutoff > 0: truncated at ±cutoff·std; pad row zeroed
  int64_t vocab, dim, padding_idx;
  Tensor weight;
};

// fairseq's SinusoidalPositionalEmbedding: table row p = [sin(p·w_0..w_{h-1}), cos(p·w_0..w_{h-1})] with
// h = d/2, w_i = exp(-i·ln(10000)/(h-1)) (a zero column appended when d is odd), row padding_idx all zero.
// Positions count non-pad tokens from padding_idx + 1 (fairseq `make_positions`); pad tokens read the zero row.
// The table (max_positions + padding_idx + 1 rows) is a constant buffer (a file with another is refused), not a
// parameter.
class SinusoidalPositions : public Module {
 public:
  SinusoidalPositions(int64_t dim, int64_t max_positions, int64_t padding_idx);
  Tensor forward(const Tensor& ids);  // int64 [B, T] -> [B, T, d]: at(make_positions(ids))
  Tensor at(const Tensor& positions);  // the table's rows at make_positions' ids [B, T] -> [B, T, d]
  int64_t dim, max_positions, padding_idx;
  Tensor table;
};

// The rows of a table indexed by make_positions' ids, max_positions + padding_idx + 1, checked against overflow and
// against more than max_elements elements of `width` columns (max_positions may come from a command line); the
// Error names `who` and `what` ("learned table").
int64_t position_table_rows(int64_t max_positions, int64_t padding_idx, int64_t width, int64_t max_elements,
                            const char* who, const char* what);

// fairseq's make_positions: int64 [B, T] of ids -> their positions, padding_idx + 1, + 2, ... for the non-pad tokens
// of each row in order, padding_idx for pads (computed on ids' device, not recorded). On the CPU a row of more than
// max_positions real tokens is an Error naming `who`; on a GPU the lookup that reads the positions flags it.
Tensor make_positions(const Tensor& ids, int64_t padding_idx, int64_t max_positions, const std::string& who);

// The cosines and sines of the rotary angles at some positions: cos, sin [B, T, d_head/2] (undefined: no rotary).
struct RotaryAngles {
  Tensor cos, sin;
  bool defined() const { return cos.defined(); }
};

// Rotary position embedding (RoPE, Su et al. 2021) as GPT-NeoX and LLaMA apply it to each head's queries and keys:
// the pair (x_i, x_{i+d_head/2}) of a token n tokens after the first is rotated by θ_{n,i} = n · base^(-2i/d_head),
// so q·k depends on the positions only through their difference. Tables cos θ and sin θ for max_positions tokens
// (rows indexed like make_positions: row padding_idx + 1 + n for token n; rows up to padding_idx angle 0), computed
// in double and stored as float32 constant buffers, as SinusoidalPositions' table; no parameters.
class RotaryEmbedding : public Module {
 public:
  RotaryEmbedding(int64_t d_head, int64_t max_positions, int64_t padding_idx, double base);
  // positions int64 [B, T] (make_positions) -> their angles, for rotary() (autograd/ops.h).
  RotaryAngles forward(const Tensor& positions);
  // The tables follow the model's dtype, except that a bf16 model keeps them float32: rotary() takes float32 angles
  // for bf16 q and k (bf16 angles would be off by ~0.4% in cos and sin).
  using Module::to;
  void to(DType dtype) override;
  int64_t d_head, max_positions, padding_idx;
  double base;
  Tensor cos_table, sin_table;
};

// ALiBi's inputs to one self-attention: the heads' slopes [H] and the positions (make_positions' ids, [B, T]) of
// its tokens, which are its queries and its keys; undefined: no ALiBi.
struct AlibiBias {
  Tensor slopes, positions;
  bool defined() const { return slopes.defined(); }
};

// ALiBi's head slopes (Press et al. 2022, their code and BLOOM's): for H a power of two, m_h = 2^(-8h/H), h = 1..H;
// otherwise the slopes of the largest power of two H' < H, then every other slope of 2H', up to H.
std::vector<double> alibi_slopes(int64_t heads);

// Attention with linear biases (ALiBi): nothing is added to the embeddings; every self-attention's score of query
// i and key j in head h gets -m_h |p_i - p_j| (attention()'s AttentionOptions), so a head attends less the farther
// a key is, at its own rate. No parameters: the slopes are a float32 constant buffer, as RotaryEmbedding's tables.
class AlibiSlopes : public Module {
 public:
  explicit AlibiSlopes(int64_t heads);
  AlibiBias forward(const Tensor& positions);  // positions int64 [B, T] (make_positions) -> {slopes, positions}
  using Module::to;
  void to(DType dtype) override;  // as RotaryEmbedding's: a bf16 model keeps float32 slopes
  int64_t heads;
  Tensor slopes;
};

// T5's bucket of a relative position r = p_key - p_query (Raffel et al. 2020, their code and Hugging Face's
// _relative_position_bucket). bidirectional (an encoder): half the buckets for r > 0, half for r <= 0; otherwise (a
// causal decoder) every r > 0 is bucket 0. Of the n buckets of a side, distances |r| < n/2 get one each, and the
// rest share the other n/2 on a log scale up to max_distance; farther ones all go to the last:
//   bucket(|r|) = |r|                                                          for |r| < n/2
//               = min(n - 1, n/2 + floor(log(|r| / (n/2)) / log(max_distance / (n/2)) · (n - n/2)))   otherwise
// The log is taken in float32, as T5's code does, so the buckets are T5's exactly.
int64_t relative_position_bucket(int64_t relative, bool bidirectional, int64_t buckets, int64_t max_distance);

// T5's relative-position bias: the score of query i and key j in head h gets a learned weight[bucket(p_j - p_i), h]
// (attention()'s additive bias), with p make_positions' ids. One table per stack, which every self-attention of
// the stack shares, as T5's; its gradient is the sum of theirs. Parameter "weight" [buckets, H], initialised
// N(0, d_model^-1/2) as Hugging Face's T5; buffer "buckets", the bucket of every r in [-max_distance, max_distance]
// (int64 [2·max_distance + 1]; r farther than max_distance falls in the bucket of ±max_distance).
class RelativePositionBias : public Module {
 public:
  RelativePositionBias(int64_t heads, int64_t buckets, int64_t max_distance, bool bidirectional);
  // query_positions int64 [B, Tq], key_positions int64 [B, Tk] (make_positions) -> bias [B, H, Tq, Tk] of the
  // weight's dtype, contiguous
  Tensor forward(const Tensor& query_positions, const Tensor& key_positions);
  // A file's "buckets" must be the ones these settings give: they index the weight's rows.
  void check_loaded_buffer(const std::string& name, const Tensor& value, const std::string& context) const override;
  int64_t heads, buckets, max_distance;
  bool bidirectional;
  Tensor weight, bucket_of;
};

// Inverted dropout with probability p while training; identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p);
  Tensor forward(const Tensor& x);
  double p;
};

// ---- norms over the last dim ----
// DynamicTanh is no norm but DyT, the element-wise function that Zhu et al. 2025 put in every norm's place.
enum class NormKind { LayerNorm, RMSNorm, DynamicTanh };
const char* norm_kind_name(NormKind k);  // "layer_norm", "rms_norm", "dyt"
NormKind parse_norm_kind(const std::string& s);

class Norm : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& x) = 0;
};

// LN(x) = γ ⊙ (x − mean) / sqrt(var + ε) + β; γ = 1, β = 0 at init (affine = false: no γ, β).
class LayerNorm : public Norm {
 public:
  LayerNorm(int64_t dim, double eps = 1e-5, bool affine = true);
  Tensor forward(const Tensor& x) override;
  int64_t dim;
  double eps;
  Tensor weight, bias;
};

// RMS(x) = w ⊙ x / sqrt(mean(x²) + ε); w = 1 at init, no bias (OLMo / HybridNorm).
class RMSNorm : public Norm {
 public:
  RMSNorm(int64_t dim, double eps = 1e-6);
  Tensor forward(const Tensor& x) override;
  int64_t dim;
  double eps;
  Tensor weight;
};

// x / max(‖x‖₂, ε), no parameters (the QK-norm of Henry et al. 2020).
class L2Norm : public Norm {
 public:
  explicit L2Norm(double eps = 1e-12);
  Tensor forward(const Tensor& x) override;
  double eps;
};

// DyT(x) = γ ⊙ tanh(α x) + β (Zhu, Chen, He, LeCun, Liu 2025, "Transformers without Normalization"): no statistics
// of x at all, one learned scalar α (its init α0; the paper's 0.5) squashing extreme values as LN's output does, γ = 1
// and β = 0 at init, per channel. Parameters as the paper's code names them: alpha [1], weight, bias [dim].
class DynamicTanh : public Norm {
 public:
  explicit DynamicTanh(int64_t dim, double alpha0 = 0.5);
  Tensor forward(const Tensor& x) override;
  int64_t dim;
  Tensor alpha, weight, bias;
};

// Sets α to alpha0 in every DynamicTanh under `root` whose name (named_modules': "enc.11.ffn_norm",
// "dec.final_norm") matches the shell pattern `pattern` ('*' and '?', fnmatch); returns how many it set. The paper's
// LLaMA recipe: one α0 for the DyTs before attention ("*attn_norm"), another for the others.
int64_t set_dyt_alpha(Module& root, const std::string& pattern, double alpha0);

// A norm of `kind` over `dim` features; eps for LayerNorm and RMSNorm, dyt_alpha (α0) for DynamicTanh.
std::shared_ptr<Norm> make_norm(NormKind kind, int64_t dim, double eps, double dyt_alpha = 0.5);

}  // namespace skipgrad::nn
