// Measured per-layer statistics: gradient norms after one backward, and the residual stream between layers.
// The model is small and this runs once per batch, so the statistics are computed on the host in plain loops.
#include "analysis/measure.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <tuple>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/clip.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/schedule.h"
#include "tensor/random.h"

namespace skipgrad {

namespace {

std::vector<double> host_values(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::F64).contiguous().to_vector<double>();
}

double grad_norm_sq(const Tensor& p) {
  Tensor g = p.grad();
  if (!g.defined()) return 0;
  double s = 0;
  for (double v : host_values(g)) s += v * v;
  return s;
}

// mean_token_cosine of x's values on the host, [B, T, d] row-major (stream_stats has them already)
double token_cosine(const std::vector<double>& xv, int64_t B, int64_t T, int64_t d, const std::vector<int64_t>& pad) {
  double total = 0;
  int64_t sentences = 0;
  std::vector<double> u_sum(d);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(u_sum.begin(), u_sum.end(), 0.0);
    int64_t n = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (pad[b * T + t]) continue;
      const double* v = &xv[(b * T + t) * d];
      double norm = 0;
      for (int64_t j = 0; j < d; ++j) norm += v[j] * v[j];
      if (norm == 0) continue;  // no direction
      norm = std::sqrt(norm);
      for (int64_t j = 0; j < d; ++j) u_sum[j] += v[j] / norm;
      ++n;
    }
    if (n < 2) continue;
    double s2 = 0;
    for (double v : u_sum) s2 += v * v;
    total += (s2 - double(n)) / (double(n) * double(n - 1));
    ++sentences;
  }
  return sentences ? total / double(sentences) : std::numeric_limits<double>::quiet_NaN();
}

// Statistics of the stream `x` [B, T, d] after a layer over the tokens where pad[b, t] == 0, and the mean cosine
// with the stream `prev` before it (when defined).
void stream_stats(const Tensor& x, const Tensor& prev, const std::vector<int64_t>& pad, LayerMeasure& m) {
  check(x.dim() == 3, "measure", ": layer output must be [B, T, d], got ", x.shape());
  const int64_t n_tok = x.size(0) * x.size(1), d = x.size(2);
  check((int64_t)pad.size() == n_tok, "measure", ": layer output ", x.shape(), " does not match the batch's ",
        (int64_t)pad.size(), " tokens");
  std::vector<double> xv = host_values(x), pv;
  if (prev.defined()) pv = host_values(prev);
  double sq = 0, mx = 0, cos_sum = 0;
  int64_t kept = 0;
  for (int64_t i = 0; i < n_tok; ++i) {
    if (pad[i]) continue;
    ++kept;
    double dot = 0, nx = 0, np = 0;
    for (int64_t j = 0; j < d; ++j) {
      double a = xv[i * d + j];
      sq += a * a;
      mx = std::max(mx, std::fabs(a));
      if (!pv.empty()) {
        double b = pv[i * d + j];
        dot += a * b, nx += a * a, np += b * b;
      }
    }
    // cos(a, b) = a.b / (|a| |b|); a zero vector counts as cos 0, a NaN one (a diverged model) makes it NaN
    if (!pv.empty()) cos_sum += std::isnan(nx + np) ? NAN : (nx > 0 && np > 0) ? dot / std::sqrt(nx * np) : 0.0;
  }
  kept = std::max<int64_t>(kept, 1);
  m.rms = std::sqrt(sq / double(kept * d));
  m.max_abs = mx;
  m.cos_prev = pv.empty() ? std::numeric_limits<double>::quiet_NaN() : cos_sum / double(kept);
  m.token_cos = token_cosine(xv, x.size(0), x.size(1), d, pad);
}

double max_abs_of(const Tensor& t, const std::vector<int64_t>& pad) {
  const int64_t d = t.size(-1);
  std::vector<double> v = host_values(t);
  double mx = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (!pad[i / d]) mx = std::max(mx, std::fabs(v[i]));
  return mx;
}

// One attention's rows (AttentionLogitRows, [B, H, Tq]) over its non-pad query rows: the largest visible logit
// per head (-1 for a head no such row has), and the mean entropy over heads and those rows that see a key
// (max_abs >= 0; NaN when there is none). One host copy of each.
struct AttentionSummary {
  std::vector<double> head_max;
  double entropy;
};
AttentionSummary summarize_attention(const nn::AttentionLogitRows& r, const std::vector<int64_t>& pad) {
  check(r.max_abs.dim() == 3 && (int64_t)pad.size() == r.max_abs.size(0) * r.max_abs.size(2), "measure",
        ": attention logit rows ", r.max_abs.shape(), " do not match the batch's ", (int64_t)pad.size(), " tokens");
  const int64_t B = r.max_abs.size(0), H = r.max_abs.size(1), T = r.max_abs.size(2);
  const std::vector<double> top = host_values(r.max_abs), entropy = host_values(r.entropy);
  AttentionSummary out{std::vector<double>(H, -1.0), 0.0};
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = (b * H + h) * T + t;
        if (pad[b * T + t]) continue;
        out.head_max[h] = std::max(out.head_max[h], top[i]);
        if (top[i] >= 0) out.entropy += entropy[i], ++n;
      }
  out.entropy = n ? out.entropy / double(n) : std::numeric_limits<double>::quiet_NaN();
  return out;
}

// The layer entry and sublayer that a hook's scope names ("enc.3.self_attn" -> enc.3, "self_attn"), after the
// scope `prefix` that measure_batch itself ran in. Throws for a scope that names no layer's sublayer.
std::pair<LayerMeasure*, std::string> sublayer_of(const std::string& scope, const std::string& prefix,
                                                  std::vector<LayerMeasure>& layers) {
  const std::string name = !prefix.empty() && scope.rfind(prefix + ".", 0) == 0 ? scope.substr(prefix.size() + 1)
                                                                                 : scope;
  const size_t first = name.find('.'), dot = first == std::string::npos ? first : name.find('.', first + 1);
  if (dot != std::string::npos)
    for (LayerMeasure& l : layers)
      if (l.layer == name.substr(0, dot)) return {&l, name.substr(dot + 1)};
  fail("measure", ": '", scope, "' is not a sublayer of a layer (enc.<i>.<sublayer> or dec.<i>.<sublayer>)");
}

// Fills the layers' logit statistics from the attentions' rows ("enc.3.self_attn", "dec.0.cross_attn", ...).
void logit_stats(const std::vector<nn::AttentionLogitRows>& rows, const std::string& prefix,
                 const std::vector<int64_t>& src_pad, const std::vector<int64_t>& tgt_pad,
                 std::vector<LayerMeasure>& layers) {
  for (const nn::AttentionLogitRows& r : rows) {
    auto [m, attn] = sublayer_of(r.attention, prefix, layers);
    check(attn == "self_attn" || attn == "cross_attn", "measure", ": '", r.attention, "' is not an attention");
    AttentionSummary a = summarize_attention(r, m->layer.rfind("enc.", 0) == 0 ? src_pad : tgt_pad);
    const double top = *std::max_element(a.head_max.begin(), a.head_max.end());
    if (attn == "self_attn")
      m->self_logit_max = top, m->self_logit_max_heads = std::move(a.head_max), m->self_attn_entropy = a.entropy;
    else
      m->cross_logit_max = top, m->cross_logit_max_heads = std::move(a.head_max), m->cross_attn_entropy = a.entropy;
  }
}

// Fills the layers' relative updates from the residual adds ("enc.3.ffn", ...): the mean over non-pad tokens of
// ‖branch_t‖ / ‖stream_t‖ (a token whose stream is zero is left out).
void update_stats(const std::vector<nn::ResidualUpdate>& adds, const std::string& prefix,
                  const std::vector<int64_t>& src_pad, const std::vector<int64_t>& tgt_pad,
                  std::vector<LayerMeasure>& layers) {
  for (const nn::ResidualUpdate& r : adds) {
    auto [m, sub] = sublayer_of(r.sublayer, prefix, layers);
    double* out = sub == "self_attn" ? &m->self_attn_update : sub == "cross_attn" ? &m->cross_attn_update
                  : sub == "ffn"     ? &m->ffn_update : nullptr;
    check(out != nullptr, "measure", ": residual add '", r.sublayer, "' is not a self_attn, cross_attn or ffn add");
    const std::vector<int64_t>& pad = m->layer.rfind("enc.", 0) == 0 ? src_pad : tgt_pad;
    check(r.stream.dim() == 3 && r.stream.shape() == r.branch.shape() &&
              (int64_t)pad.size() == r.stream.size(0) * r.stream.size(1), "measure", ": residual add '",
          r.sublayer, "' has stream ", r.stream.shape(), " and branch ", r.branch.shape(), " for ",
          (int64_t)pad.size(), " tokens");
    const int64_t d = r.stream.size(2);
    const std::vector<double> x = host_values(r.stream), o = host_values(r.branch);
    double sum = 0;
    int64_t n = 0;
    for (size_t t = 0; t < pad.size(); ++t) {
      if (pad[t]) continue;
      double xx = 0, oo = 0;
      for (int64_t j = 0; j < d; ++j) xx += x[t * d + j] * x[t * d + j], oo += o[t * d + j] * o[t * d + j];
      if (xx > 0) sum += std::sqrt(oo / xx), ++n;
    }
    *out = n ? sum / double(n) : std::numeric_limits<double>::quiet_NaN();
  }
}

}  // namespace

double mean_token_cosine(const Tensor& x, const std::vector<int64_t>& pad) {
  check(x.dim() == 3 && (int64_t)pad.size() == x.size(0) * x.size(1), "mean_token_cosine",
        ": expected x [B, T, d] and a pad flag per token, got ", x.meta_str(), " and ", (int64_t)pad.size(), " flags");
  return token_cosine(host_values(x), x.size(0), x.size(1), x.size(2), pad);
}

const LayerMeasure* LayerMeasures::find(const std::string& name) const {
  for (const LayerMeasure& l : layers)
    if (l.layer == name) return &l;
  return nullptr;
}

const LayerMeasure& LayerMeasures::layer(const std::string& name) const {
  if (const LayerMeasure* l = find(name)) return *l;
  throw Error("measure: no layer '" + name + "' (layers are enc.<i> and dec.<i>; dec.<i> only in a decoder-only "
              "model)");
}

MeasureBatch MeasureBatch::to(Device d) const {
  auto on = [d](const Tensor& t) { return t.defined() ? t.to(d) : t; };  // (a decoder-only batch has no src)
  return {on(src), on(tgt_in), on(tgt_out)};
}

MeasureBatch task_batch(const nn::TransformerConfig& cfg, const std::string& task, int64_t batch, int64_t len,
                        uint64_t seed) {
  check(task == "random" || task == "copy" || task == "reverse", "task_batch", ": unknown task '", task,
        "' (random, copy or reverse)");
  check(batch > 0 && len > 1, "task_batch", ": need batch > 0 and len > 1, got batch ", batch, " len ", len);
  check(cfg.vocab > 4, "task_batch", ": vocab ", cfg.vocab, " too small (tokens are drawn from [3, vocab))");
  check(len <= cfg.max_positions, "task_batch", ": len ", len, " exceeds max_positions ", cfg.max_positions);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(3, cfg.vocab - 1), length(std::max<int64_t>(1, len / 2), len);
  auto token = [&] {
    int64_t t = tok(rng);
    return t == cfg.pad_id ? (t + 1 < cfg.vocab ? t + 1 : 3) : t;
  };
  std::vector<int64_t> src(batch * len, cfg.pad_id), tin(batch * len, cfg.pad_id), tout(batch * len, cfg.pad_id);
  if (cfg.decoder_only()) {  // one sequence s = x, 2, y; tgt_in = [2, s_0, ..., s_{n-2}], tgt_out = s with x and
                             // the separator padded: the loss is y's alone, as the encoder-decoder's
    check(len >= 3, "task_batch", ": a decoder-only batch needs len >= 3 (x, separator, y), got ", len);
    const int64_t half = (len - 1) / 2;
    std::uniform_int_distribution<int64_t> part(std::max<int64_t>(1, half / 2), half);
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<int64_t> x(part(rng)), seq;
      for (int64_t& v : x) v = token();
      seq = x;
      seq.push_back(2);
      const int64_t ly = task == "random" ? part(rng) : (int64_t)x.size();
      for (int64_t t = 0; t < ly; ++t)
        seq.push_back(task == "random" ? token() : task == "copy" ? x[t] : x[x.size() - 1 - t]);
      tin[b * len] = 2;
      for (size_t t = 0; t < seq.size(); ++t) {
        if (t > x.size()) tout[b * len + t] = seq[t];
        if (t + 1 < seq.size()) tin[b * len + t + 1] = seq[t];
      }
    }
    return {Tensor(), Tensor::from_vector<int64_t>(tin, {batch, len}),
            Tensor::from_vector<int64_t>(tout, {batch, len})};
  }
  for (int64_t b = 0; b < batch; ++b) {
    int64_t* x = &src[b * len];
    int64_t* y = &tout[b * len];
    const int64_t ls = length(rng), lt = task == "random" ? length(rng) : ls;
    for (int64_t t = 0; t < ls; ++t) x[t] = token();
    for (int64_t t = 0; t < lt; ++t) y[t] = task == "random" ? token() : task == "copy" ? x[t] : x[ls - 1 - t];
    // target y_0..y_{lt-1}: tgt_in = [2, y_0, ..., y_{lt-2}], tgt_out = [y_0, ..., y_{lt-1}]
    tin[b * len] = 2;
    for (int64_t t = 1; t < lt; ++t) tin[b * len + t] = y[t - 1];
  }
  return {Tensor::from_vector<int64_t>(src, {batch, len}), Tensor::from_vector<int64_t>(tin, {batch, len}),
          Tensor::from_vector<int64_t>(tout, {batch, len})};
}

MeasureBatch random_batch(const nn::TransformerConfig& cfg, int64_t batch, int64_t len, uint64_t seed) {
  return task_batch(cfg, "random", batch, len, seed);
}

namespace {

// What measure_batch's hooks record during its forward (Transformer::layer_outputs, ...).
struct Recorded {
  std::vector<Tensor> outs, duals, ins;
  std::vector<nn::AttentionLogitRows> logit_rows;
  std::vector<nn::ResidualUpdate> adds;
  std::string scope;  // the scope measure_batch ran in: the hooks' names start with it
  TokenPadding pad;   // the batch's padding, per stack
  std::vector<DytMeasure> dyts;  // read from the tape after the forward
};

// measure_batch after its backward: the statistics of the gradients and of what the hooks recorded.
LayerMeasures measured_layers(nn::Transformer& model, const Tensor& loss, bool graph, const Recorded& rec) {
  const std::vector<Tensor>&outs = rec.outs, &duals = rec.duals, &ins = rec.ins;
  const nn::TransformerConfig& cfg = model.config();
  LayerMeasures r;
  r.loss = loss.item();
  r.samples = 1;
  if (graph) {
    r.graph = Graph::from_tape(current_tape());
    r.paths = analyze_paths(r.graph, r.graph.id_of(loss));
  }
  current_tape().clear();

  NoGradGuard no_grad;
  const int64_t L = cfg.enc_layers + cfg.dec_layers, stacks = cfg.decoder_only() ? 1 : 2;
  check((int64_t)outs.size() == L && (int64_t)ins.size() == stacks, "measure", ": the model recorded ",
        (int64_t)outs.size(), " layer outputs and ", (int64_t)ins.size(), " stack inputs for ", L, " layers and ",
        stacks, " stacks");
  const std::vector<int64_t>&src_pad = rec.pad.src, &tgt_pad = rec.pad.tgt;
  r.dyts = rec.dyts;

  auto params = model.named_parameters();
  const std::vector<std::string> names = model.layer_names();
  for (int64_t i = 0; i < L; ++i) {
    const bool enc = i < cfg.enc_layers;
    const int64_t k = enc ? i : i - cfg.enc_layers;
    LayerMeasure m;
    m.layer = names[i];
    double layer_sq = 0;
    for (auto& [name, p] : params)
      if (in_scope(name, m.layer)) layer_sq += grad_norm_sq(p);
    m.layer_grad_norm = std::sqrt(layer_sq);
    m.fc2_grad_norm = std::sqrt(grad_norm_sq(model.parameter(m.layer + ".ffn.fc2.weight")));
    const std::vector<int64_t>& pad = enc ? src_pad : tgt_pad;
    stream_stats(outs[i], k > 0 ? outs[i - 1] : ins[enc ? 0 : stacks - 1], pad, m);
    if (i < (int64_t)duals.size() && duals[i].defined()) m.dual_max_abs = max_abs_of(duals[i], pad);
    r.layers.push_back(m);
  }
  logit_stats(rec.logit_rows, rec.scope, src_pad, tgt_pad, r.layers);
  update_stats(rec.adds, rec.scope, src_pad, tgt_pad, r.layers);
  return r;
}

}  // namespace

LayerMeasures measure_batch(nn::Transformer& model, const MeasureBatch& b, double label_smoothing, bool graph) {
  const nn::TransformerConfig& cfg = model.config();
  check((b.src.defined() || cfg.decoder_only()) && b.tgt_in.defined() && b.tgt_out.defined(), "measure",
        ": the batch needs src, tgt_in and tgt_out");
  if (b.src.defined() && cfg.decoder_only())
    fail("measure", ": a decoder-only model takes no src, got ", b.src.meta_str());
  check(b.tgt_in.shape() == b.tgt_out.shape(), "measure", ": tgt_in ", b.tgt_in.shape(), " and tgt_out ",
        b.tgt_out.shape(), " differ");
  for (const auto& [ids, what] : {std::pair{&b.src, "src"}, {&b.tgt_in, "tgt_in"}}) {
    if (!ids->defined()) continue;  // a decoder-only model's src
    const std::vector<int64_t> v = ids->to_vector<int64_t>();  // all padding: every statistic would be empty
    check(std::any_of(v.begin(), v.end(), [&](int64_t id) { return id != cfg.pad_id; }), "measure", ": ", what,
          " ", ids->shape(), " is all padding (pad id ", cfg.pad_id, "): nothing to measure");
  }
  const MeasureBatch on_device = b.to(model.device());
  const Tensor &src = on_device.src, &tgt_in = on_device.tgt_in, &tgt_out = on_device.tgt_out;

  model.zero_grad();
  current_tape().clear();
  Recorded rec;
  rec.scope = current_scope();
  rec.pad = token_padding(b.src, b.tgt_in, cfg.pad_id);
  // The hooks record this forward only; a caller's own are put back after it (not cleared).
  const auto before = std::make_tuple(model.layer_outputs, model.dual_outputs, model.stack_inputs,
                                      model.attention_logits, model.residual_updates);
  model.layer_outputs = &rec.outs;
  model.dual_outputs = &rec.duals;
  model.stack_inputs = &rec.ins;
  model.attention_logits = &rec.logit_rows;
  model.residual_updates = &rec.adds;
  auto unhook = [&] {
    std::tie(model.layer_outputs, model.dual_outputs, model.stack_inputs, model.attention_logits,
             model.residual_updates) = before;
  };
  Tensor logits;
  try {
    logits = model.forward(src, tgt_in);
  } catch (...) {
    unhook();
    current_tape().clear();
    throw;
  }
  unhook();
  try {
    rec.dyts = measure_dyts(current_tape(), rec.scope, rec.pad);  // (before the backward frees what the tape keeps)
    nn::LabelSmoothedLoss ls = nn::label_smoothed_nll(logits, tgt_out, cfg.pad_id, label_smoothing);
    ls.loss.backward(Tensor(), /*retain_graph=*/graph);
    LayerMeasures r = measured_layers(model, ls.loss, graph, rec);
    model.zero_grad();
    return r;
  } catch (...) {  // the gradients and the tape are left as they were found: empty
    current_tape().clear();
    model.zero_grad();
    throw;
  }
}


std::vector<double> layer_removal_deltas(nn::Transformer& model, const MeasureBatch& b, double label_smoothing) {
  const nn::TransformerConfig& cfg = model.config();
  const MeasureBatch on_device = b.to(model.device());
  const Tensor &src = on_device.src, &tgt_in = on_device.tgt_in, &tgt_out = on_device.tgt_out;
  struct Restore {  // the model's removed layers and mode, put back however this returns
    nn::Transformer& model;
    const std::vector<std::string> removed;
    const bool training;
    ~Restore() {
      model.remove_layers(removed);
      model.train(training);
    }
  } restore{model, model.removed_layers(), model.is_training()};
  NoGradGuard no_grad;
  model.eval();
  auto loss = [&] {
    return nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, cfg.pad_id, label_smoothing).loss.item();
  };
  const double whole = loss();
  std::vector<double> deltas;
  for (const std::string& layer : model.layer_names()) {
    std::vector<std::string> removed = restore.removed;
    removed.push_back(layer);
    model.remove_layers(removed);
    deltas.push_back(loss() - whole);
  }
  return deltas;
}

namespace {

// sum += m, statistic by statistic (the first sample is moved in, graph and paths included).
void accumulate(LayerMeasures& sum, LayerMeasures&& m) {
  if (sum.samples == 0) {
    sum = std::move(m);
    return;
  }
  sum.samples += m.samples;
  sum.loss += m.loss;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    LayerMeasure& s = sum.layers[i];
    const LayerMeasure& x = m.layers[i];
    s.fc2_grad_norm += x.fc2_grad_norm, s.layer_grad_norm += x.layer_grad_norm, s.cos_prev += x.cos_prev;
    s.token_cos += x.token_cos;
    s.rms += x.rms, s.max_abs += x.max_abs, s.dual_max_abs += x.dual_max_abs;
    s.self_logit_max += x.self_logit_max, s.cross_logit_max += x.cross_logit_max;
    check(s.self_logit_max_heads.size() == x.self_logit_max_heads.size() &&
              s.cross_logit_max_heads.size() == x.cross_logit_max_heads.size(), "measure", ": ", s.layer,
          "'s attentions were measured with ", s.self_logit_max_heads.size(), " heads and then ",
          x.self_logit_max_heads.size(), " (were its layers removed between batches?)");
    for (size_t h = 0; h < s.self_logit_max_heads.size(); ++h) s.self_logit_max_heads[h] += x.self_logit_max_heads[h];
    for (size_t h = 0; h < s.cross_logit_max_heads.size(); ++h)
      s.cross_logit_max_heads[h] += x.cross_logit_max_heads[h];
    s.self_attn_update += x.self_attn_update, s.cross_attn_update += x.cross_attn_update;
    s.self_attn_entropy += x.self_attn_entropy, s.cross_attn_entropy += x.cross_attn_entropy;
    s.ffn_update += x.ffn_update;
    s.removal_delta += x.removal_delta;
  }
  check(sum.dyts.size() == m.dyts.size(), "measure", ": ", sum.dyts.size(), " DyTs ran in one batch and ",
        m.dyts.size(), " in another");
  for (size_t i = 0; i < m.dyts.size(); ++i) {
    DytMeasure& s = sum.dyts[i];
    s.alpha += m.dyts[i].alpha, s.input_rms += m.dyts[i].input_rms, s.saturated += m.dyts[i].saturated;
  }
}

void divide(LayerMeasures& sum) {
  const double n = (double)sum.samples;
  sum.loss /= n;
  for (auto& s : sum.layers) {
    s.fc2_grad_norm /= n, s.layer_grad_norm /= n, s.cos_prev /= n, s.token_cos /= n, s.rms /= n, s.max_abs /= n;
    s.dual_max_abs /= n;  // -1 stays -1 for topologies without a dual stream (and cross_logit_max in the encoder)
    s.self_logit_max /= n, s.cross_logit_max /= n, s.removal_delta /= n;
    s.self_attn_update /= n, s.cross_attn_update /= n, s.ffn_update /= n;
    s.self_attn_entropy /= n, s.cross_attn_entropy /= n;
    for (double& h : s.self_logit_max_heads) h /= n;
    for (double& h : s.cross_logit_max_heads) h /= n;
  }
  for (DytMeasure& d : sum.dyts) d.alpha /= n, d.input_rms /= n, d.saturated /= n;
}

// Training batches come from seeds that the measured batches (seed * 7919 + i, i < n_batches) do not use.
uint64_t train_batch_seed(uint64_t seed, int64_t step) {
  return 0x9E3779B97F4A7C15ull ^ (seed * 1000003ull + (uint64_t)step);
}

}  // namespace

LayerMeasures measure_batches(nn::Transformer& model, const std::vector<MeasureBatch>& batches,
                              double label_smoothing) {
  check(!batches.empty(), "measure_batches", ": no batches to measure");
  LayerMeasures sum;
  for (const MeasureBatch& b : batches) accumulate(sum, measure_batch(model, b, label_smoothing));
  divide(sum);
  return sum;
}

std::string layer_measures_markdown(const LayerMeasures& m) {
  auto num = [](double v, const char* fmt) {  // "–" for NaN: not measured
    if (std::isnan(v)) return std::string("–");
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  const bool removal = std::any_of(m.layers.begin(), m.layers.end(),
                                   [](const LayerMeasure& l) { return !std::isnan(l.removal_delta); });
  auto row = [](const std::vector<std::string>& cells) {  // "| a | b |\n"
    std::string r = "|";
    for (const std::string& c : cells) r.append(" ").append(c).append(" |");
    return r.append("\n");
  };
  std::vector<std::string> head = {"layer", "‖∇W2‖", "‖∇layer‖", "cos(x_{i-1}, x_i)", "cos(tokens)", "RMS(x)",
                                   "max\\|x\\|", "‖o‖/‖x‖ (self / cross / ffn)", "max logit (self / cross)",
                                   "entropy (self / cross)"};
  if (removal) head.push_back("Δloss w/o layer");
  std::string out = row(head) + row(std::vector<std::string>(head.size(), "---"));
  for (const LayerMeasure& l : m.layers) {
    std::vector<std::string> cells = {l.layer, num(l.fc2_grad_norm, "%.3g"), num(l.layer_grad_norm, "%.3g"),
                                      num(l.cos_prev, "%.4f"), num(l.token_cos, "%.4f"), num(l.rms, "%.3g"),
                                      num(l.max_abs, "%.3g"),
                                      num(l.self_attn_update, "%.3g") + " / " + num(l.cross_attn_update, "%.3g") +
                                          " / " + num(l.ffn_update, "%.3g"),
                                      num(l.self_logit_max < 0 ? NAN : l.self_logit_max, "%.3g") + " / " +
                                          num(l.cross_logit_max < 0 ? NAN : l.cross_logit_max, "%.3g"),
                                      num(l.self_attn_entropy, "%.3g") + " / " + num(l.cross_attn_entropy, "%.3g")};
    if (removal) cells.push_back(num(l.removal_delta, "%+.4f"));
    out += row(cells);
  }
  return out;
}

std::vector<LayerMeasures> measure_steps(const nn::TransformerConfig& cfg, const MeasureOptions& opt) {
  check(!opt.seeds.empty(), "measure_steps", ": no seeds");
  check(opt.n_batches > 0, "measure_steps", ": n_batches must be positive, got ", opt.n_batches);
  check(!opt.steps.empty(), "measure_steps", ": no steps to measure at");
  for (size_t i = 0; i < opt.steps.size(); ++i)
    check(opt.steps[i] >= 0 && (i == 0 || opt.steps[i] > opt.steps[i - 1]), "measure_steps",
          ": steps must be ascending and non-negative, got ", opt.steps[i], i ? " after " : "",
          i ? std::to_string(opt.steps[i - 1]) : std::string());
  check(opt.lr > 0 && opt.warmup >= 0 && opt.clip >= 0, "measure_steps",
        ": need lr > 0, warmup >= 0, clip >= 0; got ", opt.lr, ", ", opt.warmup, ", ", opt.clip);
  std::vector<LayerMeasures> sums(opt.steps.size());
  for (uint64_t seed : opt.seeds) {
    manual_seed(seed);
    nn::Transformer model(cfg);
    model.to(opt.device);
    {  // a topology's data-dependent init (Admin's profiling pass), on the first training batch
      const MeasureBatch b = task_batch(cfg, opt.task, opt.batch, opt.len, train_batch_seed(seed, 0)).to(opt.device);
      model.init_from_batch(b.src, b.tgt_in);
    }
    nn::Adam adam(nn::lr_scale_groups(model.named_parameters(), opt.lr_scale_at, "--lr-scale-at"),
                  {.lr = opt.lr, .beta1 = 0.9, .beta2 = 0.98});
    nn::InverseSqrtLR schedule(opt.lr, opt.warmup);
    int64_t trained = 0;
    for (size_t si = 0; si < opt.steps.size(); ++si) {
      for (; trained < opt.steps[si]; ++trained) {  // one Adam step on a fresh task batch
        const MeasureBatch b =
            task_batch(cfg, opt.task, opt.batch, opt.len, train_batch_seed(seed, trained)).to(opt.device);
        adam.zero_grad();
        Tensor logits = model.forward(b.src, b.tgt_in);
        nn::label_smoothed_nll(logits, b.tgt_out, cfg.pad_id, opt.label_smoothing).loss.backward();
        if (opt.clip > 0) nn::clip_grad_norm(adam.params(), opt.clip);
        // update k at lr(k): its warm-up starts from 0 (no warmup_init_lr), where fairseq's lr(k - 1) would make
        // the first update a no-op
        adam.set_lr(schedule.lr(adam.step_count() + 1));
        adam.step();
      }
      adam.zero_grad();
      for (int64_t bi = 0; bi < opt.n_batches; ++bi) {
        MeasureBatch b = task_batch(cfg, opt.task, opt.batch, opt.len, seed * 7919 + (uint64_t)bi);
        LayerMeasures m = measure_batch(model, b, opt.label_smoothing, opt.graph && sums[si].samples == 0);
        if (opt.removal) {
          const std::vector<double> deltas = layer_removal_deltas(model, b, opt.label_smoothing);
          for (size_t i = 0; i < deltas.size(); ++i) m.layers[i].removal_delta = deltas[i];
        }
        accumulate(sums[si], std::move(m));
      }
    }
  }
  for (size_t si = 0; si < sums.size(); ++si) {
    divide(sums[si]);
    sums[si].step = opt.steps[si];
  }
  return sums;
}

LayerMeasures measure_model(const nn::TransformerConfig& cfg, const MeasureOptions& opt) {
  return std::move(measure_steps(cfg, opt).front());
}

}  // namespace skipgrad
