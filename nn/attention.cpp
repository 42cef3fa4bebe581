#include "nn/attention.h"

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

constexpr const char* kKind = "MultiHeadAttention";  // who an error names outside any scope

// ---------------------------------------------------------------- names

const char* head_norm_targets_name(HeadNormTargets t) {
  switch (t) {
    case HeadNormTargets::None: return "none";
    case HeadNormTargets::QK: return "qk";
    case HeadNormTargets::QKV: return "qkv";
  }
  return "?";
}

const char* head_norm_kind_name(HeadNormKind k) {
  switch (k) {
    case HeadNormKind::LayerNorm: return "layer_norm";
    case HeadNormKind::RMSNorm: return "rms_norm";
    case HeadNormKind::L2: return "l2";
  }
  return "?";
}

HeadNormTargets parse_head_norm_targets(const std::string& s) {
  if (s == "none") return HeadNormTargets::None;
  if (s == "qk") return HeadNormTargets::QK;
  if (s == "qkv") return HeadNormTargets::QKV;
  fail("parse_head_norm_targets", ": unknown value '", s, "'; known: none, qk, qkv");
}

HeadNormKind parse_head_norm_kind(const std::string& s) {
  if (s == "layer_norm" || s == "ln") return HeadNormKind::LayerNorm;
  if (s == "rms_norm" || s == "rms") return HeadNormKind::RMSNorm;
  if (s == "l2") return HeadNormKind::L2;
  fail("parse_head_norm_kind", ": unknown value '", s, "'; known: layer_norm, rms_norm, l2");
}

std::string head_norm_summary(HeadNormTargets t, HeadNormKind k) {
  if (t == HeadNormTargets::None) return "";
  return std::string("per-head ") + head_norm_kind_name(k) + (t == HeadNormTargets::QK ? " on q, k" : " on q, k, v");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::SwiGLU: return "swiglu";
  }
  return "?";
}

Activation parse_activation(const std::string& s) {
  if (s == "relu") return Activation::ReLU;
  if (s == "gelu") return Activation::GELU;
  if (s == "swiglu") return Activation::SwiGLU;
  fail("parse_activation", ": unknown activation '", s, "'; known: relu, gelu, swiglu");
}

// ---------------------------------------------------------------- MultiHeadAttention

static std::shared_ptr<Norm> make_head_norm(HeadNormKind kind, int64_t d_head, double eps) {
  switch (kind) {
    case HeadNormKind::LayerNorm: return std::make_shared<LayerNorm>(d_head, eps);
    case HeadNormKind::RMSNorm: return std::make_shared<RMSNorm>(d_head, eps);
    case HeadNormKind::L2: return std::make_shared<L2Norm>(1e-12);
  }
  return nullptr;
}

MultiHeadAttention::MultiHeadAttention(const AttentionConfig& c) : cfg(c) {
  check(c.d_model > 0 && c.heads > 0 && c.d_model % c.heads == 0, "MultiHeadAttention", ": d_model ", c.d_model,
        " must be a positive multiple of heads ", c.heads);
  check(c.attn_dropout >= 0 && c.attn_dropout < 1, "MultiHeadAttention", ": attn_dropout must be in [0, 1), got ",
        c.attn_dropout);
  d_head = c.d_model / c.heads;
  q_proj = register_module("q_proj", std::make_shared<Linear>(c.d_model, c.d_model));
  k_proj = register_module("k_proj", std::make_shared<Linear>(c.d_model, c.d_model));
  v_proj = register_module("v_proj", std::make_shared<Linear>(c.d_model, c.d_model));
  out_proj = register_module("out_proj", std::make_shared<Linear>(c.d_model, c.d_model));
  if (c.head_norm != HeadNormTargets::None) {
    q_norm = register_module("q_norm", make_head_norm(c.head_norm_kind, d_head, c.head_norm_eps));
    k_norm = register_module("k_norm", make_head_norm(c.head_norm_kind, d_head, c.head_norm_eps));
  }
  if (c.head_norm == HeadNormTargets::QKV)
    v_norm = register_module("v_norm", make_head_norm(c.head_norm_kind, d_head, c.head_norm_eps));
  reset_fairseq();
}

void MultiHeadAttention::reset_fairseq() {
  const double g = 1.0 / std::sqrt(2.0);
  q_proj->reset_torch_default();
  k_proj->reset_torch_default();
  v_proj->reset_torch_default();
  q_proj->reset_xavier_uniform(g);
  k_proj->reset_xavier_uniform(g);
  v_proj->reset_xavier_uniform(g);
  out_proj->reset_xavier_uniform(1.0);
  out_proj->zero_bias();
}

void MultiHeadAttention::check_input(const Tensor& t, const char* what, int64_t batch) const {
  const int64_t d = cfg.d_model;
  const DType w = q_proj->weight.dtype();  // the weights' dtype; bfloat16 too inside an autocast scope
  const bool dtype_ok = t.defined() && (t.dtype() == w || (autocast_bf16_enabled() && t.dtype() == DType::BF16));
  if (t.defined() && t.dim() == 3 && t.size(2) == d && (batch < 0 || t.size(0) == batch) && dtype_ok)
    return;
  fail(current_scope_or(kKind), ": expected ", what, " [",
       batch < 0 ? std::string("B") : std::to_string(batch), ",T,", d, "] ", dtype_name(w), ", got ",
       t.defined() ? t.meta_str() : std::string("undefined"));
}

// [B, T, H·dh] -> [B, H, T, dh], recorded as "<scope>.<what>.reshape" and ".transpose" ("q_heads", ...)
Tensor MultiHeadAttention::split_heads(const Tensor& x, const char* what) const {
  Scope s(what);
  return x.reshape({x.size(0), x.size(1), cfg.heads, d_head}).transpose(1, 2);
}

// x [B, H, T, dh] rotated by the angles, recorded as "<scope>.<what>.rotary" ("q_rope", "k_rope"); x as it is when
// there are none. Angles for r < dh dims ([B, T, r/2]: partial rotary) rotate x's first r dims, and the rest are
// concatenated after them unchanged.
static Tensor rope(const Tensor& x, const RotaryAngles& angles, const char* what) {
  if (!angles.defined()) return x;
  Scope s(what);
  const int64_t dh = x.size(3), r = 2 * angles.cos.size(-1);
  if (r == dh) return rotary(x, angles.cos, angles.sin);
  if (!(r > 0 && r < dh))
    fail(current_scope_or(kKind), ": rotary angles for ", r, " dims of a head of ", dh, " (cos ", angles.cos.meta_str(),
         ")");
  return concat({rotary(x.slice(3, 0, r), angles.cos, angles.sin), x.slice(3, r, dh)}, 3);
}

// [B, T, d] -> K, V [B, H, T, dh] (normalised per head when enabled, then K rotated when given angles)
KVCache MultiHeadAttention::kv_heads(const Tensor& key_value, const RotaryAngles& rotary) {
  Tensor k = split_heads(k_proj->forward(key_value), "k_heads");
  Tensor v = split_heads(v_proj->forward(key_value), "v_heads");
  if (k_norm) k = k_norm->forward(k);
  if (v_norm) v = v_norm->forward(v);
  return {rope(k, rotary, "k_rope"), v, Tensor()};
}

// For each query row i, over the keys j it sees, of the logits s_ij = q_i·k_j / √d_h (float64, [B, H, Tq] each):
//   max_abs  max_j |s_ij|                        (-1 for a row that sees no key)
//   entropy  -sum_j p_ij log p_ij, p_i = softmax_j(s_i)   (NaN for a row that sees no key)
// Key j is hidden by the padding mask, or, when causal, if j > i + Tk - Tq (as the attention op hides it).
// With ALiBi or a position bias, the entropy is that of the softmax the attention takes, of s_ij - m_h |p_i - p_j|
// or s_ij + bias_ij; max_abs stays q·k's.
static AttentionLogitRows visible_logit_rows(const Tensor& q, const Tensor& k, const Tensor& key_padding_mask,
                                             bool causal, const AlibiBias& alibi, const Tensor& key_positions,
                                             const Tensor& position_bias) {
  NoGradGuard no_grad;
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2);
  const Device dev = q.device();
  const Tensor logits = matmul(q.to(DType::F64), k.to(DType::F64), false, true) * (1.0 / std::sqrt((double)q.size(3)));
  Tensor biased = logits;
  if (alibi.defined()) {
    const Tensor distance = abs(sub(alibi.positions.to(DType::F64).reshape({B, 1, Tq, 1}),
                                    key_positions.to(DType::F64).reshape({B, 1, 1, Tk})));
    biased = sub(logits, mul(alibi.slopes.to(DType::F64).reshape({1, H, 1, 1}), distance));
  }
  if (position_bias.defined()) biased = add(biased, position_bias.to(DType::F64));
  std::vector<Tensor> hidden;  // masks broadcast to [B, H, Tq, Tk], nonzero = hidden
  if (key_padding_mask.defined()) hidden.push_back(key_padding_mask.to(dev).reshape({B, 1, 1, Tk}));
  if (causal && Tq > 1) {  // (one query sees every key; more may see none: Tq 3, Tk 1 hides the key from 2 rows)
    std::vector<int64_t> after(Tq * Tk);
    for (int64_t i = 0; i < Tq; ++i)
      for (int64_t j = 0; j < Tk; ++j) after[i * Tk + j] = j > i + Tk - Tq;
    hidden.push_back(Tensor::from_vector(after, {1, 1, Tq, Tk}, dev));
  }
  auto hide = [&](Tensor x, double value) {
    for (const Tensor& h : hidden) x = masked_fill(x, h, value);
    return x;
  };
  const Tensor log_p = log_softmax(hide(biased, -INFINITY), 3);
  AttentionLogitRows rows;
  rows.attention = current_scope();
  rows.max_abs = max(hide(abs(logits), -1.0), {3});
  const Tensor entropy = 0.0 - sum(hide(exp(log_p) * log_p, 0.0), {3});  // a hidden key adds 0 (not 0·-inf); +0
  rows.entropy = masked_fill(entropy, lt(rows.max_abs, Tensor::scalar(0.0, DType::F64, dev)), NAN);  // no key
  return rows;
}

// What a self-attention-only input is, for messages
static const char* positional_input(const RotaryAngles& rotary, const AlibiBias& alibi) {
  return rotary.defined() ? "rotary angles are" : alibi.defined() ? "ALiBi is" : "a position bias is";
}

// ALiBi's slopes [H] (float32 for a bf16 model) and positions int64 [B, T] of query [B, T, d], on its device
void MultiHeadAttention::check_alibi(const AlibiBias& alibi, const Tensor& query) const {
  if (!alibi.defined()) return;
  const Tensor &sl = alibi.slopes, &pos = alibi.positions;
  const bool ok = sl.dim() == 1 && sl.size(0) == cfg.heads && sl.device() == query.device() && pos.defined() &&
                  pos.dtype() == DType::I64 && pos.shape() == Shape{query.size(0), query.size(1)} &&
                  pos.device() == query.device();
  if (!ok)
    fail(current_scope_or(kKind), ": ALiBi expects slopes [", cfg.heads, "] and int64 positions ",
         Shape{query.size(0), query.size(1)}, " (the query's) on ", query.device().str(), "; got slopes ",
         sl.meta_str(), ", positions ", pos.meta_str());
}

// out_proj( concat_h softmax(Q Kᵀ / √d_h + mask) V ) with Q from `query`; k, v [B, H, Tk, dh]
Tensor MultiHeadAttention::attend(const Tensor& query, const Tensor& k, const Tensor& v,
                                  const Tensor& key_padding_mask, bool causal, const RotaryAngles& rotary,
                                  const AlibiBias& alibi, const Tensor& key_positions,
                                  const Tensor& position_bias) {
  const int64_t B = query.size(0), Tq = query.size(1), Tk = k.size(2);
  if (key_padding_mask.defined() && key_padding_mask.shape() != Shape{B, Tk})
    fail(current_scope_or(kKind), ": key padding mask must be ", Shape{B, Tk}, ", got ", key_padding_mask.shape());
  Tensor q = split_heads(q_proj->forward(query), "q_heads");
  if (q_norm) q = q_norm->forward(q);
  q = rope(q, rotary, "q_rope");
  AttentionOptions opt;
  opt.causal = causal;
  opt.dropout = cfg.attn_dropout;
  opt.training = is_training();
  if (alibi.defined()) {
    opt.alibi_slopes = alibi.slopes;
    opt.query_positions = alibi.positions;
    opt.key_positions = key_positions;
  }
  opt.bias = position_bias;
  if (logit_rows)
    logit_rows->push_back(visible_logit_rows(q, k, key_padding_mask, causal, alibi, key_positions, position_bias));
  Tensor o = attention(q, k, v, key_padding_mask, opt);  // [B, H, Tq, dh], scale 1/√d_h
  if (head_scale.defined()) {                             // o_h ← γ_h·o_h
    Scope s("head_scale");
    o = mul(o, head_scale.reshape({1, cfg.heads, 1, 1}));
  }
  Tensor merged;
  {
    Scope s("merge_heads");
    merged = o.transpose(1, 2).reshape({B, Tq, cfg.d_model});
  }
  if (inner_norm) merged = inner_norm->forward(merged);
  return out_proj->forward(merged);
}

Tensor MultiHeadAttention::forward(const Tensor& query, const Tensor& key_value, const Tensor& key_padding_mask,
                                   bool causal, const RotaryAngles& rotary, const AlibiBias& alibi,
                                   const Tensor& position_bias) {
  Scope s(name());
  check_input(query, "query", -1);
  check_input(key_value, "key/value", query.size(0));
  // under autocast K, V (and, in self-attention, Q) read one bf16 copy of their input
  const Tensor kv_in = autocast::for_products(key_value);
  if ((rotary.defined() || alibi.defined() || position_bias.defined()) && query.impl_ptr() != key_value.impl_ptr())
    fail(current_scope_or(kKind), ": ", positional_input(rotary, alibi),
         " for self-attention (query and key/value the same tensor)");
  check_alibi(alibi, query);
  KVCache kv = kv_heads(kv_in, rotary);
  return attend(query.impl_ptr() == key_value.impl_ptr() ? kv_in : query, kv.k, kv.v, key_padding_mask, causal,
                rotary, alibi, alibi.positions, position_bias);
}

KVCache MultiHeadAttention::project_kv(const Tensor& key_value) {
  Scope s(name());
  if (grad_enabled())
    fail(current_scope_or(kKind), ": project_kv is for inference; run it under NoGradGuard");
  check_input(key_value, "key/value", -1);
  KVCache kv = kv_heads(key_value, {});
  return {kv.k.contiguous(), kv.v.contiguous(), Tensor()};
}

// Appending new keys to the cache: K = [K_cache; K_new] along time. A causal query i (of Tq, the last positions)
// sees keys j <= i + T_cache - Tq, exactly the keys a full causal forward shows it; a single query sees them all.
Tensor MultiHeadAttention::forward_cached(const Tensor& query, KVCache& cache, const Tensor& append,
                                          const Tensor& key_padding_mask, bool causal, const RotaryAngles& rotary,
                                          const AlibiBias& alibi, const Tensor& position_bias) {
  Scope s(name());
  if (grad_enabled())
    fail(current_scope_or(kKind), ": forward_cached is for inference; run it under NoGradGuard");
  check_input(query, "query", -1);
  const int64_t B = query.size(0);
  if ((rotary.defined() || alibi.defined() || position_bias.defined()) && append.impl_ptr() != query.impl_ptr())
    fail(current_scope_or(kKind), ": ", positional_input(rotary, alibi), " for self-attention steps (append the ",
         "query itself)");  // (before the cache changes)
  if (!cache.empty() && cache.k.size(0) != B)
    fail(current_scope_or(kKind), ": the cache holds ", cache.k.size(0), " rows, the query ", B);
  check_alibi(alibi, query);
  if (!cache.empty() && alibi.defined() != cache.positions.defined())
    fail(current_scope_or(kKind), ": the cache was filled ", alibi.defined() ? "without" : "with",
         " ALiBi positions and this step has ", alibi.defined() ? "them" : "none");
  if (append.defined()) {
    check_input(append, "appended key/value", B);
    const int64_t keys = cache.length() + append.size(1);  // (attend checks it too, after the cache has grown)
    if (key_padding_mask.defined() && key_padding_mask.shape() != Shape{B, keys})
      fail(current_scope_or(kKind), ": key padding mask must be ", Shape{B, keys}, ", got ",
           key_padding_mask.shape());
    KVCache kv = kv_heads(append, rotary);
    const bool first = cache.empty();
    cache.k = first ? kv.k.contiguous() : concat({cache.k, kv.k}, 2);
    cache.v = first ? kv.v.contiguous() : concat({cache.v, kv.v}, 2);
    if (alibi.defined())
      cache.positions = first ? alibi.positions.contiguous() : concat({cache.positions, alibi.positions}, 1);
  }
  if (cache.empty())
    fail(current_scope_or(kKind), ": forward_cached with an empty cache and nothing to append");
  return attend(query, cache.k, cache.v, key_padding_mask, causal && query.size(1) > 1, rotary, alibi,
                cache.positions, position_bias);
}

// ---------------------------------------------------------------- FeedForward

FeedForward::FeedForward(int64_t d, int64_t ff, Activation act, double act_drop)
    : d_model(d), d_ff(ff), activation(act), act_dropout(act_drop) {
  check(d > 0 && ff > 0, "FeedForward", ": d_model and d_ff must be positive, got ", d, " and ", ff);
  check(act_drop >= 0 && act_drop < 1, "FeedForward", ": act_dropout must be in [0, 1), got ", act_drop);
  fc1 = register_module("fc1", std::make_shared<Linear>(d, act == Activation::SwiGLU ? 2 * ff : ff));
  fc2 = register_module("fc2", std::make_shared<Linear>(ff, d));
}

Tensor FeedForward::forward(const Tensor& x) {
  Scope s(name());
  Tensor h = fc1->forward(x);
  switch (activation) {
    case Activation::ReLU: h = relu(h); break;
    case Activation::GELU: h = gelu(h); break;
    case Activation::SwiGLU: {  // (a, gate) = chunk(h, 2); silu(gate) ⊙ a
      std::vector<Tensor> parts = chunk(h, 2, -1);
      h = mul(silu(parts[1]), parts[0]);
      break;
    }
  }
  {
    Scope act("act");  // "enc.0.ffn.act.dropout": the sublayer's residual dropout is "enc.0.ffn.dropout"
    h = dropout(h, act_dropout, is_training());
  }
  if (inner_norm) h = inner_norm->forward(h);
  return fc2->forward(h);
}

}  // namespace skipgrad::nn
