// The residual / normalization topology of a Transformer, as one choice among many.
//
// A topology decides (1) how a layer combines its sublayers (self-attention SA, cross-attention CA in the decoder,
// feed-forward F) with residual adds and norms, and (2) what happens at the two ends of each stack (a dual stream
// that starts from the embedding, final norms). Each topology is one small file in nn/topologies/ that reads like
// its equations in /work/shared/TOPOLOGIES.md (or docs/topologies.md, for those the shared spec lacks); the
// registry (nn/topologies/registry.cpp) maps its name to it, and a program adds its own topology with a
// TopologyRegistration (below).
//
//   TransformerConfig cfg;  cfg.topology = Topology::ResiDual;   // or "resi_dual" from the command line
//
// Node names: every residual add is named "residual_add" in the scope of its sublayer ("enc.3.ffn.residual_add"),
// ResiDual's dual-stream adds "dual_add", so a graph dump shows them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/attention.h"
#include "nn/layers.h"

namespace skipgrad::nn {

enum class InitScheme { Fairseq, SmallInit, DeepNorm, GPT2 };
// How token positions enter the model (TransformerConfig::positions):
//   Sinusoidal  fairseq's fixed table, added to the scaled token embedding (the default)
//   Learned     a trained table, added instead: "embed_positions.weight" [max_positions + pad_id + 1, d] (fairseq's
//               LearnedPositionalEmbedding, GPT-2's wpe)
//   Rope        nothing added; every self-attention rotates its queries and keys by their positions (RoPE: GPT-NeoX,
//               LLaMA, OLMo), with base rope_theta, all of each head's dims or its first rope_dims (GPT-NeoX's
//               partial rotary). Cross-attention is not rotated.
//   Alibi       nothing added; every self-attention's score of query i and key j in head h gets -m_h |p_i - p_j|
//               (ALiBi, Press et al. 2022: BLOOM, MPT), m_h = 2^(-8h/H). The paper's causal bias -m_h (i - j); an
//               encoder's is symmetric. Cross-attention gets none.
//   T5          nothing added; every self-attention's score of query i and key j in head h gets a learned
//               b[bucket(p_j - p_i), h] (T5's relative-position bias, Raffel et al. 2020): relative_buckets buckets,
//               exact for short distances, log-spaced up to relative_max_distance; one table per stack, which its
//               layers share (RelativePositionBias). An encoder's buckets tell left from right; a decoder's see the
//               past only. Cross-attention gets none. (The scores keep the 1/√d_h scale, which T5 folds into its init.)
//   None        no positions at all (NoPE, Kazemnejad et al. 2023): a causal decoder still tells orders apart from its
//               second layer on (position t has seen t + 1 tokens); an encoder is blind to order (a bag of tokens).
enum class PositionEncoding { Sinusoidal, Learned, Rope, Alibi, T5, None };
const char* position_encoding_name(PositionEncoding p);  // "sinusoidal", "learned", "rope", "alibi", "t5", "none"
PositionEncoding parse_position_encoding(const std::string& s);
const char* init_scheme_name(InitScheme s);  // "fairseq", "small_init", "deep_norm", "gpt2"
InitScheme parse_init_scheme(const std::string& s);

class Topology;

struct TransformerConfig {
  int64_t vocab = 0;
  int64_t d_model = 256, heads = 4, d_ff = 1024;
  // enc_layers 0 makes a decoder-only language model: no encoder, no cross-attention, Transformer::forward(ids).
  int64_t enc_layers = 6, dec_layers = 6;
  double dropout = 0.1;       // D: residual dropout on every sublayer output (and on the embeddings)
  double attn_dropout = 0.0;  // D_att on attention probabilities
  double act_dropout = 0.0;   // D_act after the FFN activation
  NormKind norm = NormKind::LayerNorm;
  double norm_eps = 1e-5;     // LayerNorm's and RMSNorm's ε (DyT has none)
  double dyt_alpha = 0.5;     // norm dyt: α0, the init of each DyT's learned α (the paper's 0.5; norm dyt only)
  // norm dyt: α0 of the DyTs whose names match a shell pattern ({"*.final_norm", 0.2}), in place of dyt_alpha, in
  // order (a later pattern wins); each must match a DyT of the model (nn::set_dyt_alpha, parse_dyt_alpha_at)
  std::vector<std::pair<std::string, double>> dyt_alpha_at;
  Activation activation = Activation::ReLU;
  std::string topology = "pre_ln";  // a name from topology_names()
  // Per-head Q/K(/V) norms for every attention (QK-norm ablations). HybridNorm always uses QKV.
  HeadNormTargets qk_norm = HeadNormTargets::None;
  HeadNormKind qk_norm_kind = HeadNormKind::RMSNorm;  // HybridNorm uses the kind of `norm` instead
  // Options of one topology: validate() refuses a value other than the default for any other topology.
  double resi_dual_scale = 1.0;     // ResiDual's s (enc/dec_res_input_norm_scale); LN makes it a pure range knob
  int64_t mixln_post_layers = -1;   // Mix-LN: first k layers of each stack Post-LN; -1: floor(L/4)
  bool b2t_rescale = true;          // B2T: its layers' weights × L^-1/2 at init (its code's); false: Post-LN's init
  double layer_scale_init = -1;     // LayerScale: its λ's init ε; -1: CaiT's rule on the stack's depth
  bool normformer_scale_resids = false;  // NormFormer: a learned λ ⊙ x on each FFN's skip (fairseq --scale-resids)
  // NormFormer: HeadScale as fairseq's code (after out_proj, the channels transposed) instead of the paper's
  bool normformer_fairseq_head_scale = false;
  InitScheme init = InitScheme::Fairseq;
  bool share_embeddings = true;     // one table for source, target and output (fairseq share_all_embeddings)
  bool tie_output = true;           // when not sharing all: target embedding = output projection (sharing all
                                    // ties it: false with share_embeddings is refused)
  // The longest sequence (in non-pad tokens) that the positions' tables hold: sinusoidal, learned and rope. ALiBi,
  // T5 and none have no such table and take sequences of any length (position_limit()).
  int64_t max_positions = 1024;
  int64_t pad_id = 1;               // fairseq's padding index
  PositionEncoding positions = PositionEncoding::Sinusoidal;
  double rope_theta = 10000;        // RoPE's base (positions Rope only; LLaMA 3 uses 500000)
  // RoPE rotates the first rope_dims dims of each head and leaves the rest as they are (GPT-NeoX's and Pythia's
  // partial rotary, rotary_pct = rope_dims / d_head); 0: all d_head dims (positions Rope only; even)
  int64_t rope_dims = 0;
  // T5's bias (positions T5 only): its buckets per head, and the distance from which all share the last bucket
  int64_t relative_buckets = 32, relative_max_distance = 128;

  // Throws an Error naming the first bad field (an unknown topology lists the known ones).
  void validate() const;
  // max_positions for the encodings with a table (sinusoidal, learned, rope); for alibi, t5 and none, no limit
  // (INT64_MAX): ALiBi extrapolates to sequences longer than those it was trained on, as its paper shows.
  int64_t position_limit() const;
  bool decoder_only() const { return enc_layers == 0; }
  // The same with the topology already made from `topology` (the Transformer makes it once).
  void validate(const Topology& made) const;
  // This config for topology `name`, the options of the other topologies back to their defaults: one command line
  // (--resi-dual-scale 0.5) serves a comparison of several topologies.
  TransformerConfig with_topology(const std::string& name) const;
  // This config with position encoding `p`, the other encodings' options back to their defaults (rope_theta and
  // rope_dims are rope's; relative_buckets and relative_max_distance t5's): one command line serves a sweep over
  // encodings.
  TransformerConfig with_positions(PositionEncoding p) const;
  // Throws, naming `who`, unless each topology's own option set away from its default belongs to one of `names`
  // (a comparison given --resi-dual-scale without resi_dual would ignore it).
  void check_used_by(const std::vector<std::string>& names, const char* who) const;
  // The position encoding with its settings, for run logs: "sinusoidal", "rope (theta 10000)", "rope (theta 10000,
  // 4 of 16 dims)", "t5 (32 buckets up to distance 128)", "alibi", ...
  std::string positions_summary() const;
  // The norm kind with its settings, for run logs: "layer_norm", "rms_norm", "dyt (alpha0 0.5)".
  std::string norm_summary() const;
  // The topology with its own options that differ from their defaults (topology_options()), for run logs and
  // report labels: "pre_ln", "b2t (b2t_rescale false)", "layer_scale (layer_scale_init 0.001)".
  std::string topology_summary() const;
};

// A norm of cfg's kind over `dim` features, with cfg's norm_eps (LayerNorm, RMSNorm) or dyt_alpha (DyT): each norm a
// topology places.
std::shared_ptr<Norm> make_norm(const TransformerConfig& cfg, int64_t dim);

// TransformerConfig::dyt_alpha_at from the command line's "PATTERN=ALPHA0[,PATTERN=ALPHA0...]"
// ("*attn_norm=0.8,*.final_norm=0.2"; "" is none). Throws Error naming the entry that is not of that form.
std::vector<std::pair<std::string, double>> parse_dyt_alpha_at(const std::string& text);
// Its inverse: "*attn_norm=0.8,*.final_norm=0.2"
std::string dyt_alpha_at_text(const std::vector<std::pair<std::string, double>>& at);

// The options of TransformerConfig that one topology reads (resi_dual_scale: resi_dual's; mixln_post_layers:
// mix_ln's; b2t_rescale: b2t's; layer_scale_init: layer_scale's; normformer_scale_resids and
// normformer_fairseq_head_scale: normformer's), in one
// table: validate() refuses one set away from its default for another topology, with_topology() resets them,
// check_used_by() asks a comparison to list their topology, and Transformer::reads_kind() reads a file from before
// 2026-12-06 that gave one to another topology as its default.
struct TopologyOption {
  const char* name;          // the field, as kind(), the config JSON and messages spell it
  const char* topology;      // the topology that reads it
  const char* owner;         // that topology as messages name it ("ResiDual")
  const char* default_text;  // its default, as value() writes it
  std::string (*value)(const TransformerConfig&);  // its value, as Transformer::kind() writes it
  void (*reset)(TransformerConfig&);               // back to its default
};
const std::vector<TopologyOption>& topology_options();

enum class Side { Encoder, Decoder };

// The residual stream(s) between layers. `dual` is ResiDual's x_d; undefined for every other topology.
struct Stream {
  Tensor x;
  Tensor dual;
};

// Incremental decoding: a decoder layer's attention keys/values from the steps before (Transformer::decode_step).
struct LayerCache {
  KVCache self_attn;   // of every position fed so far; each step appends its own
  KVCache cross_attn;  // of the encoder output, computed once
};

// What a layer reads besides its stream.
struct LayerInputs {
  Tensor self_pad_mask;    // [B, T], nonzero = padding key (may be undefined); with a cache: over all cached keys
  bool causal = false;     // decoder self-attention
  Tensor memory;           // decoder: the encoder output [B, S, d]; undefined in the encoder (and with a cache)
  Tensor memory_pad_mask;  // [B, S]
  // positions Rope: the angles of the stream's positions [B, T, d_head/2], for self-attention (undefined otherwise)
  RotaryAngles rotary;
  // positions Alibi: the slopes and the stream's positions [B, T], for self-attention (undefined otherwise)
  AlibiBias alibi;
  // positions T5: the stack's bias of the self-attention scores [B, H, T, T_keys] (with a cache: T_keys covers every
  // cached key), which every layer adds (undefined otherwise)
  Tensor position_bias;
  // Decoder step (inference): the stream holds only the new position(s); SA appends their keys/values to
  // cache->self_attn and attends over all of it, CA reads cache->cross_attn instead of projecting `memory`.
  // Everything else in a layer is position-wise, so apply() is the same code for both.
  LayerCache* cache = nullptr;
};

// One residual add as the analysis hook sees it (Transformer::residual_updates): the stream x that a sublayer's
// output is added to, and that output o (the branch, after dropout and any scaling), both [B, T, d].
struct ResidualUpdate {
  std::string sublayer;  // its scope: "enc.3.ffn"
  Tensor stream, branch;
};

// One encoder or decoder layer. The base owns the sublayers every topology has (self_attn, cross_attn in the
// decoder, ffn); a topology adds its norms and writes apply(), the layer's equations.
class Layer : public Module {
 public:
  Layer(const TransformerConfig& cfg, Side side, int64_t index, HeadNormTargets head_norm,
        HeadNormKind head_norm_kind);
  Layer(const TransformerConfig& cfg, Side side, int64_t index);  // head norms from cfg.qk_norm
  // Opens the layer's scope, checks the stream, runs apply().
  Stream forward(const Stream& in, const LayerInputs& ctx);

  bool is_decoder() const { return side == Side::Decoder; }
  // A decoder layer of an encoder-decoder model; false in the encoder and in a decoder-only model (enc_layers 0).
  // Topologies build their cross-attention sublayer (CA and its norms) under this test.
  bool has_cross_attention() const { return cross_attn != nullptr; }
  TransformerConfig cfg;
  Side side;
  int64_t index;
  std::shared_ptr<MultiHeadAttention> self_attn, cross_attn;  // cross_attn: null unless has_cross_attention()
  std::shared_ptr<FeedForward> ffn;
  // Analysis hook: when set, residual_add appends each of its adds here (set for one forward by the Transformer).
  std::vector<ResidualUpdate>* residual_updates = nullptr;

 protected:
  virtual Stream apply(const Stream& in, const LayerInputs& ctx) = 0;

  // The sublayer functions (their outputs before dropout).
  Tensor SA(const Tensor& x, const LayerInputs& ctx);  // self-attention, causal in the decoder (cached: see ctx.cache)
  Tensor CA(const Tensor& x, const LayerInputs& ctx);  // queries x, keys/values the encoder output (or its cache)
                                                       // (throws in a layer without cross-attention)
  Tensor F(const Tensor& x);                           // feed-forward
  // D(o): residual dropout, recorded in the sublayer's scope.
  Tensor D(const char* sublayer, const Tensor& o);
  // stream + branch, named "<scope>.<sublayer>.residual_add": the branch is the sublayer's output o, the stream
  // what it is added to (the relative update ‖o‖/‖x‖ of TOPOLOGIES.md §7.4 reads them in this order).
  Tensor residual_add(const char* sublayer, const Tensor& stream, const Tensor& branch);
  // A norm of cfg's kind over d_model, registered under `name`.
  std::shared_ptr<Norm> add_norm(const std::string& name);
};

using NamedModule = std::pair<std::string, std::shared_ptr<Module>>;
class Transformer;

class Topology {
 public:
  // The built-in names, so that `cfg.topology = Topology::ResiDual` reads like an enum.
  static constexpr const char* PostLN = "post_ln";
  static constexpr const char* PreLN = "pre_ln";
  static constexpr const char* ResiDual = "resi_dual";
  static constexpr const char* HybridNorm = "hybrid_norm";
  static constexpr const char* HybridNormStar = "hybrid_norm_star";
  static constexpr const char* DeepNorm = "deep_norm";
  static constexpr const char* SandwichLN = "sandwich_ln";
  static constexpr const char* PeriLN = "peri_ln";
  static constexpr const char* MixLN = "mix_ln";
  static constexpr const char* ResPostNorm = "res_post_norm";
  static constexpr const char* ReZero = "rezero";
  static constexpr const char* Admin = "admin";  // its ω init profiles a batch: init_from_batch
  static constexpr const char* B2T = "b2t";
  static constexpr const char* LayerScale = "layer_scale";
  static constexpr const char* SubLN = "sub_ln";
  static constexpr const char* NormFormer = "normformer";
  static constexpr const char* TFixup = "t_fixup";  // its embedding scale: init_model

  virtual ~Topology() = default;
  virtual std::string name() const = 0;
  // What fixes this topology's function beyond TransformerConfig (a constant its factory was given, for a topology
  // a program registers): Transformer::kind() records it, so a checkpoint is refused by a model whose topology says
  // otherwise. "" for the built-in ones, whose settings are config fields.
  virtual std::string settings() const { return ""; }
  // Refuses settings of cfg this topology cannot honour (HybridNorm: a qk_norm, its QKV norms being its own);
  // TransformerConfig::validate calls it, and programs that train several topologies call it on each first.
  virtual void check_config(const TransformerConfig& cfg) const { (void)cfg; }

  // Layers; by default both call make_layer with the side.
  virtual std::shared_ptr<Layer> make_encoder_layer(const TransformerConfig& cfg, int64_t index) {
    return make_layer(cfg, Side::Encoder, index);
  }
  virtual std::shared_ptr<Layer> make_decoder_layer(const TransformerConfig& cfg, int64_t index) {
    return make_layer(cfg, Side::Decoder, index);
  }
  // Modules at the ends of one stack (final norms), which the model registers in that stack ("enc.final_norm");
  // the topology keeps its own handles to them for begin_stack/end_stack. Called once per side, before any
  // begin_stack/end_stack.
  virtual std::vector<NamedModule> make_stack_modules(const TransformerConfig& cfg, Side side) {
    (void)cfg, (void)side;
    return {};
  }
  // The stream entering the first layer, from the (scaled, positioned, dropped-out) embedding.
  virtual Stream begin_stack(const Tensor& x_embedded, Side side) {
    (void)side;
    return {x_embedded, Tensor()};
  }
  // The stack output: the encoder output that cross-attention reads, or the decoder features before the output
  // projection. Called inside the stack's scope ("enc").
  virtual Tensor end_stack(const Stream& s, Side side) {
    (void)side;
    return s.x;
  }
  // An initialisation beyond the layers (T-Fixup scales the token embeddings), run once at the end of the model's
  // construction, before cfg.init's scheme (SmallInit, GPT2 and DeepNorm re-initialise on top, as they do the
  // layers' own init).
  virtual void init_model(Transformer& model) { (void)model; }
  // An initialisation that needs data (Admin's profiling pass), run once on a fresh model with its first training
  // batch, through Transformer::init_from_batch. Returns a line for the training log, "" when there is none.
  virtual std::string init_from_batch(Transformer& model, const Tensor& src_ids, const Tensor& tgt_in_ids) {
    (void)model, (void)src_ids, (void)tgt_in_ids;
    return "";
  }

 protected:
  virtual std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) = 0;
};

// Pre-LN-family helper: one final norm (cfg's kind and eps) per stack, named "final_norm", applied to x.
class FinalNormTopology : public Topology {
 public:
  std::vector<NamedModule> make_stack_modules(const TransformerConfig& cfg, Side side) override;
  Tensor end_stack(const Stream& s, Side side) override;

 protected:
  std::shared_ptr<Norm> final_norm_[2];
};

// A topology that is nothing but its layer: every encoder and decoder layer is LayerT(cfg, side, index), on top
// of Base (Topology: no final norm; FinalNormTopology: one per stack). A topology file then holds only its layer's
// equations and `return std::make_unique<LayerTopology<MyLayer, FinalNormTopology>>("my_name");`.
template <class LayerT, class Base = Topology>
class LayerTopology : public Base {
 public:
  explicit LayerTopology(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }

 protected:
  std::shared_ptr<Layer> make_layer(const TransformerConfig& cfg, Side side, int64_t index) override {
    return std::make_shared<LayerT>(cfg, side, index);
  }

 private:
  std::string name_;
};

// ---- registry (nn/topologies/registry.cpp) ----
std::unique_ptr<Topology> make_topology(const std::string& name);  // unknown names list the known ones
std::vector<std::string> topology_names();  // the built-in ones, then those registered, in registration order

// A topology of your own program, known by name to everything that takes one (TransformerConfig::topology,
// make_topology, topology_names, checkpoints) while this object lives; the library's files stay as they are.
//
//   class MyLayer : public nn::Layer { ... Stream apply(const Stream& in, const LayerInputs& ctx) override; };
//   static const nn::TopologyRegistration my_topology("my_topology", [] {
//     return std::make_unique<nn::LayerTopology<MyLayer, nn::FinalNormTopology>>("my_topology");
//   });
//
// Names are 1-64 characters of a-z, 0-9 and _, and neither built-in nor registered already (else an Error); the
// factory's topology must answer name() with the registered name. Destroying the object unregisters the name.
using TopologyFactory = std::function<std::unique_ptr<Topology>()>;
class TopologyRegistration {
 public:
  TopologyRegistration(std::string name, TopologyFactory make);
  ~TopologyRegistration();
  TopologyRegistration(const TopologyRegistration&) = delete;
  TopologyRegistration& operator=(const TopologyRegistration&) = delete;

 private:
  std::string name_;
};

// LayerScale's ε (nn/topologies/layer_scale.cpp): layer_scale_init when > 0, else CaiT's rule on the stack's
// layers L: 0.1 for L <= 18, 1e-5 for L <= 24, 1e-6 beyond.
double layer_scale_epsilon(double layer_scale_init, int64_t stack_layers);

// ---- DeepNorm constants (TOPOLOGIES.md §5.1; paper / xformers `get_deepnorm_coefficients`) ----
//   encoder-decoder (N, M >= 1): encoder α = 0.81·(N⁴M)^{1/16}, β = 0.87·(N⁴M)^{-1/16};
//                                decoder α = (3M)^{1/4}, β = (12M)^{-1/4}
//   decoder-only (N = 0):        α = (2M)^{1/4}, β = (8M)^{-1/4}
struct DeepNormCoefficients {
  double alpha, beta;
};
DeepNormCoefficients deepnorm_coefficients(int64_t enc_layers, int64_t dec_layers, Side side);
// DeepNorm init of one layer: xavier_normal(gain β) for v_proj, out_proj (self and cross), fc1, fc2;
// xavier_normal(gain 1) for q_proj, k_proj. Biases are left as they are.
void deepnorm_init(Layer& layer, double beta);
// SmallInit (Nguyen & Salazar 2019, HybridNorm's Megatron init): σ = sqrt(2/(5d)); q/k/v/fc1 trunc_normal(σ),
// out_proj/fc2 trunc_normal(σ/√(2L)) with L the layers of this stack; all biases 0; cutoff ±3σ.
void small_init(Layer& layer, int64_t stack_layers);
// GPT-2's init (nanoGPT's _init_weights and c_proj rule, TOPOLOGIES.md §8.2's N(0, 0.02)): the same layout with
// σ = 0.02 and no cutoff: q/k/v/fc1 N(0, 0.02), out_proj/fc2 N(0, 0.02/√(2L)), biases 0. The model's tables are
// N(0, 0.02) too (Transformer's InitScheme::GPT2).
void gpt2_init(Layer& layer, int64_t stack_layers);

}  // namespace skipgrad::nn
