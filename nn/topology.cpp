#include "nn/topology.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/name_patterns.h"

namespace skipgrad::nn {

// ---------------------------------------------------------------- config

const char* init_scheme_name(InitScheme s) {
  switch (s) {
    case InitScheme::Fairseq: return "fairseq";
    case InitScheme::SmallInit: return "small_init";
    case InitScheme::DeepNorm: return "deep_norm";
    case InitScheme::GPT2: return "gpt2";
  }
  return "?";
}

InitScheme parse_init_scheme(const std::string& s) {
  if (s == "fairseq") return InitScheme::Fairseq;
  if (s == "small_init" || s == "smallinit") return InitScheme::SmallInit;
  if (s == "deep_norm" || s == "deepnorm") return InitScheme::DeepNorm;
  if (s == "gpt2") return InitScheme::GPT2;
  fail("parse_init_scheme", ": unknown init scheme '", s, "'; known: fairseq, small_init, deep_norm, gpt2");
}

void TransformerConfig::validate() const { validate(*make_topology(topology)); }  // unknown names list the known

void TransformerConfig::validate(const Topology& made) const {
  const char* who = "TransformerConfig";
  check(vocab > 0, who, ": vocab must be positive, got ", vocab);
  check(d_model > 0 && heads > 0 && d_model % heads == 0, who, ": d_model ", d_model,
        " must be a positive multiple of heads ", heads);
  check(d_ff > 0, who, ": d_ff must be positive, got ", d_ff);
  check(enc_layers >= 0 && dec_layers >= 1, who, ": need at least one decoder layer and enc_layers >= 0 (0: a "
        "decoder-only model), got ", enc_layers, " encoder and ", dec_layers, " decoder layers");
  for (auto [name, p] : {std::pair{"dropout", dropout}, {"attn_dropout", attn_dropout}, {"act_dropout", act_dropout}})
    check(p >= 0 && p < 1, who, ": ", name, " must be in [0, 1), got ", p);
  check(norm_eps > 0 && std::isfinite(norm_eps), who, ": norm_eps must be finite and > 0, got ", norm_eps);
  check(dyt_alpha > 0 && std::isfinite(dyt_alpha), who, ": dyt_alpha must be finite and > 0, got ", dyt_alpha);
  check(norm == NormKind::DynamicTanh || dyt_alpha == 0.5, who, ": dyt_alpha ", dyt_alpha, " is for norm dyt; norm ",
        norm_kind_name(norm), " does not use it (leave it 0.5)");
  check(norm == NormKind::DynamicTanh || dyt_alpha_at.empty(), who, ": dyt_alpha_at (",
        dyt_alpha_at_text(dyt_alpha_at), ") is for norm dyt; norm ", norm_kind_name(norm), " has no DyT");
  for (const auto& [pattern, alpha0] : dyt_alpha_at)
    check(!pattern.empty() && alpha0 > 0 && std::isfinite(alpha0), who, ": dyt_alpha_at needs a pattern and a "
          "finite alpha0 > 0, got '", pattern, "' = ", alpha0);
  check(resi_dual_scale > 0 && std::isfinite(resi_dual_scale), who, ": resi_dual_scale must be > 0, got ",
        resi_dual_scale);
  check(layer_scale_init == -1 || (layer_scale_init > 0 && std::isfinite(layer_scale_init)), who,
        ": layer_scale_init must be finite and > 0 (or -1 for CaiT's rule on the depth), got ", layer_scale_init);
  check(mixln_post_layers >= -1, who, ": mixln_post_layers must be >= 0 (or -1 for floor(L/4)), got ",
        mixln_post_layers);
  check(max_positions > 0, who, ": max_positions must be positive, got ", max_positions);
  check(rope_theta > 1 && std::isfinite(rope_theta), who, ": rope_theta must be finite and > 1, got ", rope_theta);
  check(positions == PositionEncoding::Rope || rope_theta == 10000, who, ": rope_theta ", rope_theta,
        " is for positions rope; positions ", position_encoding_name(positions), " does not use it (leave it 10000)");
  check(positions != PositionEncoding::Rope || rope_dims != 0 || (d_model / heads) % 2 == 0, who,
        ": positions rope rotates pairs of each head's dims: d_model / heads = ", d_model / heads,
        " must be even (or rotate an even rope_dims of them)");
  check(positions == PositionEncoding::Rope || rope_dims == 0, who, ": rope_dims ", rope_dims,
        " is for positions rope; positions ", position_encoding_name(positions), " does not use it (leave it 0)");
  check(rope_dims == 0 || (rope_dims > 0 && rope_dims % 2 == 0 && rope_dims <= d_model / heads), who,
        ": rope_dims must be 0 (all of d_head) or even and in [2, d_head = ", d_model / heads, "], got ", rope_dims);
  check(positions == PositionEncoding::T5 || (relative_buckets == 32 && relative_max_distance == 128), who,
        ": relative_buckets ", relative_buckets, " and relative_max_distance ", relative_max_distance,
        " are for positions t5; positions ", position_encoding_name(positions), " does not use them (leave 32, 128)");
  if (positions == PositionEncoding::T5) {  // (the decoder's log scale starts after relative_buckets / 2)
    check(relative_buckets >= 4 && relative_buckets <= (int64_t(1) << 16), who,
          ": positions t5 needs relative_buckets in [4, 2^16], got ", relative_buckets);
    const int64_t exact = relative_buckets / 2;
    check(relative_max_distance > exact && relative_max_distance <= (int64_t(1) << 16), who,
          ": positions t5 with ", relative_buckets, " buckets needs relative_max_distance in (", exact,
          ", 2^16], got ", relative_max_distance);
  }
  check(pad_id >= 0 && pad_id < vocab, who, ": pad_id ", pad_id, " outside the vocabulary [0, ", vocab, ")");
  check(qk_norm != HeadNormTargets::None || qk_norm_kind == HeadNormKind::RMSNorm, who, ": qk_norm_kind ",
        head_norm_kind_name(qk_norm_kind), " needs qk_norm qk or qkv (qk_norm is none)");
  check(made.name() == topology, who, ": validated with topology '", made.name(), "' for '", topology, "'");
  made.check_config(*this);
  // a topology's own option set for another would do nothing, silently (with_topology resets them for a comparison)
  for (const TopologyOption& o : topology_options())
    check(topology == o.topology || o.value(*this) == o.default_text, who, ": ", o.name, " ", o.value(*this), " is ",
          o.owner, "'s; topology ", topology, " does not use it (leave it ", o.default_text, ")");
  check(tie_output || !share_embeddings, who, ": tie_output false needs share_embeddings false (one table shared by "
        "source, target and output is tied to the output)");
}

TransformerConfig TransformerConfig::with_positions(PositionEncoding p) const {
  const TransformerConfig defaults;
  TransformerConfig c = *this;
  c.positions = p;
  if (p != PositionEncoding::Rope) c.rope_theta = defaults.rope_theta, c.rope_dims = defaults.rope_dims;
  if (p != PositionEncoding::T5)
    c.relative_buckets = defaults.relative_buckets, c.relative_max_distance = defaults.relative_max_distance;
  return c;
}

std::string TransformerConfig::positions_summary() const {
  std::ostringstream os;
  os << position_encoding_name(positions);
  if (positions == PositionEncoding::Rope) {
    os << " (theta " << rope_theta;
    if (rope_dims != 0 && rope_dims != d_model / heads) os << ", " << rope_dims << " of " << d_model / heads << " dims";
    os << ")";
  }
  if (positions == PositionEncoding::T5)
    os << " (" << relative_buckets << " buckets up to distance " << relative_max_distance << ")";
  return os.str();
}

std::string TransformerConfig::norm_summary() const {
  std::string s = norm_kind_name(norm);
  if (norm == NormKind::DynamicTanh) {
    s += " (alpha0 " + number_str(dyt_alpha);
    for (const auto& [pattern, alpha0] : dyt_alpha_at) s += "; " + pattern + " " + number_str(alpha0);
    s += ")";
  }
  return s;
}

std::string TransformerConfig::topology_summary() const {
  std::string own;
  for (const TopologyOption& o : topology_options())
    if (o.topology == topology && o.value(*this) != o.default_text)
      own += (own.empty() ? "" : ", ") + std::string(o.name) + " " + o.value(*this);
  return own.empty() ? topology : topology + " (" + own + ")";
}

int64_t TransformerConfig::position_limit() const {
  const bool table = positions == PositionEncoding::Sinusoidal || positions == PositionEncoding::Learned ||
                     positions == PositionEncoding::Rope;
  return table ? max_positions : std::numeric_limits<int64_t>::max();
}

const char* position_encoding_name(PositionEncoding p) {
  switch (p) {
    case PositionEncoding::Sinusoidal: return "sinusoidal";
    case PositionEncoding::Learned: return "learned";
    case PositionEncoding::Rope: return "rope";
    case PositionEncoding::Alibi: return "alibi";
    case PositionEncoding::T5: return "t5";
    case PositionEncoding::None: return "none";
  }
  return "?";
}

PositionEncoding parse_position_encoding(const std::string& s) {
  if (s == "sinusoidal") return PositionEncoding::Sinusoidal;
  if (s == "learned") return PositionEncoding::Learned;
  if (s == "rope") return PositionEncoding::Rope;
  if (s == "alibi") return PositionEncoding::Alibi;
  if (s == "t5") return PositionEncoding::T5;
  if (s == "none") return PositionEncoding::None;
  fail("parse_position_encoding", ": unknown position encoding '", s,
       "'; known: sinusoidal, learned, rope, alibi, t5, none");
}

const std::vector<TopologyOption>& topology_options() {
  using C = TransformerConfig;
  static const std::vector<TopologyOption> options = {
      {"resi_dual_scale", "resi_dual", "ResiDual", "1", [](const C& c) { return number_str(c.resi_dual_scale); },
       [](C& c) { c.resi_dual_scale = 1.0; }},
      {"mixln_post_layers", "mix_ln", "Mix-LN", "-1", [](const C& c) { return std::to_string(c.mixln_post_layers); },
       [](C& c) { c.mixln_post_layers = -1; }},
      // (an init: not in Transformer::kind(), a checkpoint computes the same whichever it started from)
      {"b2t_rescale", "b2t", "B2T", "true", [](const C& c) { return std::string(c.b2t_rescale ? "true" : "false"); },
       [](C& c) { c.b2t_rescale = true; }},
      // (an init too: not in kind())
      {"layer_scale_init", "layer_scale", "LayerScale", "-1", [](const C& c) { return number_str(c.layer_scale_init); },
       [](C& c) { c.layer_scale_init = -1; }},
      // (not in kind() either: it adds parameters, so a file with or without them is refused by their names)
      {"normformer_scale_resids", "normformer", "NormFormer", "false",
       [](const C& c) { return std::string(c.normformer_scale_resids ? "true" : "false"); },
       [](C& c) { c.normformer_scale_resids = false; }},
      // (in kind(): the same parameters compute another function, so a file of the other variant is refused)
      {"normformer_fairseq_head_scale", "normformer", "NormFormer", "false",
       [](const C& c) { return std::string(c.normformer_fairseq_head_scale ? "true" : "false"); },
       [](C& c) { c.normformer_fairseq_head_scale = false; }},
  };
  return options;
}

TransformerConfig TransformerConfig::with_topology(const std::string& name) const {
  TransformerConfig c = *this;
  c.topology = name;
  for (const TopologyOption& o : topology_options())
    if (name != o.topology) o.reset(c);
  return c;
}

void TransformerConfig::check_used_by(const std::vector<std::string>& names, const char* who) const {
  for (const TopologyOption& o : topology_options())
    check(o.value(*this) == o.default_text || std::find(names.begin(), names.end(), o.topology) != names.end(), who,
          ": ", o.name, " ", o.value(*this), " acts on ", o.topology, ", which the topologies do not list");
}

// ---------------------------------------------------------------- Layer

Layer::Layer(const TransformerConfig& c, Side s, int64_t i, HeadNormTargets head_norm, HeadNormKind head_norm_kind)
    : cfg(c), side(s), index(i) {
  AttentionConfig a;
  a.d_model = c.d_model;
  a.heads = c.heads;
  a.attn_dropout = c.attn_dropout;
  a.head_norm = head_norm;
  a.head_norm_kind = head_norm_kind;
  a.head_norm_eps = c.norm_eps;
  self_attn = register_module("self_attn", std::make_shared<MultiHeadAttention>(a));
  if (s == Side::Decoder && !c.decoder_only())
    cross_attn = register_module("cross_attn", std::make_shared<MultiHeadAttention>(a));
  ffn = register_module("ffn", std::make_shared<FeedForward>(c.d_model, c.d_ff, c.activation, c.act_dropout));
}

Layer::Layer(const TransformerConfig& c, Side s, int64_t i) : Layer(c, s, i, c.qk_norm, c.qk_norm_kind) {}

Stream Layer::forward(const Stream& in, const LayerInputs& ctx) {
  Scope s(name());
  const int64_t d = cfg.d_model;
  if (!(in.x.defined() && in.x.dim() == 3 && in.x.size(2) == d))
    fail(current_scope(), ": expected [B,T,", d, "], got ",
         in.x.defined() ? shape_str(in.x.shape()) : "an undefined stream");
  if (ctx.cache && !is_decoder()) fail(current_scope(), ": an encoder layer has no incremental mode");
  if (ctx.cache && has_cross_attention() && ctx.cache->cross_attn.empty())
    fail(current_scope(), ": a cached decoder step needs the cross-attention keys/values of the encoder output");
  if (ctx.cache && !has_cross_attention() && !ctx.cache->cross_attn.empty())
    fail(current_scope(), ": the decoding state holds cross-attention keys/values, but this layer has none (a "
         "decoder-only model): the state comes from an encoder-decoder model's start_decoding");
  if (!ctx.cache && has_cross_attention() &&
      !(ctx.memory.defined() && ctx.memory.dim() == 3 && ctx.memory.size(2) == d))
    fail(current_scope(), ": a decoder layer needs the encoder output [B,S,", d, "], got ",
         ctx.memory.defined() ? shape_str(ctx.memory.shape()) : "none");
  if (!has_cross_attention() && ctx.memory.defined())
    fail(current_scope(), ": this layer has no cross-attention (", is_decoder() ? "a decoder-only model" : "encoder",
         ") but was given an encoder output ", shape_str(ctx.memory.shape()));
  return apply(in, ctx);
}

Tensor Layer::SA(const Tensor& x, const LayerInputs& ctx) {
  if (ctx.cache)
    return self_attn->forward_cached(x, ctx.cache->self_attn, x, ctx.self_pad_mask, ctx.causal, ctx.rotary,
                                     ctx.alibi, ctx.position_bias);
  return self_attn->forward(x, x, ctx.self_pad_mask, ctx.causal, ctx.rotary, ctx.alibi, ctx.position_bias);
}

Tensor Layer::CA(const Tensor& x, const LayerInputs& ctx) {
  if (!has_cross_attention())
    fail(current_scope(), ": CA called in a layer without cross-attention (",
         is_decoder() ? "a decoder-only model" : "an encoder layer", "); build it under has_cross_attention()");
  if (ctx.cache) return cross_attn->forward_cached(x, ctx.cache->cross_attn, Tensor(), ctx.memory_pad_mask, false);
  return cross_attn->forward(x, ctx.memory, ctx.memory_pad_mask, false);
}

Tensor Layer::F(const Tensor& x) { return ffn->forward(x); }

Tensor Layer::D(const char* sublayer, const Tensor& o) {
  Scope s(sublayer);
  return dropout(o, cfg.dropout, is_training());
}

Tensor Layer::residual_add(const char* sublayer, const Tensor& stream, const Tensor& branch) {
  Scope s(sublayer);
  if (residual_updates) residual_updates->push_back({current_scope(), stream, branch});
  Tensor y = add(stream, branch);
  y.named("residual_add");
  return y;
}

std::shared_ptr<Norm> make_norm(const TransformerConfig& cfg, int64_t dim) {
  return make_norm(cfg.norm, dim, cfg.norm_eps, cfg.dyt_alpha);
}

std::vector<std::pair<std::string, double>> parse_dyt_alpha_at(const std::string& text) {
  return parse_pattern_values(text, "dyt_alpha_at", "ALPHA0", "\"*.final_norm=0.2\"");
}

std::string dyt_alpha_at_text(const std::vector<std::pair<std::string, double>>& at) {
  return pattern_values_text(at);
}

std::shared_ptr<Norm> Layer::add_norm(const std::string& n) {
  return register_module(n, make_norm(cfg, cfg.d_model));
}

// ---------------------------------------------------------------- FinalNormTopology

std::vector<NamedModule> FinalNormTopology::make_stack_modules(const TransformerConfig& cfg, Side side) {
  auto& norm = final_norm_[side == Side::Encoder ? 0 : 1];
  norm = make_norm(cfg, cfg.d_model);
  return {{"final_norm", norm}};
}

Tensor FinalNormTopology::end_stack(const Stream& s, Side side) {
  return final_norm_[side == Side::Encoder ? 0 : 1]->forward(s.x);
}

// ---------------------------------------------------------------- init schemes

DeepNormCoefficients deepnorm_coefficients(int64_t N, int64_t M, Side side) {
  check(N >= 0 && M >= 1 && !(N == 0 && side == Side::Encoder), "deepnorm_coefficients",
        ": need M >= 1 and N >= 1 (or N = 0, decoder-only, for the decoder), got N ", N, ", M ", M, " for the ",
        side == Side::Encoder ? "encoder" : "decoder");
  if (N == 0) return {std::pow(2.0 * M, 0.25), std::pow(8.0 * M, -0.25)};  // decoder-only row
  const double n4m = std::pow((double)N, 4.0) * (double)M;
  if (side == Side::Encoder) return {0.81 * std::pow(n4m, 1.0 / 16), 0.87 * std::pow(n4m, -1.0 / 16)};
  return {std::pow(3.0 * M, 0.25), std::pow(12.0 * M, -0.25)};
}

void deepnorm_init(Layer& layer, double beta) {
  for (auto& attn : {layer.self_attn, layer.cross_attn}) {
    if (!attn) continue;
    attn->q_proj->reset_xavier_normal(1.0);
    attn->k_proj->reset_xavier_normal(1.0);
    attn->v_proj->reset_xavier_normal(beta);
    attn->out_proj->reset_xavier_normal(beta);
  }
  layer.ffn->fc1->reset_xavier_normal(beta);
  layer.ffn->fc2->reset_xavier_normal(beta);
}

namespace {
// Megatron's layout: q/k/v/fc1 N(0, σ), the residual branches' output projections out_proj and fc2 N(0, σ/√(2L)),
// all biases 0; truncated at ±cutoff·σ when cutoff > 0.
void scaled_init(Layer& layer, int64_t stack_layers, double sigma, double cutoff) {
  const double sigma_out = sigma / std::sqrt(2.0 * (double)stack_layers);
  auto set = [cutoff](const std::shared_ptr<Linear>& lin, double std) {
    if (cutoff > 0) lin->reset_trunc_normal(std, cutoff);
    else init::normal_(lin->weight, 0.0, std);
    lin->zero_bias();
  };
  for (auto& attn : {layer.self_attn, layer.cross_attn}) {
    if (!attn) continue;
    set(attn->q_proj, sigma);
    set(attn->k_proj, sigma);
    set(attn->v_proj, sigma);
    set(attn->out_proj, sigma_out);
  }
  set(layer.ffn->fc1, sigma);
  set(layer.ffn->fc2, sigma_out);
}
}  // namespace

void small_init(Layer& layer, int64_t stack_layers) {
  scaled_init(layer, stack_layers, std::sqrt(2.0 / (5.0 * (double)layer.cfg.d_model)), 3.0);
}

// (The weights only: the model keeps fairseq's √d scale on the embeddings and its sinusoidal positions, so at d 64
// an embedding row of RMS 0.16 meets positions of RMS 0.71, where nanoGPT's learned positions are N(0, 0.02).)
void gpt2_init(Layer& layer, int64_t stack_layers) { scaled_init(layer, stack_layers, 0.02, 0.0); }

}  // namespace skipgrad::nn
