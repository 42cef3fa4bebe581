// The encoder-decoder Transformer, with its residual/normalization topology chosen by name.
//
//   nn::TransformerConfig cfg;
//   cfg.vocab = 8000; cfg.d_model = 256; cfg.heads = 4; cfg.d_ff = 1024; cfg.enc_layers = cfg.dec_layers = 6;
//   cfg.topology = nn::Topology::ResiDual;
//   nn::Transformer model(cfg);
//   Tensor logits = model.forward(src_ids, tgt_in_ids);             // [B, T, V]
//
// A decoder-only language model is the same class with cfg.enc_layers = 0: no encoder and no cross-attention, the
// decoder's layers are [SA, F] in the topology's arrangement, and
//   Tensor logits = lm.forward(ids);                                // [B, T, V], causal: position t sees ids[:t+1]
//
// Embedding (fairseq): e = √d · E[tok] + PE(pos), then D(e); the encoder zeroes padded positions. PE is the
// sinusoidal table, or a learned one (cfg.positions); with RoPE nothing is added and every self-attention rotates
// its queries and keys instead; with ALiBi nothing is added and every self-attention biases its scores by the
// distance; with T5, by a learned bias of the relative position, one table per stack ("enc.relative_bias.weight",
// "dec.relative_bias.weight"); with none, nothing at all.
// Parameters: "embed.weight" (shared by source, target and output when cfg.share_embeddings), otherwise
// "src_embed.weight", "tgt_embed.weight" and, unless cfg.tie_output, "output_projection.weight";
// "enc.<i>.…" and "dec.<i>.…" for the layers, "enc.final_norm.…" etc. for the topology's stack modules.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/name_patterns.h"
#include "nn/topology.h"

namespace skipgrad::nn {

// Incremental decoding state of R rows (sentences, or beam hypotheses): what Transformer::decode_step keeps from
// the steps before. Inference only; built by Transformer::start_decoding.
struct DecoderState {
  std::vector<LayerCache> layers;               // per decoder layer: self-attention K/V so far, cross-attention K/V
  Tensor memory_pad_mask;                       // [R, S] source padding, in the model's float dtype (gatherable)
  std::vector<std::vector<int64_t>> fed;        // per row, the tokens fed so far (positions, self-attention padding)
  std::vector<int64_t> memory_rows;             // per row, the encoder-output row it reads (skips needless gathers)
  // The model's removed decoder layers when decoding started, sorted: decode_step refuses others (a layer restored
  // half-way would have cached no keys/values of the positions before).
  std::vector<std::string> removed_layers;

  int64_t rows() const { return (int64_t)fed.size(); }
  int64_t steps() const { return fed.empty() ? 0 : (int64_t)fed[0].size(); }
  // Keeps rows `index` in that order (values in [0, rows()), repeats allowed): beam search's reordering by parent
  // hypothesis, and dropping finished sentences. Every cache is gathered on its batch dimension.
  void reorder(const std::vector<int64_t>& index);
};

// Rows `index` of x along dim 0 (index_select on the batch dimension); x floating, any rank. Not recorded.
Tensor select_rows(const Tensor& x, const std::vector<int64_t>& index);

// A stack of layers plus the topology's modules at its ends; named "enc" or "dec".
class Stack : public Module {
 public:
  std::vector<std::shared_ptr<Layer>> layers;
  std::shared_ptr<RelativePositionBias> relative_bias;  // positions T5: the stack's table ("relative_bias"); else null
};

class Transformer : public Module {
 public:
  explicit Transformer(const TransformerConfig& cfg);

  // src_ids int64 [B, S], tgt_in_ids int64 [B, T] (the shifted target) -> logits [B, T, V]. A decoder-only model
  // takes src_ids undefined (what code written for both kinds passes; Admin's init does).
  Tensor forward(const Tensor& src_ids, const Tensor& tgt_in_ids);
  // Decoder-only (enc_layers 0): ids int64 [B, T] -> logits [B, T, V] of the next token at every position.
  Tensor forward(const Tensor& ids);
  // The encoder output [B, S, d] that cross-attention reads.
  Tensor encode(const Tensor& src_ids);
  // Logits [B, T, V] for a target prefix [B, T], given encode()'s output and padding_mask(src_ids) (decoder-only:
  // both undefined).
  Tensor decode(const Tensor& enc_out, const Tensor& src_pad_mask, const Tensor& tgt_prefix);
  // int64 [B, T]: 1 where ids == pad_id, else 0.
  Tensor padding_mask(const Tensor& ids) const;

  // Incremental decoding (inference: eval mode; runs without a tape). Each step feeds ONE token per row and costs
  // one position, not a re-run of the prefix:
  //   DecoderState st = model.start_decoding(model.encode(src), model.padding_mask(src));
  //   Tensor logits = model.decode_step(st, bos);      // int64 [R] -> [R, V], the next token's logits
  //   st.reorder(parents); logits = model.decode_step(st, next_tokens); ...
  // decode_step's logits equal the last position of decode() on the whole fed prefix. tokens may also be int64
  // [R, T]: T positions per row in one call (a prompt's prefill: one pass over T positions instead of T steps), the
  // logits those of the last one.
  DecoderState start_decoding(const Tensor& enc_out, const Tensor& src_pad_mask);
  // Decoder-only: `rows` empty prefixes (the first decode_step feeds each row's first token, e.g. bos).
  DecoderState start_decoding(int64_t rows);
  Tensor decode_step(DecoderState& state, const Tensor& tokens);

  const TransformerConfig& config() const { return cfg_; }
  // The topology and every setting that changes the function but no parameter's name or shape.
  std::string kind() const override;
  // kind(), or kind() without its heads, as checkpoints written before it named them (2026-12-05) record it (so
  // such a file loads into a model of any head count: it does not say which it had).
  bool reads_kind(const std::string& stored) const override;
  Topology& topology() { return *topology_; }
  // The topology's data-dependent initialisation (Admin's ω), on a fresh model with its first training batch;
  // nothing for most topologies. Training code calls it for every topology, so a new one needs no special case.
  // Returns a line for the training log, or "". Layers removed for analysis (remove_layers) take part in it, and
  // are removed again after.
  std::string init_from_batch(const Tensor& src_ids, const Tensor& tgt_in_ids);

  // Analysis hooks: when set, every forward appends the stream after each layer, encoder layers first, then
  // decoder layers: x (ResiDual: x_a) to layer_outputs, and the dual stream x_d (undefined for other topologies)
  // to dual_outputs; the stream entering each stack's first layer (encoder, then decoder) to stack_inputs;
  std::vector<Tensor>* layer_outputs = nullptr;
  std::vector<Tensor>* dual_outputs = nullptr;
  std::vector<Tensor>* stack_inputs = nullptr;
  // each attention's logit range and entropy, in the order they run (MultiHeadAttention::logit_rows); each
  // residual add's stream and branch (Layer::residual_updates).
  std::vector<AttentionLogitRows>* attention_logits = nullptr;
  std::vector<ResidualUpdate>* residual_updates = nullptr;

  // Layer removal (TOPOLOGIES.md §7.5, Mix-LN's layer_remove.py): the named layers ("enc.3", "dec.0") are skipped,
  // so the stream (ResiDual: both streams) leaves them as it entered, in forward, decode and decode_step alike; the
  // layer_outputs hook still records one entry per layer. An analysis setting: not part of kind(), not saved.
  // Throws Error, changing nothing, for a name that is not a layer of this model; {} restores every layer.
  void remove_layers(const std::vector<std::string>& names);
  // Every layer's name, encoder first: "enc.0" ... "enc.<E-1>", "dec.0" ... "dec.<D-1>" (what remove_layers takes and
  // the measures are named by).
  std::vector<std::string> layer_names() const;
  const std::vector<std::string>& removed_layers() const { return removed_; }

  std::shared_ptr<Embedding> src_embed, tgt_embed;  // the same module when sharing
  std::shared_ptr<Linear> output_projection;        // null when the output is tied to tgt_embed
  // At most one of these four, by cfg.positions: the sinusoidal table ("positions", a buffer), the learned one
  // ("embed_positions", a parameter), RoPE's angle tables ("rotary", buffers) or ALiBi's slopes ("alibi", a
  // buffer); none for positions none.
  std::shared_ptr<SinusoidalPositions> positions;
  std::shared_ptr<Embedding> learned_positions;
  std::shared_ptr<RotaryEmbedding> rotary;
  std::shared_ptr<AlibiSlopes> alibi;
  std::shared_ptr<Stack> encoder, decoder;  // a decoder-only model's encoder is empty and not a submodule

 private:
  // What the positions of the tokens bring: the rows added to their embedding (sinusoidal, learned), the angles
  // every self-attention rotates by (RoPE), the slopes and positions of its biases (ALiBi), or the stack's bias of
  // its scores (T5). position_ids: make_positions' ids ([B, T]); key_ids: those of every key the self-attention
  // sees, when they are not the same (a cached decoder step's).
  struct PositionInputs {
    Tensor added;
    RotaryAngles rotary;
    AlibiBias alibi;
    Tensor bias;
  };
  PositionInputs position_inputs(const Tensor& position_ids, Stack& stack, const Tensor& key_ids = Tensor());
  Tensor position_ids(const Tensor& ids) const;  // make_positions, named in the caller's scope + ".positions"
  // e = D(√d · E[ids] + added) (nothing added when `added` is undefined); zero_pads: e · (1 − pad) after.
  Tensor embed(Embedding& table, const Tensor& ids, const Tensor& added, const Tensor& pad_mask, bool zero_pads);
  Tensor encode_masked(const Tensor& src_ids, const Tensor& src_pad_mask);  // encode() with the mask made
  Stream run_stack(Stack& stack, Stream s, LayerInputs ctx, std::vector<LayerCache>* caches = nullptr);
  Tensor output_logits(const Tensor& features);
  void check_memory(const char* who, const Tensor& enc_out, const Tensor& src_pad_mask, int64_t batch) const;
  void check_ids(const Tensor& ids, const char* what) const;
  void apply_init();

  TransformerConfig cfg_;
  std::unique_ptr<Topology> topology_;
  std::vector<std::string> removed_;  // remove_layers' names, in the order given, without repeats
};

// Refuses cfg.dyt_alpha_at's patterns that match no DyT of cfg's model, as Transformer(cfg) does, and the optimizer's
// lr_scale_at patterns (nn::lr_scale_groups, the examples' --lr-scale-at) that match no parameter of it, an Error
// naming `who`: the names are the model's, so it builds one (only when there are patterns). For programs that run
// several configurations (compare, sweep, the graph report, skipgrad-lm) to check them all before the first trains;
// cfg.vocab may be the placeholder 0 then.
void check_name_patterns(TransformerConfig cfg, const PatternValues& lr_scale_at = {},
                         const std::string& who = "lr_scale_at");

}  // namespace skipgrad::nn
