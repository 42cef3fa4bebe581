#include "nn/attention.h"

#include <cmath>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

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

Tensor MultiHeadAttention::forward(const Tensor& query, const Tensor& key_value, const Tensor& key_padding_mask,
                                   bool causal) {
  Scope s(name());
  const std::string who = current_scope().empty() ? "MultiHeadAttention" : current_scope();
  const int64_t d = cfg.d_model, H = cfg.heads, dh = d_head;
  auto shape_of = [](const Tensor& t) { return t.defined() ? shape_str(t.shape()) : std::string("undefined"); };
  check(query.defined() && query.dim() == 3 && query.size(2) == d, who, ": expected query [B,T,", d, "], got ",
        shape_of(query));
  check(key_value.defined() && key_value.dim() == 3 && key_value.size(2) == d &&
            key_value.size(0) == query.size(0),
        who, ": expected key/value [", query.size(0), ",S,", d, "], got ", shape_of(key_value));
  const int64_t B = query.size(0), Tq = query.size(1), Tk = key_value.size(1);
  check(!key_padding_mask.defined() || key_padding_mask.shape() == Shape{B, Tk}, who, ": key padding mask must be ",
        Shape{B, Tk}, ", got ", shape_of(key_padding_mask));

  // [B, T, d] -> [B, H, T, dh]
  auto heads = [&](const Tensor& t, int64_t T) { return t.reshape({B, T, H, dh}).transpose(1, 2); };
  Tensor q = heads(q_proj->forward(query), Tq);
  Tensor k = heads(k_proj->forward(key_value), Tk);
  Tensor v = heads(v_proj->forward(key_value), Tk);
  if (q_norm) q = q_norm->forward(q);
  if (k_norm) k = k_norm->forward(k);
  if (v_norm) v = v_norm->forward(v);

  AttentionOptions opt;
  opt.causal = causal;
  opt.dropout = cfg.attn_dropout;
  opt.training = is_training();
  Tensor o = attention(q, k, v, key_padding_mask, opt);  // [B, H, Tq, dh], scale 1/√d_h
  return out_proj->forward(o.transpose(1, 2).reshape({B, Tq, d}));
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
  h = dropout(h, act_dropout, is_training());
  return fc2->forward(h);
}

}  // namespace skipgrad::nn
