#include "torch_reference.h"

#include <cmath>
#include <limits>
#include <string>

namespace bench {

namespace F = torch::nn::functional;

TorchMHAImpl::TorchMHAImpl(int64_t d, int64_t h) : heads(h), d_head(d / h) {
  q_proj = register_module("q_proj", torch::nn::Linear(d, d));
  k_proj = register_module("k_proj", torch::nn::Linear(d, d));
  v_proj = register_module("v_proj", torch::nn::Linear(d, d));
  out_proj = register_module("out_proj", torch::nn::Linear(d, d));
}

// rotate_half(x) = [-x2, x1] for x = [x1, x2] split in halves of the last dim (GPT-NeoX / Hugging Face LLaMA)
static torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

torch::Tensor TorchMHAImpl::forward(const torch::Tensor& query, const torch::Tensor& key_value,
                                    const torch::Tensor& mask, const torch::Tensor& cos, const torch::Tensor& sin,
                                    const torch::Tensor& bias) {
  const int64_t B = query.size(0), Tq = query.size(1), Tk = key_value.size(1), d = heads * d_head;
  auto split = [&](const torch::Tensor& t, int64_t T) { return t.view({B, T, heads, d_head}).transpose(1, 2); };
  torch::Tensor q = split(q_proj(query), Tq), k = split(k_proj(key_value), Tk), v = split(v_proj(key_value), Tk);
  if (cos.defined()) {  // RoPE
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
  }
  torch::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt((double)d_head));
  if (bias.defined()) scores = scores + bias;  // ALiBi
  scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  torch::Tensor o = torch::matmul(torch::softmax(scores, -1), v);  // [B, H, Tq, d_h]
  return out_proj(o.transpose(1, 2).reshape({B, Tq, d}));
}

TorchFFNImpl::TorchFFNImpl(int64_t d, int64_t ff) {
  fc1 = register_module("fc1", torch::nn::Linear(d, ff));
  fc2 = register_module("fc2", torch::nn::Linear(ff, d));
}

torch::Tensor TorchFFNImpl::forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }

TorchNormImpl::TorchNormImpl(const TorchModelConfig& cfg) : dyt(cfg.norm == "dyt"), eps(cfg.norm_eps) {
  if (cfg.norm != "layer_norm" && !dyt)
    throw std::invalid_argument("TorchNorm: norm must be layer_norm or dyt, not " + cfg.norm);
  if (dyt) alpha = register_parameter("alpha", torch::full({1}, 0.5));
  weight = register_parameter("weight", torch::ones({cfg.d_model}));
  bias = register_parameter("bias", torch::zeros({cfg.d_model}));
}

torch::Tensor TorchNormImpl::forward(const torch::Tensor& x) {
  if (dyt) return torch::tanh(alpha * x) * weight + bias;
  return F::layer_norm(x, F::LayerNormFuncOptions({weight.size(0)}).weight(weight).bias(bias).eps(eps));
}

TorchLayerImpl::TorchLayerImpl(const TorchModelConfig& cfg, bool dec) : decoder(dec), pre_ln(cfg.pre_ln) {
  self_attn = register_module("self_attn", TorchMHA(cfg.d_model, cfg.heads));
  if (decoder) cross_attn = register_module("cross_attn", TorchMHA(cfg.d_model, cfg.heads));
  ffn = register_module("ffn", TorchFFN(cfg.d_model, cfg.d_ff));
  self_attn_norm = register_module("self_attn_norm", TorchNorm(cfg));
  if (decoder) cross_attn_norm = register_module("cross_attn_norm", TorchNorm(cfg));
  ffn_norm = register_module("ffn_norm", TorchNorm(cfg));
}

torch::Tensor TorchLayerImpl::forward(torch::Tensor x, const torch::Tensor& self_mask, const torch::Tensor& memory,
                                      const torch::Tensor& memory_mask, const torch::Tensor& cos,
                                      const torch::Tensor& sin, const torch::Tensor& bias) {
  if (pre_ln) {  // x = x + f(LN(x))
    torch::Tensor h = self_attn_norm(x);
    x = x + self_attn(h, h, self_mask, cos, sin, bias);
    if (decoder) x = x + cross_attn(cross_attn_norm(x), memory, memory_mask);
    return x + ffn(ffn_norm(x));
  }
  // Post-LN: x = LN(x + f(x))
  x = self_attn_norm(x + self_attn(x, x, self_mask, cos, sin, bias));
  if (decoder) x = cross_attn_norm(x + cross_attn(x, memory, memory_mask));
  return ffn_norm(x + ffn(x));
}

TorchStackImpl::TorchStackImpl(const TorchModelConfig& cfg, bool decoder) {
  const int64_t L = decoder ? cfg.dec_layers : cfg.enc_layers;
  for (int64_t i = 0; i < L; i++) layers.push_back(register_module(std::to_string(i), TorchLayer(cfg, decoder)));
  if (cfg.pre_ln) final_norm = register_module("final_norm", TorchNorm(cfg));
  if (cfg.positions == "t5") relative_bias = register_module("relative_bias", TorchRelativeBias(cfg, !decoder));
}

TorchRelativeBiasImpl::TorchRelativeBiasImpl(const TorchModelConfig& cfg, bool bidir)
    : bidirectional(bidir), num_buckets(cfg.relative_buckets), max_distance(cfg.relative_max_distance) {
  weight = register_parameter("weight", torch::zeros({cfg.relative_buckets, cfg.heads}));
  buckets = register_buffer("buckets", torch::zeros({2 * cfg.relative_max_distance + 1}, torch::kLong));
}

// Hugging Face's T5Attention._relative_position_bucket of p_j − p_i, then the table's rows: values [B, T, T, H]
torch::Tensor TorchRelativeBiasImpl::forward(const torch::Tensor& pos) {
  torch::Tensor relative = pos.unsqueeze(1) - pos.unsqueeze(2);  // [B, Tq, Tk]: memory − context position
  int64_t n = num_buckets;
  torch::Tensor bucket = torch::zeros_like(relative);
  if (bidirectional) {
    n /= 2;
    bucket = bucket + relative.gt(0).to(torch::kLong) * n;
    relative = relative.abs();
  } else {
    relative = -torch::min(relative, torch::zeros_like(relative));
  }
  const int64_t exact = n / 2;
  torch::Tensor large = exact + (torch::log(relative.to(torch::kFloat) / (double)exact) /
                                 std::log((double)max_distance / (double)exact) * (double)(n - exact))
                                    .to(torch::kLong);
  large = torch::min(large, torch::full_like(large, n - 1));
  bucket = bucket + torch::where(relative.lt(exact), relative, large);
  return F::embedding(bucket, weight).permute({0, 3, 1, 2});
}

TorchPositionsImpl::TorchPositionsImpl(const TorchModelConfig& cfg) {
  table = register_buffer("table", torch::zeros({cfg.max_positions + cfg.pad_id + 1, cfg.d_model}));
}

TorchRotaryImpl::TorchRotaryImpl(const TorchModelConfig& cfg) {
  const int64_t rows = cfg.max_positions + cfg.pad_id + 1, half = cfg.d_model / cfg.heads / 2;
  cos_table = register_buffer("cos_table", torch::zeros({rows, half}));
  sin_table = register_buffer("sin_table", torch::zeros({rows, half}));
}

TorchAlibiImpl::TorchAlibiImpl(const TorchModelConfig& cfg) {
  slopes = register_buffer("slopes", torch::zeros({cfg.heads}));
}

TorchTransformerImpl::TorchTransformerImpl(const TorchModelConfig& c) : cfg(c) {
  embed = register_module(
      "embed", torch::nn::Embedding(torch::nn::EmbeddingOptions(cfg.vocab, cfg.d_model).padding_idx(cfg.pad_id)));
  if (cfg.positions == "rope") rotary = register_module("rotary", TorchRotary(cfg));
  else if (cfg.positions == "alibi") alibi = register_module("alibi", TorchAlibi(cfg));
  else if (cfg.positions == "sinusoidal") positions = register_module("positions", TorchPositions(cfg));
  else if (cfg.positions != "t5") throw std::invalid_argument("TorchTransformer: unknown positions " + cfg.positions);
  enc = register_module("enc", TorchStack(cfg, false));
  dec = register_module("dec", TorchStack(cfg, true));
}

// fairseq make_positions: pos = cumsum(non-pad)·non-pad + pad (pads read row pad)
static torch::Tensor make_positions(const torch::Tensor& nonpad, int64_t pad_id) {
  return torch::cumsum(nonpad, 1) * nonpad + pad_id;
}

// x = √d·E[ids] + PE[pos] (RoPE, ALiBi, T5: nothing added); the encoder zeroes pad positions
torch::Tensor TorchTransformerImpl::embed_tokens(const torch::Tensor& ids, bool zero_pads) {
  torch::Tensor nonpad = ids.ne(cfg.pad_id).to(torch::kLong);
  torch::Tensor x = embed(ids) * std::sqrt((double)cfg.d_model);
  if (positions) x = x + F::embedding(make_positions(nonpad, cfg.pad_id), positions->table);
  if (zero_pads) x = x * nonpad.unsqueeze(-1).to(x.dtype());
  return x;
}

std::pair<torch::Tensor, torch::Tensor> TorchTransformerImpl::angles(const torch::Tensor& ids) {
  if (cfg.positions != "rope") return {};
  torch::Tensor pos = make_positions(ids.ne(cfg.pad_id).to(torch::kLong), cfg.pad_id);
  auto rows = [&](const torch::Tensor& table) {
    torch::Tensor half = F::embedding(pos, table);          // [B, T, d_h/2]
    return torch::cat({half, half}, -1).unsqueeze(1);       // [B, 1, T, d_h]
  };
  return {rows(rotary->cos_table), rows(rotary->sin_table)};
}

torch::Tensor TorchTransformerImpl::score_bias(const torch::Tensor& ids, TorchStack& stack) {
  if (cfg.positions != "alibi" && cfg.positions != "t5") return {};
  const torch::Tensor positions = make_positions(ids.ne(cfg.pad_id).to(torch::kLong), cfg.pad_id);
  if (stack->relative_bias) return stack->relative_bias(positions);
  torch::Tensor pos = positions.to(torch::kFloat);
  torch::Tensor distance = (pos.unsqueeze(2) - pos.unsqueeze(1)).abs().unsqueeze(1);  // [B, 1, T, T]
  return -alibi->slopes.view({1, -1, 1, 1}) * distance;
}

torch::Tensor TorchTransformerImpl::forward(const torch::Tensor& src, const torch::Tensor& tgt_in) {
  const int64_t T = tgt_in.size(1);
  // masks, true = hidden: key padding [B, 1, 1, Tk]; causal [T, T] above the diagonal
  torch::Tensor src_pad = src.eq(cfg.pad_id).unsqueeze(1).unsqueeze(1);
  torch::Tensor tgt_pad = tgt_in.eq(cfg.pad_id).unsqueeze(1).unsqueeze(1);
  torch::Tensor causal = torch::ones({T, T}, torch::kBool).triu(1);
  torch::Tensor tgt_self_mask = tgt_pad.logical_or(causal);

  torch::Tensor x = embed_tokens(src, true);
  const auto [src_cos, src_sin] = angles(src);
  const torch::Tensor src_bias = score_bias(src, enc);
  for (auto& layer : enc->layers)
    x = layer(x, src_pad, torch::Tensor(), torch::Tensor(), src_cos, src_sin, src_bias);
  if (enc->final_norm) x = enc->final_norm(x);
  torch::Tensor memory = x;

  torch::Tensor y = embed_tokens(tgt_in, false);
  const auto [tgt_cos, tgt_sin] = angles(tgt_in);
  const torch::Tensor tgt_bias = score_bias(tgt_in, dec);
  for (auto& layer : dec->layers) y = layer(y, tgt_self_mask, memory, src_pad, tgt_cos, tgt_sin, tgt_bias);
  if (dec->final_norm) y = dec->final_norm(y);
  return F::linear(y, embed->weight);  // logits = features·Eᵀ
}

torch::Tensor TorchTransformerImpl::loss(const torch::Tensor& src, const torch::Tensor& tgt_in,
                                         const torch::Tensor& tgt_out) {
  torch::Tensor logits = forward(src, tgt_in);
  const double V = (double)cfg.vocab;
  return F::cross_entropy(logits.view({-1, cfg.vocab}), tgt_out.view({-1}),
                          F::CrossEntropyFuncOptions().ignore_index(cfg.pad_id).label_smoothing(
                              cfg.label_smoothing * V / (V - 1)));
}

}  // namespace bench
