#include "nn/layers.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "nn/name_patterns.h"
#include "tensor/random.h"

namespace skipgrad::nn {

namespace {
// A module's input must be [..., features]: an Error naming the module's scope (or `module`) and the shapes.
void check_features(const Tensor& x, int64_t features, const char* module) {
  if (!(x.defined() && x.dim() >= 1 && x.size(-1) == features))
    fail(current_scope_or(module), ": expected [..., ", features, "], got ",
         x.defined() ? shape_str(x.shape()) : "an undefined tensor");
}
}  // namespace

// ---------------------------------------------------------------- initialisers

namespace init {

void uniform_(Tensor& t, double low, double high) {
  t.copy_(Tensor::rand(t.shape(), low, high, t.dtype(), t.device()));
}

void normal_(Tensor& t, double mean, double std) {
  t.copy_(Tensor::randn(t.shape(), mean, std, t.dtype(), t.device()));
}

void trunc_normal_(Tensor& t, double std, double cutoff) {
  // Draw on the host, redraw the few values outside ±cutoff·std (2.7e-3 of them for cutoff 3).
  check(cutoff > 0, "trunc_normal_", ": cutoff must be > 0, got ", cutoff);
  // (a negative or NaN std would redraw forever: no draw is ever inside the cutoff)
  check(std::isfinite(std) && std >= 0, "trunc_normal_", ": std must be finite and >= 0, got ", std);
  Generator& gen = default_generator();
  std::vector<double> v(t.numel());
  for (double& x : v) {
    do x = std * random_normal01(gen.seed(), gen.advance(1));
    while (std::abs(x) > cutoff * std);
  }
  t.copy_(Tensor::from_vector<double>(v, t.shape()).to(t.dtype()).to(t.device()));
}

static void fans(const Tensor& t, const char* who, double& fan_in, double& fan_out) {
  check(t.dim() == 2, who, ": expected a 2-D weight [out, in], got ", t.shape());
  fan_out = (double)t.size(0);
  fan_in = (double)t.size(1);
}

void xavier_uniform_(Tensor& t, double gain) {
  double fi, fo;
  fans(t, "xavier_uniform_", fi, fo);
  const double bound = gain * std::sqrt(6.0 / (fi + fo));
  uniform_(t, -bound, bound);
}

void xavier_normal_(Tensor& t, double gain) {
  double fi, fo;
  fans(t, "xavier_normal_", fi, fo);
  normal_(t, 0.0, gain * std::sqrt(2.0 / (fi + fo)));
}

void constant_(Tensor& t, double value) { t.copy_(Tensor::full({1}, value, t.dtype(), t.device())); }

void scale_(Tensor& t, double s) {
  NoGradGuard no_grad;
  t.copy_(mul(t, s));
}

}  // namespace init

// ---------------------------------------------------------------- Linear

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  check(in > 0 && out > 0, "Linear", ": features must be positive, got in ", in, ", out ", out);
  weight = register_parameter("weight", Tensor::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", Tensor::empty({out}));
  reset_torch_default();
}

// kaiming_uniform(a=√5) on [out, in] gives bound = sqrt(6 / ((1 + 5)·in)) = 1/√in; bias U(±1/√in).
void Linear::reset_torch_default() {
  const double bound = 1.0 / std::sqrt((double)in_features);
  init::uniform_(weight, -bound, bound);
  if (bias.defined()) init::uniform_(bias, -bound, bound);
}
void Linear::reset_xavier_uniform(double gain) { init::xavier_uniform_(weight, gain); }
void Linear::reset_xavier_normal(double gain) { init::xavier_normal_(weight, gain); }
void Linear::reset_trunc_normal(double std, double cutoff) { init::trunc_normal_(weight, std, cutoff); }
void Linear::zero_bias() {
  if (bias.defined()) init::constant_(bias, 0.0);
}
void Linear::rescale(double s, bool with_bias) {
  init::scale_(weight, s);
  if (with_bias && bias.defined()) init::scale_(bias, s);
}

Tensor Linear::forward(const Tensor& x) {
  Scope s(name());
  check_features(x, in_features, "Linear");
  return linear(x, weight, bias);
}

// ---------------------------------------------------------------- Embedding

Embedding::Embedding(int64_t v, int64_t d, int64_t pad) : vocab(v), dim(d), padding_idx(pad) {
  check(v > 0 && d > 0, "Embedding", ": vocab and dim must be positive, got ", v, " and ", d);
  check(pad >= -1 && pad < v, "Embedding", ": padding_idx ", pad, " outside [0, ", v, ") (or -1 for none)");
  weight = register_parameter("weight", Tensor::empty({v, d}));
  reset_normal(std::pow((double)d, -0.5));
}

void Embedding::reset_normal(double std, double cutoff) {
  if (cutoff > 0) init::trunc_normal_(weight, std, cutoff);
  else init::normal_(weight, 0.0, std);
  if (padding_idx >= 0) {
    Tensor row = weight.detach().select(0, padding_idx);
    init::constant_(row, 0.0);
  }
}

Tensor Embedding::forward(const Tensor& ids) {
  Scope s(name());
  return embedding(weight, ids, padding_idx);
}

// ---------------------------------------------------------------- SinusoidalPositions

SinusoidalPositions::SinusoidalPositions(int64_t d, int64_t max_pos, int64_t pad)
    : dim(d), max_positions(max_pos), padding_idx(pad) {
  check(d > 0 && max_pos > 0 && pad >= 0, "SinusoidalPositions",
        ": need dim > 0, max_positions > 0, padding_idx >= 0; got ", d, ", ", max_pos, ", ", pad);
  const int64_t rows = position_table_rows(max_pos, pad, d, int64_t(1) << 32, "SinusoidalPositions", "table");
  const int64_t half = d / 2;
  const double step = std::log(10000.0) / (double)std::max<int64_t>(half - 1, 1);
  std::vector<float> v(rows * d, 0.0f);
  for (int64_t p = 0; p < rows; p++) {
    if (p == pad) continue;  // the padding row stays zero
    for (int64_t i = 0; i < half; i++) {
      const double angle = (double)p * std::exp(-(double)i * step);
      v[p * d + i] = (float)std::sin(angle);
      v[p * d + half + i] = (float)std::cos(angle);
    }
  }
  table = register_constant_buffer("table", Tensor::from_vector<float>(v, {rows, d}));
}

Tensor SinusoidalPositions::forward(const Tensor& ids) {
  Tensor positions;
  {
    Scope s(name());
    positions = make_positions(ids, padding_idx, max_positions, current_scope_or("SinusoidalPositions"));
  }
  return at(positions);
}

Tensor SinusoidalPositions::at(const Tensor& positions) {
  Scope s(name());
  return embedding(table, positions);
}

int64_t position_table_rows(int64_t max_positions, int64_t padding_idx, int64_t width, int64_t max_elements,
                            const char* who, const char* what) {
  int64_t rows = 0, elements = 0;
  const int log2_max = 63 - __builtin_clzll((unsigned long long)max_elements);
  check(!__builtin_add_overflow(max_positions, padding_idx + 1, &rows) &&
            !__builtin_mul_overflow(rows, width, &elements) && elements <= max_elements,
        who, ": a ", what, " of ", max_positions, " positions (+ padding ", padding_idx, ") x ", width,
        " is too large (at most 2^", log2_max, " elements)");
  return rows;
}

Tensor make_positions(const Tensor& ids, int64_t padding_idx, int64_t max_positions, const std::string& who) {
  if (!(ids.defined() && ids.dim() == 2 && ids.dtype() == DType::I64))
    fail(who, ": ids must be int64 [B, T], got ", ids.defined() ? ids.meta_str() : "an undefined tensor");
  // make_positions: non-pad tokens get padding_idx + 1, + 2, ... in order; pad tokens get padding_idx.
  //   real = [id != pad];  pos = real * cumsum(real) + pad
  // computed with ops on ids' device, so a GPU step reads nothing back to the host here.
  NoGradGuard no_grad;
  const Tensor pad = Tensor::full({1}, (double)padding_idx, DType::I64, ids.device());
  const Tensor real = sub(Tensor::ones({1}, DType::I64, ids.device()), eq(ids, pad));
  const Tensor count = cumsum(real, 1);  // real tokens so far in each row
  const Tensor pos = add(mul(real, count), pad);
  // A sequence longer than the table: on the CPU a clear error here; on a GPU the embedding kernel flags the id
  // out of range and the next synchronising call throws it (docs/cuda.md), since checking here would sync.
  if (ids.device().is_cpu() && ids.numel() > 0) {
    const int64_t longest = (int64_t)max(count.select(1, ids.size(1) - 1).to(DType::F64), {0}).item();
    check(longest <= max_positions, who, ": a sequence of ", longest, " tokens exceeds max_positions ", max_positions);
  }
  return pos;
}

// ---------------------------------------------------------------- RotaryEmbedding

RotaryEmbedding::RotaryEmbedding(int64_t dh, int64_t max_pos, int64_t pad, double b)
    : d_head(dh), max_positions(max_pos), padding_idx(pad), base(b) {
  check(dh > 0 && dh % 2 == 0 && max_pos > 0 && pad >= 0 && b > 1 && std::isfinite(b), "RotaryEmbedding",
        ": need an even d_head > 0, max_positions > 0, padding_idx >= 0 and a finite base > 1; got ", dh, ", ",
        max_pos, ", ", pad, ", ", b);
  const int64_t half = dh / 2;
  const int64_t rows = position_table_rows(max_pos, pad, half, int64_t(1) << 31, "RotaryEmbedding", "cos/sin table");
  std::vector<float> c(rows * half, 1.0f), s(rows * half, 0.0f);  // rows up to padding_idx: angle 0
  for (int64_t p = pad + 1; p < rows; p++) {
    const double n = (double)(p - pad - 1);  // the token's index in its sequence, from 0
    for (int64_t i = 0; i < half; i++) {
      const double angle = n * std::pow(b, -2.0 * (double)i / (double)dh);
      c[p * half + i] = (float)std::cos(angle);
      s[p * half + i] = (float)std::sin(angle);
    }
  }
  cos_table = register_constant_buffer("cos_table", Tensor::from_vector<float>(c, {rows, half}));
  sin_table = register_constant_buffer("sin_table", Tensor::from_vector<float>(s, {rows, half}));
}

void RotaryEmbedding::to(DType dtype) {
  Module::to(dtype == DType::BF16 ? DType::F32 : dtype);
}

RotaryAngles RotaryEmbedding::forward(const Tensor& positions) {
  Scope s(name());
  NoGradGuard no_grad;  // constants: the tables are buffers
  return {embedding(cos_table, positions), embedding(sin_table, positions)};
}

// ---------------------------------------------------------------- ALiBi

std::vector<double> alibi_slopes(int64_t heads) {
  check(heads > 0, "alibi_slopes", ": heads must be > 0, got ", heads);
  int64_t pow2 = 1;  // the largest power of two <= heads
  while (pow2 * 2 <= heads) pow2 *= 2;
  std::vector<double> m;
  for (int64_t h = 1; h <= pow2; h++) m.push_back(std::exp2(-8.0 * (double)h / (double)pow2));
  for (int64_t h = 1; (int64_t)m.size() < heads; h += 2) m.push_back(std::exp2(-8.0 * (double)h / (double)(2 * pow2)));
  return m;
}

AlibiSlopes::AlibiSlopes(int64_t h) : heads(h) {
  const std::vector<double> m = alibi_slopes(h);
  slopes =
      register_constant_buffer("slopes", Tensor::from_vector<float>(std::vector<float>(m.begin(), m.end()), {h}));
}

void AlibiSlopes::to(DType dtype) {
  Module::to(dtype == DType::BF16 ? DType::F32 : dtype);
}

AlibiBias AlibiSlopes::forward(const Tensor& positions) {
  check(positions.defined() && positions.dtype() == DType::I64 && positions.dim() == 2, current_scope_or("AlibiSlopes"),
        ": expected positions int64 [B, T], got ", positions.meta_str());
  return {slopes, positions};
}

// ---------------------------------------------------------------- T5's relative-position bias

int64_t relative_position_bucket(int64_t relative, bool bidirectional, int64_t buckets, int64_t max_distance) {
  int64_t n = buckets, offset = 0, distance = 0;
  if (bidirectional) {
    n /= 2;
    offset = relative > 0 ? n : 0;
    distance = relative < 0 ? -relative : relative;
  } else {
    distance = relative < 0 ? -relative : 0;  // a key after the query (masked in a causal decoder): bucket 0
  }
  const int64_t exact = n / 2;
  if (distance < exact) return offset + distance;
  // T5: max_exact + (log(d.float() / max_exact) / math.log(max_distance / max_exact) * (n - max_exact)).to(long):
  // a float32 tensor divided by a Python float (double, rounded to float32 by the op), then truncated.
  const float ratio = std::log((float)distance / (float)exact);
  const float scaled = ratio / (float)std::log((double)max_distance / (double)exact) * (float)(n - exact);
  return offset + std::min(n - 1, exact + (int64_t)scaled);
}

RelativePositionBias::RelativePositionBias(int64_t h, int64_t nb, int64_t maxd, bool bidir)
    : heads(h), buckets(nb), max_distance(maxd), bidirectional(bidir) {
  // (the log scale needs max_distance above the exact buckets' n/2, n = buckets or, bidirectional, buckets / 2;
  // the lookup table has 2·max_distance + 1 rows, made every forward)
  check(h > 0 && nb >= 4 && nb <= (int64_t(1) << 16), "RelativePositionBias",
        ": need heads > 0 and buckets in [4, 2^16]; got heads ", h, ", buckets ", nb);
  const int64_t exact = (bidir ? nb / 2 : nb) / 2;
  check(maxd > exact && maxd <= (int64_t(1) << 16), "RelativePositionBias", ": ", nb, " buckets",
        bidir ? " (bidirectional)" : "", " need max_distance in (", exact, ", 2^16]; got ", maxd);
  weight = register_parameter("weight", Tensor::zeros({nb, h}));
  std::vector<int64_t> of(2 * maxd + 1);
  for (int64_t r = -maxd; r <= maxd; r++) of[r + maxd] = relative_position_bucket(r, bidir, nb, maxd);
  bucket_of = register_buffer("buckets", Tensor::from_vector(of, {2 * maxd + 1}));
}

void RelativePositionBias::check_loaded_buffer(const std::string& name, const Tensor& value,
                                               const std::string& context) const {
  if (name != "buckets") return;  // (int64 [2D + 1]: the loaders checked shape and dtype)
  const std::vector<int64_t> got = value.to(Device::cpu()).contiguous().to_vector<int64_t>(),
                             want = bucket_of.to(Device::cpu()).to_vector<int64_t>();
  for (size_t i = 0; i < want.size(); i++)
    if (got[i] != want[i])
      fail(context, " holds bucket ", got[i], " for relative position ", (int64_t)i - max_distance, " where ", buckets,
           " buckets up to distance ", max_distance, bidirectional ? " (bidirectional)" : "", " give ", want[i],
           ": an edited file, or one saved with other settings");
}

// bias[b, h, i, j] = weight[buckets[clamp(p_j - p_i, -D, D) + D], h], in two lookups: the bias of every relative
// position in [-D, D] (table [2D + 1, H], rows of the weight), then the table's rows at the clamped relative
// positions [B, Tq, Tk], computed on the positions' device (no host read). The gradient flows back through both.
Tensor RelativePositionBias::forward(const Tensor& qpos, const Tensor& kpos) {
  Scope s(name());
  const bool ok = qpos.defined() && kpos.defined() && qpos.dtype() == DType::I64 && kpos.dtype() == DType::I64 &&
                  qpos.dim() == 2 && kpos.dim() == 2 && qpos.size(0) == kpos.size(0) &&
                  qpos.device() == weight.device() && kpos.device() == weight.device();
  if (!ok)
    fail(current_scope_or("RelativePositionBias"), ": expected int64 query positions [B, Tq] and key positions ",
         "[B, Tk] on ", weight.device().str(), ", got ", qpos.defined() ? qpos.meta_str() : "undefined", " and ",
         kpos.defined() ? kpos.meta_str() : "undefined");
  const int64_t B = qpos.size(0), Tq = qpos.size(1), Tk = kpos.size(1), D = max_distance;
  Tensor row;  // int64 [B, Tq, Tk]: clamp(p_j - p_i, -D, D) + D, the table's row
  {
    Scope r("relative");
    NoGradGuard no_grad;
    const Device dev = weight.device();
    auto constant = [&dev](int64_t v) { return Tensor::full({1}, (double)v, DType::I64, dev); };
    const Tensor relative = sub(kpos.reshape({B, 1, Tk}), qpos.reshape({B, Tq, 1}));  // p_j - p_i
    row = add(maximum(minimum(relative, constant(D)), constant(-D)), constant(D));
  }
  Tensor table;
  {
    Scope t("table");
    table = embedding(weight, bucket_of);  // [2D + 1, H]
  }
  Scope b("bias");
  // [B, Tq, Tk, H] -> [B, H, Tq, Tk], laid out as the scores: one copy here, where every layer's attention would
  // read the permuted view across heads (on a GPU, uncoalesced)
  return embedding(table, row).permute({0, 3, 1, 2}).contiguous();
}

// ---------------------------------------------------------------- Dropout

Dropout::Dropout(double prob) : p(prob) {
  check(prob >= 0 && prob <= 1, "Dropout", ": p must be in [0, 1], got ", prob);  // 1: zeros, as dropout()
}

Tensor Dropout::forward(const Tensor& x) {
  Scope s(name());
  return dropout(x, p, is_training());
}

// ---------------------------------------------------------------- norms

const char* norm_kind_name(NormKind k) {
  switch (k) {
    case NormKind::LayerNorm: return "layer_norm";
    case NormKind::RMSNorm: return "rms_norm";
    case NormKind::DynamicTanh: return "dyt";
  }
  return "?";
}

NormKind parse_norm_kind(const std::string& s) {
  if (s == "layer_norm" || s == "ln" || s == "layernorm") return NormKind::LayerNorm;
  if (s == "rms_norm" || s == "rms" || s == "rmsnorm") return NormKind::RMSNorm;
  if (s == "dyt" || s == "dynamic_tanh") return NormKind::DynamicTanh;
  fail("parse_norm_kind", ": unknown norm '", s, "'; known: layer_norm, rms_norm, dyt");
}

LayerNorm::LayerNorm(int64_t d, double e, bool affine) : dim(d), eps(e) {
  check(d > 0 && e > 0, "LayerNorm", ": need dim > 0 and eps > 0, got ", d, " and ", e);
  if (affine) {
    weight = register_parameter("weight", Tensor::ones({d}));
    bias = register_parameter("bias", Tensor::zeros({d}));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  Scope s(name());
  check_features(x, dim, "LayerNorm");
  return layer_norm(x, weight, bias, eps);
}

RMSNorm::RMSNorm(int64_t d, double e) : dim(d), eps(e) {
  check(d > 0 && e > 0, "RMSNorm", ": need dim > 0 and eps > 0, got ", d, " and ", e);
  weight = register_parameter("weight", Tensor::ones({d}));
}

Tensor RMSNorm::forward(const Tensor& x) {
  Scope s(name());
  check_features(x, dim, "RMSNorm");
  return rms_norm(x, weight, eps);
}

L2Norm::L2Norm(double e) : eps(e) { check(e > 0, "L2Norm", ": eps must be > 0, got ", e); }

Tensor L2Norm::forward(const Tensor& x) {
  Scope s(name());
  return l2_norm(x, eps);
}

DynamicTanh::DynamicTanh(int64_t d, double alpha0) : dim(d) {
  check(d > 0 && std::isfinite(alpha0) && alpha0 > 0, "DynamicTanh", ": need dim > 0 and a finite alpha0 > 0, got ",
        d, " and ", alpha0);
  alpha = register_parameter("alpha", Tensor::full({1}, alpha0));
  weight = register_parameter("weight", Tensor::ones({d}));
  bias = register_parameter("bias", Tensor::zeros({d}));
}

Tensor DynamicTanh::forward(const Tensor& x) {
  Scope s(name());
  check_features(x, dim, "DynamicTanh");
  return dyt(x, alpha, weight, bias);
}

int64_t set_dyt_alpha(Module& root, const std::string& pattern, double alpha0) {
  check(std::isfinite(alpha0) && alpha0 > 0, "set_dyt_alpha", ": alpha0 must be finite and > 0, got ", alpha0,
        " for '", pattern, "'");
  int64_t set = 0;
  NoGradGuard no_grad;
  for (auto& [name, m] : root.named_modules())
    if (auto* d = dynamic_cast<DynamicTanh*>(m); d && name_matches(pattern, name)) {
      d->alpha.copy_(Tensor::full(d->alpha.shape(), alpha0, d->alpha.dtype(), d->alpha.device()));
      ++set;
    }
  return set;
}

std::shared_ptr<Norm> make_norm(NormKind kind, int64_t dim, double eps, double dyt_alpha) {
  switch (kind) {
    case NormKind::LayerNorm: return std::make_shared<LayerNorm>(dim, eps);
    case NormKind::RMSNorm: return std::make_shared<RMSNorm>(dim, eps);
    case NormKind::DynamicTanh: return std::make_shared<DynamicTanh>(dim, dyt_alpha);
  }
  fail("make_norm", ": unknown norm kind ", (int)kind);
}

}  // namespace skipgrad::nn
