// The reference encoder-decoder Transformer written by hand in libtorch (torch::nn modules), with fairseq
// semantics (/work/shared/TOPOLOGIES.md §0-§2), Post-LN or Pre-LN: what a libtorch user would write. Parameter
// and buffer names are skipgrad's ("embed.weight", "enc.0.self_attn.q_proj.weight", "dec.final_norm.bias",
// "positions.table"), so weights copy over by name.
//
//   embedding   x = √d·E[tok] + PE[pos], pos = fairseq make_positions; the encoder zeroes pad positions
//   RoPE        (positions "rope") nothing added; every self-attention rotates q and k: q·cos + rotate_half(q)·sin,
//               cos and sin rows pos of skipgrad's tables ("rotary.cos_table", "rotary.sin_table"), as Hugging Face's
//               LLaMA
//   ALiBi       (positions "alibi") nothing added; every self-attention adds the bias −m_h·|p_i − p_j| [B, H, T, T]
//               to its scores, made once per stack from skipgrad's slopes ("alibi.slopes"), as Hugging Face's BLOOM
//               adds its alibi tensor
//   T5          (positions "t5") nothing added; every self-attention adds weight[bucket(p_j − p_i)] [B, H, T, T] to its
//               scores, one table per stack ("enc.relative_bias.weight"), the bucket Hugging Face's T5's
//               _relative_position_bucket computed in torch ops each forward, made once per stack
//   attention   softmax(Q·Kᵀ/√d_h, masked −inf where key is pad or (decoder self) in the future)·V, then W_o
//   FFN         fc2(ReLU(fc1(x)))
//   Post-LN     x = LN(x + f(x)) per sublayer, no final norm;   Pre-LN  x = x + f(LN(x)), final LN on each stack
//   norm "dyt"  every LN above is DyT instead, tanh(α·x)·γ + β (Zhu et al. 2025, as the authors' PyTorch module)
//   output      logits = features·Eᵀ (shared table); loss = cross_entropy with ignore_index = pad and PyTorch
//               label smoothing eps·V/(V−1), which equals fairseq's label-smoothed loss with eps (nn/loss.h)
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

namespace bench {

struct TorchModelConfig {
  int64_t vocab = 1000, d_model = 256, heads = 4, d_ff = 1024, enc_layers = 6, dec_layers = 6, pad_id = 0;
  int64_t max_positions = 1024;
  bool pre_ln = true;
  std::string positions = "sinusoidal";  // sinusoidal | rope | alibi | t5 (skipgrad's names)
  int64_t relative_buckets = 32, relative_max_distance = 128;  // T5's
  double norm_eps = 1e-5;
  std::string norm = "layer_norm";  // layer_norm | dyt (skipgrad's names; TorchNorm)
  double label_smoothing = 0.1;  // fairseq's eps
};

// Every norm of the model: LayerNorm (F::layer_norm, as torch::nn::LayerNorm) or DyT as its authors' module,
// tanh(alpha·x)·weight + bias in three ops. Parameters "weight", "bias" (and DyT's "alpha" [1]), as skipgrad's.
struct TorchNormImpl : torch::nn::Module {
  explicit TorchNormImpl(const TorchModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& x);
  bool dyt;
  double eps;
  torch::Tensor alpha, weight, bias;
};
TORCH_MODULE(TorchNorm);

struct TorchMHAImpl : torch::nn::Module {
  TorchMHAImpl(int64_t d_model, int64_t heads);
  // query [B, Tq, d], key_value [B, Tk, d], mask bool broadcastable to [B, H, Tq, Tk], true = hidden; cos and sin
  // [B, 1, T, d_h] (self-attention with RoPE) or undefined; bias [B, H, Tq, Tk] added to the scores (ALiBi, T5)
  // or undefined.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key_value, const torch::Tensor& mask,
                        const torch::Tensor& cos = {}, const torch::Tensor& sin = {}, const torch::Tensor& bias = {});
  int64_t heads, d_head;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(TorchMHA);

struct TorchFFNImpl : torch::nn::Module {
  TorchFFNImpl(int64_t d_model, int64_t d_ff);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(TorchFFN);

struct TorchLayerImpl : torch::nn::Module {
  TorchLayerImpl(const TorchModelConfig& cfg, bool decoder);
  // cos, sin and bias: the self-attention's (TorchMHA::forward)
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& self_mask, const torch::Tensor& memory,
                        const torch::Tensor& memory_mask, const torch::Tensor& cos = {}, const torch::Tensor& sin = {},
                        const torch::Tensor& bias = {});
  bool decoder, pre_ln;
  TorchMHA self_attn{nullptr}, cross_attn{nullptr};
  TorchFFN ffn{nullptr};
  TorchNorm self_attn_norm{nullptr}, cross_attn_norm{nullptr}, ffn_norm{nullptr};
};
TORCH_MODULE(TorchLayer);

// T5's table of one stack: weight [buckets, H]; "buckets" holds skipgrad's lookup table (copied with the weights,
// not used: the buckets are computed as Hugging Face's T5 computes them).
struct TorchRelativeBiasImpl : torch::nn::Module {
  TorchRelativeBiasImpl(const TorchModelConfig& cfg, bool bidirectional);
  torch::Tensor forward(const torch::Tensor& positions);  // [B, T] -> [B, H, T, T]
  bool bidirectional;
  int64_t num_buckets, max_distance;
  torch::Tensor weight, buckets;
};
TORCH_MODULE(TorchRelativeBias);

// A stack: layers named "0", "1", ... and, for Pre-LN, "final_norm"; T5's "relative_bias".
struct TorchStackImpl : torch::nn::Module {
  TorchStackImpl(const TorchModelConfig& cfg, bool decoder);
  std::vector<TorchLayer> layers;
  TorchNorm final_norm{nullptr};
  TorchRelativeBias relative_bias{nullptr};
};
TORCH_MODULE(TorchStack);

struct TorchPositionsImpl : torch::nn::Module {
  explicit TorchPositionsImpl(const TorchModelConfig& cfg);
  torch::Tensor table;  // [max_positions + pad + 1, d]; filled by copying skipgrad's buffer
};
TORCH_MODULE(TorchPositions);

struct TorchRotaryImpl : torch::nn::Module {
  explicit TorchRotaryImpl(const TorchModelConfig& cfg);
  torch::Tensor cos_table, sin_table;  // [max_positions + pad + 1, d_h/2]; filled from skipgrad's buffers
};
TORCH_MODULE(TorchRotary);

struct TorchAlibiImpl : torch::nn::Module {
  explicit TorchAlibiImpl(const TorchModelConfig& cfg);
  torch::Tensor slopes;  // [H]; filled from skipgrad's buffer
};
TORCH_MODULE(TorchAlibi);

struct TorchTransformerImpl : torch::nn::Module {
  explicit TorchTransformerImpl(const TorchModelConfig& cfg);
  torch::Tensor forward(const torch::Tensor& src, const torch::Tensor& tgt_in);  // logits [B, T, V]
  torch::Tensor loss(const torch::Tensor& src, const torch::Tensor& tgt_in, const torch::Tensor& tgt_out);

  TorchModelConfig cfg;
  torch::nn::Embedding embed{nullptr};
  TorchPositions positions{nullptr};  // sinusoidal
  TorchRotary rotary{nullptr};        // RoPE
  TorchAlibi alibi{nullptr};          // ALiBi
  TorchStack enc{nullptr}, dec{nullptr};

 private:
  torch::Tensor embed_tokens(const torch::Tensor& ids, bool zero_pads);
  // cos and sin [B, 1, T, d_h] of ids' positions (RoPE), each half repeated as rotate_half pairs them
  std::pair<torch::Tensor, torch::Tensor> angles(const torch::Tensor& ids);
  // The self-attention's bias of ids' positions [B, H, T, T] in `stack`: ALiBi's −m_h·|p_i − p_j| or T5's; else
  // undefined
  torch::Tensor score_bias(const torch::Tensor& ids, TorchStack& stack);
};
TORCH_MODULE(TorchTransformer);

}  // namespace bench
