#include "nn/transformer.h"

#include <cmath>
#include <string>

#include "autograd/ops.h"
#include "autograd/tape.h"

namespace skipgrad::nn {

Transformer::Transformer(const TransformerConfig& cfg) : cfg_(cfg) {
  cfg.validate();
  topology_ = make_topology(cfg.topology);
  const int64_t V = cfg.vocab, d = cfg.d_model;

  if (cfg.share_embeddings) {
    src_embed = tgt_embed = register_module("embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
  } else {
    src_embed = register_module("src_embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
    tgt_embed = register_module("tgt_embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
    if (!cfg.tie_output) {
      // fairseq build_output_projection: a separate matrix, N(0, d^-0.5)
      output_projection = register_module("output_projection", std::make_shared<Linear>(d, V, false));
      init::normal_(output_projection->weight, 0.0, std::pow((double)d, -0.5));
    }
  }
  positions = register_module("positions", std::make_shared<SinusoidalPositions>(d, cfg.max_positions, cfg.pad_id));

  encoder = register_module("enc", std::make_shared<Stack>());
  for (int64_t i = 0; i < cfg.enc_layers; i++)
    encoder->layers.push_back(encoder->register_module(std::to_string(i), topology_->make_encoder_layer(cfg, i)));
  for (auto& [n, m] : topology_->make_stack_modules(cfg, Side::Encoder)) encoder->register_module(n, m);

  decoder = register_module("dec", std::make_shared<Stack>());
  for (int64_t i = 0; i < cfg.dec_layers; i++)
    decoder->layers.push_back(decoder->register_module(std::to_string(i), topology_->make_decoder_layer(cfg, i)));
  for (auto& [n, m] : topology_->make_stack_modules(cfg, Side::Decoder)) decoder->register_module(n, m);

  apply_init();
  name_parameters();
}

// Fairseq: what the modules did at construction (embeddings N(0, d^-0.5), MHA xavier, FFN torch default; the
// deep_norm topology's own β-init). SmallInit and DeepNorm re-initialise on top.
void Transformer::apply_init() {
  switch (cfg_.init) {
    case InitScheme::Fairseq: break;
    case InitScheme::SmallInit: {
      const double sigma = std::sqrt(2.0 / (5.0 * (double)cfg_.d_model));
      src_embed->reset_normal(sigma, 3.0);
      if (tgt_embed != src_embed) tgt_embed->reset_normal(sigma, 3.0);
      if (output_projection) output_projection->reset_trunc_normal(sigma, 3.0);
      for (auto& l : encoder->layers) small_init(*l, cfg_.enc_layers);
      for (auto& l : decoder->layers) small_init(*l, cfg_.dec_layers);
      break;
    }
    case InitScheme::DeepNorm: {
      const double beta_enc = deepnorm_coefficients(cfg_.enc_layers, cfg_.dec_layers, Side::Encoder).beta;
      const double beta_dec = deepnorm_coefficients(cfg_.enc_layers, cfg_.dec_layers, Side::Decoder).beta;
      for (auto& l : encoder->layers) deepnorm_init(*l, beta_enc);
      for (auto& l : decoder->layers) deepnorm_init(*l, beta_dec);
      break;
    }
  }
}

void Transformer::check_ids(const Tensor& ids, const char* what) const {
  check(ids.defined(), "Transformer", ": ", what, " is an undefined tensor");
  check(ids.dtype() == DType::I64 && ids.dim() == 2, "Transformer", ": ", what, " must be int64 [B, T], got ",
        ids.meta_str());
  check(ids.size(0) > 0 && ids.size(1) > 0, "Transformer", ": ", what, " is empty: ", ids.shape());
}

Tensor Transformer::padding_mask(const Tensor& ids) const {
  return eq(ids, Tensor::full({1}, (double)cfg_.pad_id, DType::I64, ids.device()));
}

// x = D(√d · E[ids] + PE(ids)); the encoder then zeroes padded positions: x = x · (1 − pad).
Tensor Transformer::embed(Embedding& table, const Tensor& ids, const Tensor& pad_mask, bool zero_pads) {
  Tensor x = add(mul(table.forward(ids), std::sqrt((double)cfg_.d_model)), positions->forward(ids));
  x = dropout(x, cfg_.dropout, is_training());
  if (zero_pads) x = mul(x, rsub(pad_mask.to(x.dtype()), 1.0).unsqueeze(-1));
  return x;
}

Stream Transformer::run_stack(Stack& stack, Stream s, const LayerInputs& ctx) {
  for (auto& layer : stack.layers) {
    s = layer->forward(s, ctx);
    if (layer_outputs) layer_outputs->push_back(s.x);
    if (dual_outputs) dual_outputs->push_back(s.dual);
  }
  return s;
}

Tensor Transformer::encode(const Tensor& src_ids) {
  check_ids(src_ids, "src_ids");
  Tensor pad = padding_mask(src_ids);
  Scope scope(encoder->name());
  Tensor x = embed(*src_embed, src_ids, pad, true);
  LayerInputs ctx;
  ctx.self_pad_mask = pad;
  Stream s = run_stack(*encoder, topology_->begin_stack(x, Side::Encoder), ctx);
  return topology_->end_stack(s, Side::Encoder);
}

Tensor Transformer::decode(const Tensor& enc_out, const Tensor& src_pad_mask, const Tensor& tgt_prefix) {
  check_ids(tgt_prefix, "tgt_prefix");
  const int64_t d = cfg_.d_model;
  check(enc_out.defined() && enc_out.dim() == 3 && enc_out.size(2) == d && enc_out.size(0) == tgt_prefix.size(0),
        "Transformer::decode", ": encoder output must be [", tgt_prefix.size(0), ",S,", d, "], got ",
        enc_out.defined() ? shape_str(enc_out.shape()) : "an undefined tensor");
  check(!src_pad_mask.defined() || src_pad_mask.shape() == Shape{enc_out.size(0), enc_out.size(1)},
        "Transformer::decode", ": source padding mask must be ", Shape{enc_out.size(0), enc_out.size(1)}, ", got ",
        src_pad_mask.defined() ? shape_str(src_pad_mask.shape()) : "");
  Tensor features;
  {
    Scope scope(decoder->name());
    Tensor tgt_pad = padding_mask(tgt_prefix);
    Tensor y = embed(*tgt_embed, tgt_prefix, tgt_pad, false);
    LayerInputs ctx;
    ctx.self_pad_mask = tgt_pad;  // fairseq passes prev_output_tokens.eq(pad) as the self-attention padding mask
    ctx.causal = true;
    ctx.memory = enc_out;
    ctx.memory_pad_mask = src_pad_mask;
    Stream s = run_stack(*decoder, topology_->begin_stack(y, Side::Decoder), ctx);
    features = topology_->end_stack(s, Side::Decoder);
  }
  if (output_projection) return output_projection->forward(features);
  Scope scope("output_projection");
  return linear(features, tgt_embed->weight);  // logits = features · Eᵀ (tied)
}

Tensor Transformer::forward(const Tensor& src_ids, const Tensor& tgt_in_ids) {
  check_ids(src_ids, "src_ids");
  check_ids(tgt_in_ids, "tgt_in_ids");
  check(src_ids.size(0) == tgt_in_ids.size(0), "Transformer", ": src_ids ", src_ids.shape(), " and tgt_in_ids ",
        tgt_in_ids.shape(), " differ in batch size");
  Tensor enc = encode(src_ids);
  return decode(enc, padding_mask(src_ids), tgt_in_ids);
}

}  // namespace skipgrad::nn
