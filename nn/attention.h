// MultiHeadAttention (self and cross, fairseq semantics, optional per-head Q/K(/V) norms) and FeedForward.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"

namespace skipgrad::nn {

// Per-head normalisation inside attention (TOPOLOGIES.md §4.2 and §5.6): which of q, k, v are normalised over
// d_head after the head split, and with what. One weight vector of size d_head per q/k/v, shared across heads, as
// in HybridNorm's code. L2 has no weight (Henry et al.'s QKNorm; its learnable logit scale g is not modelled: the
// scale stays 1/√d_h).
enum class HeadNormTargets { None, QK, QKV };
enum class HeadNormKind { LayerNorm, RMSNorm, L2 };
const char* head_norm_targets_name(HeadNormTargets t);  // "none", "qk", "qkv"
const char* head_norm_kind_name(HeadNormKind k);        // "layer_norm", "rms_norm", "l2"
HeadNormTargets parse_head_norm_targets(const std::string& s);
HeadNormKind parse_head_norm_kind(const std::string& s);
// For run logs: "" for none, else "per-head rms_norm on q, k" (qkv: "q, k, v").
std::string head_norm_summary(HeadNormTargets t, HeadNormKind k);

struct AttentionConfig {
  int64_t d_model = 0;
  int64_t heads = 1;
  double attn_dropout = 0.0;  // D_att on the attention probabilities
  HeadNormTargets head_norm = HeadNormTargets::None;
  HeadNormKind head_norm_kind = HeadNormKind::RMSNorm;
  double head_norm_eps = 1e-5;  // for LayerNorm / RMSNorm (L2 uses 1e-12, as F.normalize)
};

// Keys and values of one attention after the head split (and the k/v head norms): k, v [B, H, T, dh], contiguous.
// Incremental decoding keeps one per attention: the self-attention's grows by one position per step, the
// cross-attention's holds the encoder output's, computed once.
struct KVCache {
  Tensor k, v;
  Tensor positions;  // with ALiBi, the keys' positions [B, T] (make_positions' ids); else undefined
  bool empty() const { return !k.defined(); }
  int64_t length() const { return k.defined() ? k.size(2) : 0; }
};

// What one attention's queries saw (TOPOLOGIES.md §7.7, the attention logit range that QK-norm bounds): for each
// query row, over the keys its masks leave visible (padding, causal), of the logits s = q·k/√d_h (q and k after
// the head norms), float64 [B, H, Tq] on the model's device, not recorded:
//   max_abs  the largest |s|; -1 where a row sees no key
//   entropy  the entropy of the row's attention softmax(s) in nats: log(keys seen) when uniform, 0 when one-hot
//            (the entropy collapse of Zhai et al. 2023); NaN where a row sees no key
struct AttentionLogitRows {
  std::string attention;  // the module's scope: "enc.3.self_attn", "dec.0.cross_attn"
  Tensor max_abs, entropy;
};

// fairseq MultiheadAttention:
//   Q = x W_qᵀ + b_q,  K = kv W_kᵀ + b_k,  V = kv W_vᵀ + b_v   (split into h heads of d_h = d/h)
//   [Q, K, V ← Norm_{q,k,v}(Q, K, V) per head when enabled]   [Q, K ← RoPE(Q), RoPE(K) when given angles]
//   O = concat_h( D_att(softmax(Q Kᵀ / √d_h [- m_h |p_i - p_j| (ALiBi)] [+ bias (T5)] + mask)) V ) W_oᵀ + b_o
// Init: xavier_uniform(gain 1/√2) for W_q, W_k, W_v (biases: torch default), xavier_uniform for W_o, b_o = 0.
class MultiHeadAttention : public Module {
 public:
  explicit MultiHeadAttention(const AttentionConfig& cfg);
  // query [B, Tq, d], key_value [B, Tk, d] (pass the query itself for self-attention), key_padding_mask [B, Tk]
  // (nonzero = padding; may be undefined), causal: key j is hidden from query i when j > i + Tk - Tq.
  // rotary: the angles of the positions of query (and key_value: self-attention only), [B, T, d_head/2] each;
  // when defined, q and k are rotated by them after the head norms (RoPE).
  // alibi: the slopes and the positions of query (= key_value: self-attention only); when defined, the scores get
  // ALiBi's bias.
  // position_bias: added to the scores (attention()'s bias: 4-D, each dim 1 or that of [B, H, Tq, Tk]; T5's
  // relative-position bias, RelativePositionBias), self-attention only; it may require grad.
  Tensor forward(const Tensor& query, const Tensor& key_value, const Tensor& key_padding_mask = Tensor(),
                 bool causal = false, const RotaryAngles& rotary = {}, const AlibiBias& alibi = {},
                 const Tensor& position_bias = Tensor());

  // ---- incremental decoding (inference only: grad mode must be off) ----
  // K and V of key_value [B, T, d], as forward computes them without rotary angles: what a cross-attention cache
  // holds (a self-attention's cache, with RoPE, holds rotated keys: forward_cached appends them).
  KVCache project_kv(const Tensor& key_value);
  // Attention of query [B, Tq, d] over the cached keys/values, after appending those of `append` [B, Tn, d] when it
  // is defined (a self-attention step: append = query). key_padding_mask [B, T_cache] covers every cached key.
  // rotary: the angles of the query's positions, which the appended keys share; the cache holds rotated keys.
  // alibi: the slopes and the query's positions, which the appended keys share; the cache keeps the keys' positions.
  // position_bias: the query's bias over every key of the cache once `append`'s are in ([B, H, Tq, T_cache]).
  // forward(x, x, mask, causal, angles, alibi, bias) on a sequence == forward_cached on its positions one at a time
  // (each step given its rows of the bias).
  Tensor forward_cached(const Tensor& query, KVCache& cache, const Tensor& append = Tensor(),
                        const Tensor& key_padding_mask = Tensor(), bool causal = false,
                        const RotaryAngles& rotary = {}, const AlibiBias& alibi = {},
                        const Tensor& position_bias = Tensor());

  void reset_fairseq();

  // Analysis hook: when set, every forward (cached or not) appends its AttentionLogitRows here. The logits are
  // computed again for it in float64, as a plain product beside the fused attention op: copies of q and k and a
  // few [B, H, Tq, Tk] temporaries per call.
  std::vector<AttentionLogitRows>* logit_rows = nullptr;

  AttentionConfig cfg;
  int64_t d_head;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;
  std::shared_ptr<Norm> q_norm, k_norm, v_norm;  // null when not enabled
  // A norm over d_model of the merged heads, before out_proj (Magneto's Sub-LN "inner_attn_ln"); null: none. A
  // topology adds it: attn->inner_norm = attn->register_module("inner_norm", make_norm(kind, d_model, eps)).
  std::shared_ptr<Norm> inner_norm;
  // One learned scale per head [H] on its output, before the heads merge (NormFormer's HeadScale: concat_h(γ_h·o_h)
  // then out_proj); undefined: none. A topology adds it: attn->head_scale = attn->register_parameter("head_scale",
  // Tensor::ones({heads})).
  Tensor head_scale;

 private:
  // Shared by forward and the cached path; they run inside the module's scope.
  void check_input(const Tensor& t, const char* what, int64_t batch) const;  // [batch, T, d] (batch -1: any)
  Tensor split_heads(const Tensor& x, const char* what) const;                 // [B, T, d] -> [B, H, T, dh]
  // heads of k_proj/v_proj (+ norms, + the rotary embedding of k when `rotary` is defined)
  KVCache kv_heads(const Tensor& key_value, const RotaryAngles& rotary);
  void check_alibi(const AlibiBias& alibi, const Tensor& query) const;  // slopes [H], positions [B, Tq]
  // key_positions: with alibi, the positions of k's keys [B, Tk]
  Tensor attend(const Tensor& query, const Tensor& k, const Tensor& v, const Tensor& key_padding_mask, bool causal,
                const RotaryAngles& rotary, const AlibiBias& alibi, const Tensor& key_positions,
                const Tensor& position_bias);
};

enum class Activation { ReLU, GELU, SwiGLU };
const char* activation_name(Activation a);  // "relu", "gelu", "swiglu"
Activation parse_activation(const std::string& s);

// fairseq FFN: y = fc2( D_act( act(fc1(x)) ) ). fc1 [d_ff, d], fc2 [d, d_ff], PyTorch default Linear init.
// SwiGLU (OLMo): fc1 is [2·d_ff, d]; its output splits into (a, gate) and act = silu(gate) ⊙ a, so the hidden
// width after the gate is d_ff.
class FeedForward : public Module {
 public:
  FeedForward(int64_t d_model, int64_t d_ff, Activation activation, double act_dropout);
  Tensor forward(const Tensor& x);

  int64_t d_model, d_ff;
  Activation activation;
  double act_dropout;
  std::shared_ptr<Linear> fc1, fc2;
  // A norm over d_ff of the activation (after its dropout), before fc2 (Magneto's Sub-LN "ffn_layernorm",
  // NormFormer's mid-FFN norm); null: none. A topology adds it: register_module("inner_norm", make_norm(...)).
  std::shared_ptr<Norm> inner_norm;
};

}  // namespace skipgrad::nn
