#include "nn/transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/optim.h"

namespace skipgrad::nn {

// Every setting that may change the function, used by this topology or not (a difference that does not matter is
// refused too, with both kinds shown: safer than loading one that does); numbers as the shortest text that reads
// back to the same double, so 1e-5 and 1.0000001e-5 differ.
std::string Transformer::kind() const {
  std::ostringstream os;
  os << "Transformer(" << cfg_.topology << ", " << cfg_.heads << " heads, " << norm_kind_name(cfg_.norm) << " eps "
     << number_str(cfg_.norm_eps) << ", " << activation_name(cfg_.activation) << ", qk norm "
     << head_norm_targets_name(cfg_.qk_norm) << " " << head_norm_kind_name(cfg_.qk_norm_kind) << ", resi_dual_scale "
     << number_str(cfg_.resi_dual_scale)
     << ", mixln_post_layers " << cfg_.mixln_post_layers << ", pad " << cfg_.pad_id;
  // (only when not the default, so files written before positions could be chosen read as sinusoidal)
  if (cfg_.positions != PositionEncoding::Sinusoidal) os << ", positions " << position_encoding_name(cfg_.positions);
  if (cfg_.positions == PositionEncoding::Rope) os << " theta " << number_str(cfg_.rope_theta);
  if (cfg_.rope_dims != 0 && cfg_.rope_dims != cfg_.d_model / cfg_.heads) os << " dims " << cfg_.rope_dims;
  if (cfg_.positions == PositionEncoding::T5)
    os << " buckets " << cfg_.relative_buckets << " max_distance " << cfg_.relative_max_distance;
  if (cfg_.normformer_fairseq_head_scale) os << ", normformer_fairseq_head_scale true";  // (absent: the paper's)
  if (const std::string own = topology_->settings(); !own.empty()) os << ", " << cfg_.topology << " " << own;
  os << ")";
  return os.str();
}

namespace {
// `kind` with the value after ", <key> " replaced by `value`.
std::string with_value(std::string kind, const std::string& key, const std::string& value) {
  const size_t at = kind.find(", " + key + " ");
  if (at == std::string::npos) return kind;
  const size_t begin = at + key.size() + 3, end = kind.find_first_of(",)", begin);
  return kind.replace(begin, end == std::string::npos ? std::string::npos : end - begin, value);
}
}  // namespace

bool Transformer::reads_kind(const std::string& stored_kind) const {
  // A file from before 2026-12-06 may give this topology another's option, which did nothing: read as the default.
  std::string stored = stored_kind;
  for (const TopologyOption& o : topology_options())
    if (cfg_.topology != o.topology) stored = with_value(stored, o.name, o.default_text);
  if (stored == kind()) return true;
  std::string before_heads = Transformer::kind();  // this class's spelling, whatever a subclass's kind() says
  const std::string heads = ", " + std::to_string(cfg_.heads) + " heads";
  const size_t at = before_heads.find(heads);
  if (at == std::string::npos) return false;
  before_heads.erase(at, heads.size());
  return stored == before_heads;
}

Transformer::Transformer(const TransformerConfig& cfg) : cfg_(cfg) {
  topology_ = make_topology(cfg.topology);  // once: a program's factory may count or log its calls
  cfg.validate(*topology_);
  const int64_t V = cfg.vocab, d = cfg.d_model;

  if (cfg.share_embeddings) {
    src_embed = tgt_embed = register_module("embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
  } else {
    // a decoder-only model reads no source: its one table is the target's (and the output's, when tied)
    if (!cfg.decoder_only()) src_embed = register_module("src_embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
    tgt_embed = register_module("tgt_embed", std::make_shared<Embedding>(V, d, cfg.pad_id));
    if (cfg.decoder_only()) src_embed = tgt_embed;
    if (!cfg.tie_output) {
      // fairseq build_output_projection: a separate matrix, N(0, d^-0.5)
      output_projection = register_module("output_projection", std::make_shared<Linear>(d, V, false));
      init::normal_(output_projection->weight, 0.0, std::pow((double)d, -0.5));
    }
  }
  switch (cfg.positions) {
    case PositionEncoding::Sinusoidal:
      positions = register_module("positions", std::make_shared<SinusoidalPositions>(d, cfg.max_positions, cfg.pad_id));
      break;
    case PositionEncoding::Learned: {  // fairseq LearnedPositionalEmbedding: N(0, d^-0.5), the padding row zero
      const int64_t rows =
          position_table_rows(cfg.max_positions, cfg.pad_id, d, int64_t(1) << 32, "Transformer", "learned table");
      learned_positions = register_module("embed_positions", std::make_shared<Embedding>(rows, d, cfg.pad_id));
      break;
    }
    case PositionEncoding::Rope: {  // the rotated dims of each head: all, or the first rope_dims
      const int64_t dims = cfg.rope_dims ? cfg.rope_dims : d / cfg.heads;
      rotary = register_module(
          "rotary", std::make_shared<RotaryEmbedding>(dims, cfg.max_positions, cfg.pad_id, cfg.rope_theta));
      break;
    }
    case PositionEncoding::Alibi: alibi = register_module("alibi", std::make_shared<AlibiSlopes>(cfg.heads)); break;
    case PositionEncoding::T5:  // (one table per stack, registered in each below)
    case PositionEncoding::None: break;
  }

  encoder = std::make_shared<Stack>();  // decoder-only: stays empty, and is not a submodule
  if (!cfg.decoder_only()) {
    register_module("enc", encoder);
    for (int64_t i = 0; i < cfg.enc_layers; i++)
      encoder->layers.push_back(encoder->register_module(std::to_string(i), topology_->make_encoder_layer(cfg, i)));
    for (auto& [n, m] : topology_->make_stack_modules(cfg, Side::Encoder)) encoder->register_module(n, m);
  }

  decoder = register_module("dec", std::make_shared<Stack>());
  for (int64_t i = 0; i < cfg.dec_layers; i++)
    decoder->layers.push_back(decoder->register_module(std::to_string(i), topology_->make_decoder_layer(cfg, i)));
  for (auto& [n, m] : topology_->make_stack_modules(cfg, Side::Decoder)) decoder->register_module(n, m);

  // T5: a table per stack, N(0, d^-1/2) as Hugging Face's T5 (bidirectional in the encoder)
  for (Stack* stack : {encoder.get(), decoder.get()}) {
    if (cfg.positions != PositionEncoding::T5 || stack->layers.empty()) continue;
    stack->relative_bias = stack->register_module(
        "relative_bias", std::make_shared<RelativePositionBias>(cfg.heads, cfg.relative_buckets,
                                                                cfg.relative_max_distance, stack == encoder.get()));
    init::normal_(stack->relative_bias->weight, 0.0, std::pow((double)d, -0.5));
  }
  topology_->init_model(*this);
  apply_init();
  for (const auto& [pattern, alpha0] : cfg.dyt_alpha_at)  // (cfg.validate checked them: norm dyt, alpha0 > 0)
    if (set_dyt_alpha(*this, pattern, alpha0) == 0) {
      std::string names;
      for (auto& [name, m] : named_modules())
        if (dynamic_cast<DynamicTanh*>(m)) names += (names.empty() ? "" : ", ") + name;
      fail("Transformer", ": dyt_alpha_at's pattern '", pattern, "' matches no DyT of this ", cfg.topology,
           " model; its DyTs: ", names);
    }
  name_parameters();
}

void check_name_patterns(TransformerConfig cfg, const PatternValues& lr_scale_at, const std::string& who) {
  if (cfg.dyt_alpha_at.empty() && lr_scale_at.empty()) return;
  cfg.vocab = std::max<int64_t>(cfg.vocab, cfg.pad_id + 1);  // (a placeholder's: the names do not depend on it)
  const Transformer probe(cfg);  // (its constructor refuses dyt_alpha_at's patterns)
  if (!lr_scale_at.empty()) lr_scale_groups(probe.named_parameters(), lr_scale_at, who);
}

// Fairseq: what the modules did at construction (embeddings N(0, d^-0.5), MHA xavier, FFN torch default; the
// deep_norm topology's own β-init). SmallInit, GPT2 and DeepNorm re-initialise on top.
void Transformer::apply_init() {
  switch (cfg_.init) {
    case InitScheme::Fairseq: break;
    case InitScheme::SmallInit: {
      const double sigma = std::sqrt(2.0 / (5.0 * (double)cfg_.d_model));
      src_embed->reset_normal(sigma, 3.0);
      if (tgt_embed != src_embed) tgt_embed->reset_normal(sigma, 3.0);
      if (learned_positions) learned_positions->reset_normal(sigma, 3.0);
      if (output_projection) output_projection->reset_trunc_normal(sigma, 3.0);
      for (auto& l : encoder->layers) small_init(*l, cfg_.enc_layers);
      for (auto& l : decoder->layers) small_init(*l, cfg_.dec_layers);
      break;
    }
    case InitScheme::GPT2: {
      src_embed->reset_normal(0.02);
      if (tgt_embed != src_embed) tgt_embed->reset_normal(0.02);
      if (learned_positions) learned_positions->reset_normal(0.02);  // nanoGPT's wpe
      if (output_projection) init::normal_(output_projection->weight, 0.0, 0.02);
      for (auto& l : encoder->layers) gpt2_init(*l, cfg_.enc_layers);
      for (auto& l : decoder->layers) gpt2_init(*l, cfg_.dec_layers);
      break;
    }
    case InitScheme::DeepNorm: {
      const double beta_enc =
          cfg_.decoder_only() ? 0.0 : deepnorm_coefficients(cfg_.enc_layers, cfg_.dec_layers, Side::Encoder).beta;
      const double beta_dec = deepnorm_coefficients(cfg_.enc_layers, cfg_.dec_layers, Side::Decoder).beta;
      for (auto& l : encoder->layers) deepnorm_init(*l, beta_enc);  // (none in a decoder-only model)
      for (auto& l : decoder->layers) deepnorm_init(*l, beta_dec);
      break;
    }
  }
}

void Transformer::check_ids(const Tensor& ids, const char* what) const {
  check(ids.defined(), "Transformer", ": ", what, " is an undefined tensor");
  if (!(ids.dtype() == DType::I64 && ids.dim() == 2))
    fail("Transformer", ": ", what, " must be int64 [B, T], got ", ids.meta_str());
  check(ids.size(0) > 0 && ids.size(1) > 0, "Transformer", ": ", what, " is empty: ", ids.shape());
}

// 1 where ids is the pad id; named "pad_mask" (in the caller's scope) in graph dumps.
Tensor Transformer::padding_mask(const Tensor& ids) const {
  return eq(ids, Tensor::full({1}, (double)cfg_.pad_id, DType::I64, ids.device())).named("pad_mask");
}

Tensor Transformer::position_ids(const Tensor& ids) const {
  Scope s("positions");
  return make_positions(ids, cfg_.pad_id, cfg_.position_limit(), current_scope());
}

Transformer::PositionInputs Transformer::position_inputs(const Tensor& pos, Stack& stack, const Tensor& key_pos) {
  switch (cfg_.positions) {
    case PositionEncoding::Sinusoidal: return {positions->at(pos), {}, {}, {}};
    case PositionEncoding::Learned: return {learned_positions->forward(pos), {}, {}, {}};
    case PositionEncoding::Rope: return {Tensor(), rotary->forward(pos), {}, {}};
    case PositionEncoding::Alibi: return {Tensor(), {}, alibi->forward(pos), {}};
    case PositionEncoding::T5:  // (under autocast, one bf16 copy of the bias for every layer's attention)
      return {Tensor(), {}, {},
              autocast::for_products(stack.relative_bias->forward(pos, key_pos.defined() ? key_pos : pos))};
    case PositionEncoding::None: return {};
  }
  return {};
}

// x = D(√d · E[ids] + pos), pos = PE(ids) (RoPE: nothing added); the encoder then zeroes padded positions:
// x = x · (1 − pad).
Tensor Transformer::embed(Embedding& table, const Tensor& ids, const Tensor& added, const Tensor& pad_mask,
                          bool zero_pads) {
  Tensor x = mul(table.forward(ids), std::sqrt((double)cfg_.d_model)).named("embed_scale");
  if (added.defined()) x = add(x, Tensor(added).named("positions")).named("add_positions");
  x = dropout(x, cfg_.dropout, is_training());
  if (zero_pads) {
    Tensor keep = rsub(pad_mask.to(x.dtype()), 1.0).unsqueeze(-1).named("keep_mask");
    x = mul(x, keep).named("zero_pads");
  }
  return x;
}

namespace {
// Points a layer (and its attentions) at the Transformer's attention_logits and residual_updates hooks for one
// forward, where they are set, and puts back what the layer had (null, or a hook set on it directly) after it.
class LayerHooks {
 public:
  LayerHooks(Layer& layer, std::vector<AttentionLogitRows>* rows, std::vector<ResidualUpdate>* updates) {
    if (rows)
      for (MultiHeadAttention* attn : {layer.self_attn.get(), layer.cross_attn.get()})
        if (attn) logit_rows_.emplace_back(&attn->logit_rows, std::exchange(attn->logit_rows, rows));
    if (updates) updates_ = {&layer.residual_updates, std::exchange(layer.residual_updates, updates)};
  }
  ~LayerHooks() {
    for (auto& [slot, before] : logit_rows_) *slot = before;
    if (updates_.first) *updates_.first = updates_.second;
  }

 private:
  std::vector<std::pair<std::vector<AttentionLogitRows>**, std::vector<AttentionLogitRows>*>> logit_rows_;
  std::pair<std::vector<ResidualUpdate>**, std::vector<ResidualUpdate>*> updates_{nullptr, nullptr};
};

bool removed(const std::vector<std::string>& names, const Stack& stack, const Layer& layer) {
  return !names.empty() && std::find(names.begin(), names.end(), stack.name() + "." + layer.name()) != names.end();
}

// The decoder's among removed layer names, sorted: what incremental decoding depends on.
std::vector<std::string> removed_decoder_layers(const std::vector<std::string>& names) {
  std::vector<std::string> dec;
  for (const std::string& n : names)
    if (n.rfind("dec.", 0) == 0) dec.push_back(n);
  std::sort(dec.begin(), dec.end());
  return dec;
}
}  // namespace

Stream Transformer::run_stack(Stack& stack, Stream s, LayerInputs ctx, std::vector<LayerCache>* caches) {
  if (stack_inputs) stack_inputs->push_back(s.x);
  for (size_t i = 0; i < stack.layers.size(); i++) {
    auto& layer = stack.layers[i];
    if (caches) ctx.cache = &(*caches)[i];
    if (!removed(removed_, stack, *layer)) {
      LayerHooks hooks(*layer, attention_logits, residual_updates);
      s = layer->forward(s, ctx);
    }
    if (layer_outputs) layer_outputs->push_back(s.x);
    if (dual_outputs) dual_outputs->push_back(s.dual);
  }
  return s;
}

std::vector<std::string> Transformer::layer_names() const {
  std::vector<std::string> names;
  for (const Stack* stack : {encoder.get(), decoder.get()})
    for (const auto& layer : stack->layers) names.push_back(stack->name() + "." + layer->name());
  return names;
}

std::string Transformer::init_from_batch(const Tensor& src_ids, const Tensor& tgt_in_ids) {
  if (cfg_.decoder_only() && src_ids.defined())
    fail("Transformer::init_from_batch", ": a decoder-only model (enc_layers 0) takes no src_ids, got ",
         src_ids.meta_str(), "; pass Tensor() and the ids");
  const std::vector<std::string> removed = removed_;  // an analysis setting: the init profiles the whole model
  remove_layers({});
  std::string line;
  try {
    line = topology_->init_from_batch(*this, src_ids, tgt_in_ids);
  } catch (...) {
    remove_layers(removed);
    throw;
  }
  remove_layers(removed);
  return line;
}

void Transformer::remove_layers(const std::vector<std::string>& names) {
  const std::vector<std::string> layers = layer_names();
  std::vector<std::string> kept;
  for (const std::string& n : names) {
    check(std::find(layers.begin(), layers.end(), n) != layers.end(), "Transformer::remove_layers", ": '", n,
          "' is not a layer of this model (",
          cfg_.decoder_only() ? std::string("decoder-only") : "enc.0 .. enc." + std::to_string(cfg_.enc_layers - 1),
          ", dec.0 .. dec.", cfg_.dec_layers - 1, ")");
    if (std::find(kept.begin(), kept.end(), n) == kept.end()) kept.push_back(n);
  }
  removed_ = std::move(kept);
}

Tensor Transformer::encode(const Tensor& src_ids) {
  check(!cfg_.decoder_only(), "Transformer::encode", ": a decoder-only model (enc_layers 0) has no encoder");
  check_ids(src_ids, "src_ids");
  return encode_masked(src_ids, padding_mask(src_ids));
}

Tensor Transformer::encode_masked(const Tensor& src_ids, const Tensor& pad) {
  Scope scope(encoder->name());
  const PositionInputs at = position_inputs(position_ids(src_ids), *encoder);
  Tensor x = embed(*src_embed, src_ids, at.added, pad, true);
  LayerInputs ctx;
  ctx.self_pad_mask = pad;
  ctx.rotary = at.rotary;
  ctx.alibi = at.alibi;
  ctx.position_bias = at.bias;
  Stream s = run_stack(*encoder, topology_->begin_stack(x, Side::Encoder), ctx);
  return topology_->end_stack(s, Side::Encoder);
}

void Transformer::check_memory(const char* who, const Tensor& enc_out, const Tensor& src_pad_mask,
                               int64_t batch) const {
  if (cfg_.decoder_only()) {  // nothing to attend to: both must be left undefined
    if (enc_out.defined() || src_pad_mask.defined())
      fail(who, ": a decoder-only model (enc_layers 0) takes no encoder output or source mask; got ",
           enc_out.defined() ? enc_out.meta_str() : "none", " and ",
           src_pad_mask.defined() ? src_pad_mask.meta_str() : "none");
    return;
  }
  const int64_t d = cfg_.d_model;
  const DType w = tgt_embed->weight.dtype();  // the model's; bfloat16 too inside an autocast scope
  const bool dtype_ok = enc_out.defined() && (enc_out.dtype() == w ||
                                              (autocast_bf16_enabled() && enc_out.dtype() == DType::BF16));
  if (!(enc_out.defined() && enc_out.dim() == 3 && enc_out.size(2) == d && (batch < 0 || enc_out.size(0) == batch) &&
        dtype_ok))
    fail(who, ": encoder output must be [", batch < 0 ? std::string("B") : std::to_string(batch), ",S,", d, "] ",
         dtype_name(w), ", got ", enc_out.defined() ? enc_out.meta_str() : "an undefined tensor");
  if (src_pad_mask.defined() && src_pad_mask.shape() != Shape{enc_out.size(0), enc_out.size(1)})
    fail(who, ": source padding mask must be ", Shape{enc_out.size(0), enc_out.size(1)}, ", got ",
         src_pad_mask.shape());
}

Tensor Transformer::output_logits(const Tensor& features) {
  if (output_projection) return output_projection->forward(features);
  Scope scope("output_projection");
  return linear(features, tgt_embed->weight);  // logits = features · Eᵀ (tied)
}

Tensor Transformer::decode(const Tensor& enc_out, const Tensor& src_pad_mask, const Tensor& tgt_prefix) {
  check_ids(tgt_prefix, "tgt_prefix");
  check_memory("Transformer::decode", enc_out, src_pad_mask, tgt_prefix.size(0));
  Tensor features;
  {
    Scope scope(decoder->name());
    Tensor tgt_pad = padding_mask(tgt_prefix);
    const PositionInputs at = position_inputs(position_ids(tgt_prefix), *decoder);
    Tensor y = embed(*tgt_embed, tgt_prefix, at.added, tgt_pad, false);
    LayerInputs ctx;
    ctx.self_pad_mask = tgt_pad;  // fairseq passes prev_output_tokens.eq(pad) as the self-attention padding mask
    ctx.causal = true;
    ctx.rotary = at.rotary;
    ctx.alibi = at.alibi;
    ctx.position_bias = at.bias;
    if (enc_out.defined()) ctx.memory = autocast::for_products(enc_out);  // under autocast, one bf16 copy for
                                                                          // every layer's K and V
    ctx.memory_pad_mask = src_pad_mask;
    Stream s = run_stack(*decoder, topology_->begin_stack(y, Side::Decoder), ctx);
    features = topology_->end_stack(s, Side::Decoder);
  }
  return output_logits(features);
}

Tensor Transformer::forward(const Tensor& src_ids, const Tensor& tgt_in_ids) {
  if (cfg_.decoder_only()) {  // the language model: src_ids must be left undefined
    if (src_ids.defined())
      fail("Transformer::forward", ": a decoder-only model (enc_layers 0) takes no src_ids, got ", src_ids.meta_str(),
           "; call forward(ids)");
    return decode(Tensor(), Tensor(), tgt_in_ids);
  }
  check_ids(src_ids, "src_ids");
  check_ids(tgt_in_ids, "tgt_in_ids");
  check(src_ids.size(0) == tgt_in_ids.size(0), "Transformer", ": src_ids ", src_ids.shape(), " and tgt_in_ids ",
        tgt_in_ids.shape(), " differ in batch size");
  const Tensor src_pad = padding_mask(src_ids);  // one mask for the encoder and cross-attention
  return decode(encode_masked(src_ids, src_pad), src_pad, tgt_in_ids);
}

Tensor Transformer::forward(const Tensor& ids) {
  check(cfg_.decoder_only(), "Transformer::forward", ": forward(ids) is the decoder-only language model's; this "
        "model has ", cfg_.enc_layers, " encoder layers: call forward(src_ids, tgt_in_ids)");
  check_ids(ids, "ids");
  return decode(Tensor(), Tensor(), ids);
}

// ---------------------------------------------------------------- incremental decoding
//
// Only self-attention mixes target positions; every other piece of a decoder layer (norms, FFN, residual and dual
// adds, the stack's ends, the output projection) acts on each position alone. So a step runs the layers' own
// apply() on the stream of the T new positions (one, or a prefill's block; ResiDual's x_d included) with
// LayerInputs::cache set: self-attention appends their K/V and attends over all cached ones (causal among the
// new), cross-attention reads the memory's K/V computed once in start_decoding. The result equals the last
// position of decode() on the whole prefix.

Tensor select_rows(const Tensor& x, const std::vector<int64_t>& index) {
  if (!x.defined()) return x;
  if (!(x.dim() >= 1 && x.numel() > 0))
    fail("select_rows", ": expected a non-empty tensor, got ", x.meta_str());
  const int64_t R = x.size(0);
  for (int64_t i : index) check(i >= 0 && i < R, "select_rows", ": row ", i, " outside [0, ", R, ")");
  NoGradGuard no_grad;
  return index_select(x, 0, Tensor::from_vector(index, {(int64_t)index.size()}, x.device()));
}

void DecoderState::reorder(const std::vector<int64_t>& index) {
  const int64_t R = rows();
  std::vector<int64_t> identity(R);
  std::iota(identity.begin(), identity.end(), 0);
  if (index == identity) return;
  std::vector<int64_t> mem;
  std::vector<std::vector<int64_t>> f;
  for (int64_t i : index) {
    check(i >= 0 && i < R, "DecoderState::reorder", ": row ", i, " outside [0, ", R, ")");
    mem.push_back(memory_rows[i]);
    f.push_back(fed[i]);
  }
  const bool memory_moves = mem != memory_rows;  // beams of one sentence share its memory: no gather needed
  for (LayerCache& c : layers) {
    auto reordered = [&index](const KVCache& kv) {  // (positions: ALiBi's keys', else undefined)
      return KVCache{select_rows(kv.k, index), select_rows(kv.v, index), select_rows(kv.positions, index)};
    };
    c.self_attn = reordered(c.self_attn);
    if (memory_moves) c.cross_attn = reordered(c.cross_attn);
  }
  if (memory_moves) memory_pad_mask = select_rows(memory_pad_mask, index);
  fed = std::move(f);
  memory_rows = std::move(mem);
}

DecoderState Transformer::start_decoding(const Tensor& enc_out, const Tensor& src_pad_mask) {
  check(!cfg_.decoder_only(), "Transformer::start_decoding", ": a decoder-only model has no encoder output; call "
        "start_decoding(rows)");
  check_memory("Transformer::start_decoding", enc_out, src_pad_mask, -1);
  NoGradGuard no_grad;
  const int64_t R = enc_out.size(0);
  DecoderState st;
  st.fed.resize(R);
  st.memory_rows.resize(R);
  std::iota(st.memory_rows.begin(), st.memory_rows.end(), 0);
  st.removed_layers = removed_decoder_layers(removed_);
  if (src_pad_mask.defined()) st.memory_pad_mask = src_pad_mask.to(enc_out.dtype());
  Scope scope(decoder->name());
  for (auto& layer : decoder->layers) {
    Scope s(layer->name());
    st.layers.push_back({KVCache(), layer->cross_attn->project_kv(enc_out)});
  }
  return st;
}

DecoderState Transformer::start_decoding(int64_t rows) {
  check(cfg_.decoder_only(), "Transformer::start_decoding", ": start_decoding(rows) is for a decoder-only model; "
        "this one has an encoder: start_decoding(encode(src), padding_mask(src))");
  check(rows > 0, "Transformer::start_decoding", ": rows must be positive, got ", rows);
  DecoderState st;
  st.fed.resize(rows);
  st.memory_rows.resize(rows);
  std::iota(st.memory_rows.begin(), st.memory_rows.end(), 0);
  st.removed_layers = removed_decoder_layers(removed_);
  st.layers.resize(cfg_.dec_layers);  // self-attention caches only
  return st;
}

Tensor Transformer::decode_step(DecoderState& st, const Tensor& tokens) {
  const char* who = "Transformer::decode_step";
  check(!is_training(), who, ": the model is in training mode; call eval() first (dropout would differ per step)");
  check((int64_t)st.layers.size() == cfg_.dec_layers && (int64_t)st.memory_rows.size() == st.rows(), who,
        ": the state does not come from start_decoding of this model");
  if (st.removed_layers != removed_decoder_layers(removed_)) {
    auto list = [](const std::vector<std::string>& names) {
      std::string s;
      for (const std::string& n : names) s += (s.empty() ? "" : ",") + n;
      return s.empty() ? std::string("none") : s;
    };
    fail(who, ": the removed decoder layers changed since start_decoding (", list(st.removed_layers), " then, ",
         list(removed_decoder_layers(removed_)), " now); start decoding again");
  }
  if (!(tokens.defined() && tokens.dtype() == DType::I64 && tokens.dim() >= 1 && tokens.dim() <= 2 &&
        tokens.size(0) == st.rows() && tokens.numel() > 0))
    fail(who, ": tokens must be int64 [", st.rows(), "] (one per row) or [", st.rows(), ", T] (T positions per row "
         "at once), got ", tokens.defined() ? tokens.meta_str() : "an undefined tensor");
  NoGradGuard no_grad;
  const int64_t R = st.rows(), T = tokens.dim() == 2 ? tokens.size(1) : 1, pad = cfg_.pad_id;
  const int64_t before = st.steps(), t = before + T;  // positions fed before this call, and after it
  const Device device = tgt_embed->weight.device();

  // fairseq make_positions over the whole prefix: a real token sits at pad + (real tokens up to it), a pad at pad.
  // Pads fed earlier are masked as self-attention keys, as decode() masks them. key_pos: every key's position, for
  // T5's bias over all of them.
  std::vector<int64_t> tok = tokens.to_vector<int64_t>(), pos(R * T), key_pad(R * t), key_pos(R * t);
  for (int64_t v : tok)
    check(v >= 0 && v < cfg_.vocab, who, ": token ", v, " outside the vocabulary [0, ", cfg_.vocab, ")");
  bool any_pad = false;
  for (int64_t r = 0; r < R; r++) {
    int64_t real = 0;
    for (int64_t j = 0; j < t; j++) {
      const int64_t id = j < before ? st.fed[r][j] : tok[r * T + j - before];  // the prefix so far, then the new
      key_pad[r * t + j] = id == pad;
      real += id != pad;
      any_pad = any_pad || id == pad;
      key_pos[r * t + j] = id != pad ? pad + real : pad;
      if (j >= before) pos[r * T + j - before] = key_pos[r * t + j];
    }
    check(real <= cfg_.position_limit(), who, ": a prefix of ", real, " tokens exceeds max_positions ",
          cfg_.max_positions);
  }
  for (int64_t r = 0; r < R; r++)  // the state changes once every check has passed
    st.fed[r].insert(st.fed[r].end(), tok.begin() + r * T, tok.begin() + (r + 1) * T);

  Tensor features;
  {
    Scope scope(decoder->name());
    Tensor ids = Tensor::from_vector(tok, {R, T}, device);
    const bool t5 = cfg_.positions == PositionEncoding::T5;
    const Tensor keys = t5 ? Tensor::from_vector(key_pos, {R, t}, device) : Tensor();
    const PositionInputs at = position_inputs(Tensor::from_vector(pos, {R, T}, device), *decoder, keys);
    Tensor y = embed(*tgt_embed, ids, at.added, Tensor(), false);  // [R, T, d]
    LayerInputs ctx;
    ctx.rotary = at.rotary;
    ctx.alibi = at.alibi;
    ctx.position_bias = at.bias;
    if (any_pad) ctx.self_pad_mask = Tensor::from_vector(key_pad, {R, t}, device);
    ctx.causal = true;  // (among the T new positions; each sees every cached one)
    ctx.memory_pad_mask = st.memory_pad_mask;
    Stream s = run_stack(*decoder, topology_->begin_stack(y, Side::Decoder), ctx, &st.layers);
    features = topology_->end_stack(s, Side::Decoder);
  }
  if (T > 1) features = features.slice(1, T - 1, T);  // only the last position's logits are returned
  return output_logits(features).reshape({R, cfg_.vocab});
}

}  // namespace skipgrad::nn
