// The encoder-decoder Transformer, with its residual/normalization topology chosen by name.
//
//   nn::TransformerConfig cfg;
//   cfg.vocab = 8000; cfg.d_model = 256; cfg.heads = 4; cfg.d_ff = 1024; cfg.enc_layers = cfg.dec_layers = 6;
//   cfg.topology = nn::Topology::ResiDual;
//   nn::Transformer model(cfg);
//   Tensor logits = model.forward(src_ids, tgt_in_ids);             // [B, T, V]
//
// Embedding (fairseq): e = √d · E[tok] + PE_sin(pos), then D(e); the encoder zeroes padded positions.
// Parameters: "embed.weight" (shared by source, target and output when cfg.share_embeddings), otherwise
// "src_embed.weight", "tgt_embed.weight" and, unless cfg.tie_output, "output_projection.weight";
// "enc.<i>.…" and "dec.<i>.…" for the layers, "enc.final_norm.…" etc. for the topology's stack modules.
#pragma once
#include <memory>
#include <vector>

#include "nn/topology.h"

namespace skipgrad::nn {

// A stack of layers plus the topology's modules at its ends; named "enc" or "dec".
class Stack : public Module {
 public:
  std::vector<std::shared_ptr<Layer>> layers;
};

class Transformer : public Module {
 public:
  explicit Transformer(const TransformerConfig& cfg);

  // src_ids int64 [B, S], tgt_in_ids int64 [B, T] (the shifted target) -> logits [B, T, V].
  Tensor forward(const Tensor& src_ids, const Tensor& tgt_in_ids);
  // The encoder output [B, S, d] that cross-attention reads.
  Tensor encode(const Tensor& src_ids);
  // Logits [B, T, V] for a target prefix [B, T], given encode()'s output and padding_mask(src_ids).
  Tensor decode(const Tensor& enc_out, const Tensor& src_pad_mask, const Tensor& tgt_prefix);
  // int64 [B, T]: 1 where ids == pad_id, else 0.
  Tensor padding_mask(const Tensor& ids) const;

  const TransformerConfig& config() const { return cfg_; }
  Topology& topology() { return *topology_; }

  // Analysis hooks: when set, every forward appends the stream after each layer, encoder layers first, then
  // decoder layers: x (ResiDual: x_a) to layer_outputs, and the dual stream x_d (undefined for other topologies)
  // to dual_outputs.
  std::vector<Tensor>* layer_outputs = nullptr;
  std::vector<Tensor>* dual_outputs = nullptr;

  std::shared_ptr<Embedding> src_embed, tgt_embed;  // the same module when sharing
  std::shared_ptr<Linear> output_projection;        // null when the output is tied to tgt_embed
  std::shared_ptr<SinusoidalPositions> positions;
  std::shared_ptr<Stack> encoder, decoder;

 private:
  Tensor embed(Embedding& table, const Tensor& ids, const Tensor& pad_mask, bool zero_pads);
  Stream run_stack(Stack& stack, Stream s, const LayerInputs& ctx);
  void check_ids(const Tensor& ids, const char* what) const;
  void apply_init();

  TransformerConfig cfg_;
  std::unique_ptr<Topology> topology_;
};

}  // namespace skipgrad::nn
