// CPU fused row kernels: softmax, layer/rms norm, DyT, embedding, cross entropy, dropout masks, rotary embedding.
// Rows are independent, so each kernel is an OpenMP loop over rows with a plain inner loop; statistics are
// accumulated in double.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/lane_sum.h"
#include "backends/cpu/strided_loop.h"
#include "backends/cpu/vec_math.h"
#include "backends/in_float32.h"
#include "tensor/random.h"

namespace skipgrad {

namespace {
struct Rows {
  int64_t rows, cols;
};
// Callers copy the fields into plain locals, not a structured binding: clang 14 cannot capture one in a lambda.
Rows rows_of(const Tensor& x) {
  int64_t cols = x.dim() ? x.shape().back() : 1;
  return {cols ? x.numel() / cols : 0, cols};
}

// The norms' parameter gradients: out_t[c] = Σ_r term_t(r, c) in double for one term or two (term1 nullptr: one),
// parallel over blocks of 64 columns, the rows of each in order, so the sums do not depend on the thread count. A
// null out_t is neither computed nor written; which are wanted is fixed per instantiation, so the loop vectorises.
// (The GPU's counterpart: cuda_norm.cu's column_sums.)
template <bool k0, bool k1, class T, class Term0, class Term1>
void column_sums_of(int64_t R, int64_t C, T* out0, Term0& term0, T* out1, Term1& term1) {
#pragma omp parallel for schedule(static) if (R * C > 16384)
  for (int64_t c0 = 0; c0 < C; c0 += 64) {
    const int64_t c1 = std::min<int64_t>(C, c0 + 64);
    double a0[64] = {0}, a1[64] = {0};
    for (int64_t r = 0; r < R; r++)
      for (int64_t c = c0; c < c1; c++) {
        if constexpr (k0) a0[c - c0] += term0(r, c);
        if constexpr (k1) a1[c - c0] += term1(r, c);
      }
    for (int64_t c = c0; c < c1; c++) {
      if constexpr (k0) out0[c] = (T)a0[c - c0];
      if constexpr (k1) out1[c] = (T)a1[c - c0];
    }
  }
}
template <class T, class Term0, class Term1 = std::nullptr_t>
void column_sums(int64_t R, int64_t C, T* out0, Term0&& term0, T* out1 = nullptr, Term1&& term1 = nullptr) {
  if constexpr (std::is_same_v<std::decay_t<Term1>, std::nullptr_t>) {
    if (out0) column_sums_of<true, false>(R, C, out0, term0, out1, term0);
  } else {
    if (out0 && out1) column_sums_of<true, true>(R, C, out0, term0, out1, term1);
    else if (out0) column_sums_of<true, false>(R, C, out0, term0, out1, term1);
    else if (out1) column_sums_of<false, true>(R, C, out0, term0, out1, term1);
  }
}
}  // namespace

// y = exp(x - max) / sum(exp(x - max));  log: y = x - max - log(sum(exp(x - max)))
// Masked columns (Backend's SoftmaxMask) read as -inf: with causal_queries = Q > 0, row r keeps its first
// (r mod Q) + C - Q + 1 columns; with key_padding, row r drops the columns whose pad[r / rows_per_batch] is set.
// With ALiBi, x is first z = x - slope_h * |p_query - p_key| (written into y's row, which the rest reads in place).
void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log, const SoftmaxMask& mask) {
  if (in_float32::softmax(*this, x, y, log, mask)) return;
  check_softmax_mask("softmax", x, mask);
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols, Q = mask.causal_queries;
  const Tensor& kp = mask.key_padding;
  const int64_t* pad = kp.defined() ? static_cast<const int64_t*>(kp.data_ptr()) : nullptr;
  const bool alibi = mask.alibi_slopes.defined();
  const int64_t H = alibi ? mask.alibi_slopes.numel() : 1, Tq = alibi ? mask.query_positions.size(1) : 1;
  const int64_t* qpos = alibi ? static_cast<const int64_t*>(mask.query_positions.data_ptr()) : nullptr;
  const int64_t* kpos = alibi ? static_cast<const int64_t*>(mask.key_positions.data_ptr()) : nullptr;
  cpu::dispatch_float(x.dtype(), "softmax", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    const T* slopes = alibi ? static_cast<const T*>(mask.alibi_slopes.data_ptr()) : nullptr;
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      constexpr T kMasked = -std::numeric_limits<T>::infinity();
      // the causal window keeps columns [0, keep); the padding mask drops some of those
      const int64_t keep = std::clamp<int64_t>(Q > 0 ? r % Q + C - Q + 1 : C, 0, C);
      const int64_t* padded = pad ? pad + r / mask.rows_per_batch * C : nullptr;
      if (alibi) {  // row r = (b*H + h)*Tq + i
        const T slope = slopes[r / Tq % H];
        const int64_t b = r / (H * Tq), query = qpos[r / (H * Tq) * Tq + r % Tq];
        const int64_t* key = kpos + b * C;
        for (int64_t c = 0; c < keep; c++) yr[c] = xr[c] - slope * (T)std::abs(query - key[c]);
        xr = yr;
      }
      auto at = [&](int64_t c) { return c < keep && !(padded && padded[c]) ? xr[c] : kMasked; };
      T mx = kMasked;
      for (int64_t c = 0; c < keep; c++) mx = at(c) > mx ? at(c) : mx;
      if (mx == kMasked) mx = 0;  // a fully masked row
      if (log) {  // (x - max) - log(s): x - (max + log(s)) would carry the rounding of a large max + log(s)
        const double s = cpu::lane_sum(keep, [&](int64_t c) { return (double)cpu::VecMath::exp(at(c) - mx); });
        const T log_s = (T)std::log(s);  // s == 0: a row of only -inf or masked columns, log of softmax's zeros
        for (int64_t c = 0; c < C; c++) yr[c] = s == 0 ? kMasked : (at(c) - mx) - log_s;
        continue;
      }
      // e = exp(x - max) over the window in one vectorised loop, then 0 where padded and past the window
      for (int64_t c = 0; c < keep; c++) yr[c] = cpu::VecMath::exp(xr[c] - mx);
      if (padded)
        for (int64_t c = 0; c < keep; c++) yr[c] = padded[c] ? T(0) : yr[c];
      std::fill(yr + keep, yr + C, T(0));
      const double s = cpu::lane_sum(keep, [yr](int64_t c) { return (double)yr[c]; });
      const T inv = s == 0 ? T(0) : (T)(1.0 / s);  // 0: a fully masked row; a NaN sum (NaN or +inf in the row): NaN
      for (int64_t c = 0; c < C; c++) yr[c] *= inv;
    }
  });
}

// softmax:     gx = y * (gy - sum(gy * y))
// log_softmax: gx = gy - exp(y) * sum(gy)
void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  if (in_float32::softmax_backward(*this, y, gy, gx, log)) return;
  const Rows rows = rows_of(y);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(y.dtype(), "softmax_backward", [&]<class T>() {
    const T* yp = static_cast<const T*>(y.data_ptr());
    const T* gp = static_cast<const T*>(gy.data_ptr());
    T* op_ = static_cast<T*>(gx.data_ptr());
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      const T* yr = yp + r * C;
      const T* gr = gp + r * C;
      T* o = op_ + r * C;
      if (log) {
        const T s = (T)cpu::lane_sum(C, [gr](int64_t c) { return (double)gr[c]; });
        for (int64_t c = 0; c < C; c++) o[c] = gr[c] - cpu::VecMath::exp(yr[c]) * s;
      } else {
        const T s = (T)cpu::lane_sum(C, [gr, yr](int64_t c) { return (double)gr[c] * yr[c]; });
        for (int64_t c = 0; c < C; c++) o[c] = yr[c] * (gr[c] - s);
      }
    }
  });
}

// mean = sum(x)/C; rstd = 1/sqrt(sum((x-mean)^2)/C + eps); y = (x-mean)*rstd*gamma + beta
// The mean is saved as two numbers, hi = (T)mean and lo = (T)(mean - hi), so the backward's x - mean is the
// forward's: a row of 1e4 + 1e-3 noise in float32 would otherwise see a mean off by 5e-4 (half its spread).
void CpuBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, Tensor& y,
                            Tensor& mean, Tensor& rstd) {
  if (in_float32::layer_norm(*this, x, gamma, beta, eps, y, mean, rstd)) return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "layer_norm", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* gp = gamma.defined() ? static_cast<const T*>(gamma.data_ptr()) : nullptr;
    const T* bp = beta.defined() ? static_cast<const T*>(beta.data_ptr()) : nullptr;
    T* yp = static_cast<T*>(y.data_ptr());
    T* mp = static_cast<T*>(mean.data_ptr());
    T* rp = static_cast<T*>(rstd.data_ptr());
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      const double mu = cpu::lane_sum(C, [xr](int64_t c) { return (double)xr[c]; }) / C;
      const double v = cpu::lane_sum(C, [xr, mu](int64_t c) { return (xr[c] - mu) * (xr[c] - mu); });
      const double rs = 1.0 / std::sqrt(v / C + eps);
      mp[2 * r] = (T)mu;
      mp[2 * r + 1] = (T)(mu - (double)mp[2 * r]);
      rp[r] = (T)rs;
      for (int64_t c = 0; c < C; c++) {
        T n = (T)((xr[c] - mu) * rs);
        yr[c] = n * (gp ? gp[c] : T(1)) + (bp ? bp[c] : T(0));
      }
    }
  });
}

// xhat = (x-mean)*rstd; g = gy*gamma
// gx (+)= rstd * (g - mean(g) - xhat * mean(g * xhat));  ggamma = sum_rows(gy * xhat); gbeta = sum_rows(gy)
void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                     const Tensor& gamma, Tensor& gx, Tensor& ggamma, Tensor& gbeta,
                                     bool accumulate_gx) {
  if (in_float32::layer_norm_backward(*this, gy, x, mean, rstd, gamma, gx, ggamma, gbeta, accumulate_gx))
    return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "layer_norm_backward", [&]<class T>() {
    const T* gyp = static_cast<const T*>(gy.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* mp = static_cast<const T*>(mean.data_ptr());
    auto mean_of = [mp](int64_t r) { return (double)mp[2 * r] + (double)mp[2 * r + 1]; };  // hi + lo
    const T* rp = static_cast<const T*>(rstd.data_ptr());
    const T* gam = gamma.defined() ? static_cast<const T*>(gamma.data_ptr()) : nullptr;
    T* gxp = gx.defined() ? static_cast<T*>(gx.data_ptr()) : nullptr;
    // gamma's presence is a template parameter: a null-pointer test per element keeps the loops from vectorising
    auto gx_rows = [&]<bool kGamma>() {
#pragma omp parallel for schedule(static) if (R * C > 16384)
      for (int64_t r = 0; r < R; r++) {
        const T* g = gyp + r * C;
        const T* xr = xp + r * C;
        const double mu = mean_of(r), rs = rp[r];
        auto gg_of = [g, gam](int64_t c) { return kGamma ? (double)g[c] * gam[c] : (double)g[c]; };
        const double sg = cpu::lane_sum(C, gg_of) / C;
        const double sgx = cpu::lane_sum(C, [&](int64_t c) { return gg_of(c) * (xr[c] - mu) * rs; }) / C;
        T* o = gxp + r * C;
        for (int64_t c = 0; c < C; c++) {
          const double xh = (xr[c] - mu) * rs;
          const T v = (T)(rs * (gg_of(c) - sg - xh * sgx));
          o[c] = accumulate_gx ? o[c] + v : v;  // rounded as an add kernel would round the two
        }
      }
    };
    if (gxp && gam) gx_rows.template operator()<true>();
    else if (gxp) gx_rows.template operator()<false>();
    T* gg = ggamma.defined() ? static_cast<T*>(ggamma.data_ptr()) : nullptr;
    T* gb = gbeta.defined() ? static_cast<T*>(gbeta.data_ptr()) : nullptr;
    column_sums(
        R, C, gg, [&](int64_t r, int64_t c) { return (double)gyp[r * C + c] * (xp[r * C + c] - mean_of(r)) * rp[r]; },
        gb, [&](int64_t r, int64_t c) { return (double)gyp[r * C + c]; });
  });
}

// rstd = 1/sqrt(mean(x^2) + eps); y = x * rstd * w
void CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, double eps, Tensor& y, Tensor& rstd) {
  if (in_float32::rms_norm(*this, x, weight, eps, y, rstd)) return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "rms_norm", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* wp = weight.defined() ? static_cast<const T*>(weight.data_ptr()) : nullptr;
    T* yp = static_cast<T*>(y.data_ptr());
    T* rp = static_cast<T*>(rstd.data_ptr());
    // the weight's presence is a template parameter (see layer_norm_backward)
    auto rows_with = [&]<bool kWeight>() {
#pragma omp parallel for schedule(static) if (R * C > 16384)
      for (int64_t r = 0; r < R; r++) {
        const T* xr = xp + r * C;
        const double ss = cpu::lane_sum(C, [xr](int64_t c) { return (double)xr[c] * xr[c]; });
        const double rs = 1.0 / std::sqrt(ss / C + eps);
        rp[r] = (T)rs;
        T* yr = yp + r * C;
        for (int64_t c = 0; c < C; c++) yr[c] = kWeight ? (T)(xr[c] * rs) * wp[c] : (T)(xr[c] * rs);
      }
    };
    if (wp) rows_with.template operator()<true>();
    else rows_with.template operator()<false>();
  });
}

// g = gy*w; gx (+)= rstd * (g - xhat * mean(g * xhat)) with xhat = x*rstd; gw = sum_rows(gy * xhat)
void CpuBackend::rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& rstd, const Tensor& weight,
                                   Tensor& gx, Tensor& gweight, bool accumulate_gx) {
  if (in_float32::rms_norm_backward(*this, gy, x, rstd, weight, gx, gweight, accumulate_gx)) return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "rms_norm_backward", [&]<class T>() {
    const T* gyp = static_cast<const T*>(gy.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* rp = static_cast<const T*>(rstd.data_ptr());
    const T* wp = weight.defined() ? static_cast<const T*>(weight.data_ptr()) : nullptr;
    T* gxp = gx.defined() ? static_cast<T*>(gx.data_ptr()) : nullptr;
    auto gx_rows = [&]<bool kWeight>() {
#pragma omp parallel for schedule(static) if (R * C > 16384)
      for (int64_t r = 0; r < R; r++) {
        const T* g = gyp + r * C;
        const T* xr = xp + r * C;
        const double rs = rp[r];
        auto gw_of = [g, wp](int64_t c) { return kWeight ? (double)g[c] * wp[c] : (double)g[c]; };
        const double s = cpu::lane_sum(C, [&](int64_t c) { return gw_of(c) * xr[c] * rs; }) / C;
        T* o = gxp + r * C;
        for (int64_t c = 0; c < C; c++) {
          const T v = (T)(rs * (gw_of(c) - xr[c] * rs * s));
          o[c] = accumulate_gx ? o[c] + v : v;
        }
      }
    };
    if (gxp && wp) gx_rows.template operator()<true>();
    else if (gxp) gx_rows.template operator()<false>();
    column_sums(R, C, gweight.defined() ? static_cast<T*>(gweight.data_ptr()) : nullptr,
                [&](int64_t r, int64_t c) { return (double)gyp[r * C + c] * xp[r * C + c] * rp[r]; });
  });
}

// DyT: y = w·tanh(a·x) + b, t computed in T (float for float32, by cpu::VecMath::tanh: vec_math.h), as the GPU's
void CpuBackend::dyt(const Tensor& x, const Tensor& alpha, const Tensor& weight, const Tensor& bias, Tensor& y) {
  if (in_float32::dyt(*this, x, alpha, weight, bias, y)) return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "dyt", [&]<class T>() {
    const T a = *static_cast<const T*>(alpha.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    // no weight or bias: ones and zeros, so that the loop has no branch and vectorises
    std::vector<T> ones(weight.defined() ? 0 : C, T(1)), zeros(bias.defined() ? 0 : C, T(0));
    const T* wp = weight.defined() ? static_cast<const T*>(weight.data_ptr()) : ones.data();
    const T* bp = bias.defined() ? static_cast<const T*>(bias.data_ptr()) : zeros.data();
    T* yp = static_cast<T*>(y.data_ptr());
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      for (int64_t c = 0; c < C; c++) yr[c] = wp[c] * cpu::VecMath::tanh(a * xr[c]) + bp[c];
    }
  });
}

// gu = gy·w·(1 − t²): gx (+)= a·gu and gy·t per element in one pass over the rows (t computed once), galpha =
// Σ gu·x (each row's sum over 8 lanes in double, then the rows in order); then gweight = Σ_rows gy·t and gbias =
// Σ_rows gy over blocks of 64 columns, as rms_norm_backward's weight: sums whose order does not depend on threads.
void CpuBackend::dyt_backward(const Tensor& gy, const Tensor& x, const Tensor& alpha, const Tensor& weight, Tensor& gx,
                              Tensor& galpha, Tensor& gweight, Tensor& gbias, bool accumulate_gx) {
  if (in_float32::dyt_backward(*this, gy, x, alpha, weight, gx, galpha, gweight, gbias, accumulate_gx)) return;
  const Rows rows = rows_of(x);
  const int64_t R = rows.rows, C = rows.cols;
  cpu::dispatch_float(x.dtype(), "dyt_backward", [&]<class T>() {
    const T a = *static_cast<const T*>(alpha.data_ptr());
    const T* gyp = static_cast<const T*>(gy.data_ptr());
    const T* xp = static_cast<const T*>(x.data_ptr());
    std::vector<T> ones(weight.defined() ? 0 : C, T(1));
    const T* wp = weight.defined() ? static_cast<const T*>(weight.data_ptr()) : ones.data();
    T* gxp = gx.defined() ? static_cast<T*>(gx.data_ptr()) : nullptr;
    std::vector<T> gt(gweight.defined() ? R * C : 0);  // gy·t, summed into gweight below
    std::vector<double> row_sums(R, 0.0);
    // the element's work, with what is wanted fixed per instantiation so that the loop vectorises; kGx: 0 no gx
    // (x needs no gradient: nothing written), 1 gx = a·gu, 2 gx += a·gu
    auto rows_with = [&]<int kGx, bool kGt>() {
      const T av = a;     // (copies in this lambda: clang 14 refuses the row lambda's reference to a variable of
      const T* w = wp;    // the lambda two levels up)
#pragma omp parallel for schedule(static) if (R * C > 16384)
      for (int64_t r = 0; r < R; r++) {
        const T* g = gyp + r * C;
        const T* xr = xp + r * C;
        T* o = kGx ? gxp + r * C : nullptr;
        T* gtr = kGt ? gt.data() + r * C : nullptr;
        row_sums[r] = cpu::lane_sum(C, [&](int64_t c) {
          const T t = cpu::VecMath::tanh(av * xr[c]);
          const T gu = g[c] * w[c] * (T(1) - t * t);
          if constexpr (kGx == 1) o[c] = av * gu;
          if constexpr (kGx == 2) o[c] += av * gu;
          if constexpr (kGt) gtr[c] = g[c] * t;
          return (double)gu * xr[c];
        });
      }
    };
    const int gx_mode = !gx.defined() ? 0 : accumulate_gx ? 2 : 1;
    auto with_gt = [&]<int kGx>() {
      if (gweight.defined()) rows_with.template operator()<kGx, true>();
      else rows_with.template operator()<kGx, false>();
    };
    if (gx_mode == 0) with_gt.template operator()<0>();
    else if (gx_mode == 1) with_gt.template operator()<1>();
    else with_gt.template operator()<2>();
    if (galpha.defined()) {
      double total = 0;
      for (double s : row_sums) total += s;
      *static_cast<T*>(galpha.data_ptr()) = (T)total;
    }
    column_sums(R, C, gweight.defined() ? static_cast<T*>(gweight.data_ptr()) : nullptr,
                [&](int64_t r, int64_t c) { return (double)gt[r * C + c]; },
                gbias.defined() ? static_cast<T*>(gbias.data_ptr()) : nullptr,
                [&](int64_t r, int64_t c) { return (double)gyp[r * C + c]; });
  });
}

void CpuBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  if (in_float32::embedding(*this, weight, ids, out)) return;
  const int64_t V = weight.size(0), D = weight.size(1), N = ids.numel();
  const int64_t* id = static_cast<const int64_t*>(ids.data_ptr());
  for (int64_t i = 0; i < N; i++)
    check(id[i] >= 0 && id[i] < V, "embedding", ": id ", id[i], " at position ", i, " is out of range [0, ", V, ")");
  cpu::dispatch_float(weight.dtype(), "embedding", [&]<class T>() {
    const T* w = static_cast<const T*>(weight.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t i = 0; i < N; i++) std::copy(w + id[i] * D, w + id[i] * D + D, o + i * D);
  });
}

void CpuBackend::embedding_backward(const Tensor& ids, const Tensor& gout, Tensor& gweight, int64_t padding_idx) {
  if (in_float32::embedding_backward(*this, ids, gout, gweight, padding_idx)) return;
  const int64_t D = gweight.size(1), N = ids.numel();
  const int64_t* id = static_cast<const int64_t*>(ids.data_ptr());
  cpu::dispatch_float(gweight.dtype(), "embedding_backward", [&]<class T>() {
    const T* g = static_cast<const T*>(gout.data_ptr());
    T* gw = static_cast<T*>(gweight.data_ptr());
    // Parallel over columns so repeated ids never race; rows are added in order (deterministic).
#pragma omp parallel for schedule(static) if (N * D > 65536)
    for (int64_t c0 = 0; c0 < D; c0 += 16) {
      const int64_t c1 = std::min<int64_t>(D, c0 + 16);
      for (int64_t i = 0; i < N; i++) {
        if (id[i] == padding_idx) continue;
        T* dst = gw + id[i] * D;
        const T* src = g + i * D;
        for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
      }
    }
  });
}

// loss_i = lse_i - (1-ls) * x[t_i] - ls * mean_j x_ij   (= (1-ls)*nll + ls*mean_j(-logp_ij))
// stats [N, 2]: each row's max m and log(sum(exp(x - m))), so that the backward's softmax exp((x - m) - log_s)
// carries no rounding of a large lse = m + log_s
void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               double label_smoothing, Tensor& loss, Tensor& stats) {
  if (in_float32::cross_entropy(*this, logits, targets, ignore_index, label_smoothing, loss, stats)) return;
  const Rows rows = rows_of(logits);
  const int64_t R = rows.rows, C = rows.cols;
  const int64_t* tp = static_cast<const int64_t*>(targets.data_ptr());
  for (int64_t r = 0; r < R; r++)
    check(tp[r] == ignore_index || (tp[r] >= 0 && tp[r] < C), "cross_entropy", ": target ", tp[r], " at row ", r,
          " is out of range [0, ", C, ") and is not ignore_index ", ignore_index);
  cpu::dispatch_float(logits.dtype(), "cross_entropy", [&]<class T>() {
    const T* xp = static_cast<const T*>(logits.data_ptr());
    T* lp = static_cast<T*>(loss.data_ptr());
    T* sp = static_cast<T*>(stats.data_ptr());
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      const T* x = xp + r * C;
      const T mx = cpu::lane_max(C, x);
      const double sum_x = cpu::lane_sum(C, [x](int64_t c) { return (double)x[c]; });
      const double s = cpu::lane_sum(C, [x, mx](int64_t c) { return (double)cpu::VecMath::exp(x[c] - mx); });
      const double log_s = std::log(s), l = mx + log_s;
      sp[2 * r] = mx;
      sp[2 * r + 1] = (T)log_s;
      if (tp[r] == ignore_index) {
        lp[r] = 0;
        continue;
      }
      // Without smoothing the mean term is left out entirely: 0 * sum_x would be NaN when a class is masked
      // with a -inf logit, while the loss itself is finite.
      double smooth = label_smoothing > 0 ? label_smoothing * sum_x / C : 0.0;
      lp[r] = (T)(l - (1 - label_smoothing) * x[tp[r]] - smooth);
    }
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& stats,
                                        const Tensor& gloss, int64_t ignore_index, double label_smoothing,
                                        Tensor& glogits) {
  if (in_float32::cross_entropy_backward(*this, logits, targets, stats, gloss, ignore_index, label_smoothing,
                                         glogits))
    return;
  const Rows rows = rows_of(logits);
  const int64_t R = rows.rows, C = rows.cols;
  const int64_t* tp = static_cast<const int64_t*>(targets.data_ptr());
  cpu::dispatch_float(logits.dtype(), "cross_entropy_backward", [&]<class T>() {
    const T* xp = static_cast<const T*>(logits.data_ptr());
    const T* sp = static_cast<const T*>(stats.data_ptr());
    const T* gp = static_cast<const T*>(gloss.data_ptr());
    T* o = static_cast<T*>(glogits.data_ptr());
#pragma omp parallel for schedule(static) if (R * C > 16384)
    for (int64_t r = 0; r < R; r++) {
      T* orow = o + r * C;
      if (tp[r] == ignore_index) {
        std::fill(orow, orow + C, T(0));
        continue;
      }
      const T* x = xp + r * C;
      const T g = gp[r], m = sp[2 * r], log_s = sp[2 * r + 1];
      const T smooth = (T)(label_smoothing / C);
      for (int64_t c = 0; c < C; c++) orow[c] = g * (cpu::VecMath::exp((x[c] - m) - log_s) - smooth);
      orow[tp[r]] -= g * (T)(1 - label_smoothing);
    }
  });
}

// y[i] = x[i] * mask_i, mask_i = (u_i >= p) / (1 - p), u_i = random_uniform01(seed, offset + i); a multiply even
// where dropped, so a NaN or inf in x stays visible (as x * mask did).
void CpuBackend::dropout(const Tensor& x, Tensor& y, double p, uint64_t seed, uint64_t offset) {
  if (in_float32::dropout(*this, x, y, p, seed, offset)) return;
  check_dropout_operands(x, y);
  cpu::dispatch_float(x.dtype(), "dropout", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(y.data_ptr());
    const int64_t n = x.numel();
    const T keep = (T)(1.0 / (1.0 - p));
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yp[i] = xp[i] * (random_uniform01(seed, offset + i) >= p ? keep : T(0));
  });
}

// Rotary embedding (Backend::rotary): each row (b, h, t) of x rotates its pairs (x_i, x_{i+dh/2}) by the angles
// of (b, t): y_i = x_i c - x_{i+h} s, y_{i+h} = x_{i+h} c + x_i s, with s negated for the inverse rotation.
void CpuBackend::rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse, Tensor& out) {
  if (in_float32::rotary(*this, x, cos, sin, inverse, out)) return;
  check_rotary_operands(x, cos, sin, out);
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2), half = x.size(3) / 2;
  const int64_t angle_batch = cos.size(0) == 1 ? 0 : L * half;  // cos/sin [1, T, h] serve every batch entry
  const Shape xs = x.strides(), os = out.strides();
  cpu::dispatch_float(x.dtype(), "rotary", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* cp = static_cast<const T*>(cos.data_ptr());
    const T* sp = static_cast<const T*>(sin.data_ptr());
    T* op = static_cast<T*>(out.data_ptr());
    const T sign = inverse ? T(-1) : T(1);
#pragma omp parallel for schedule(static) if (B * H * L * half > 65536)
    for (int64_t row = 0; row < B * H * L; row++) {
      const int64_t b = row / (H * L), h = row / L % H, t = row % L;
      const T* xr = xp + b * xs[0] + h * xs[1] + t * xs[2];
      T* yr = op + b * os[0] + h * os[1] + t * os[2];
      const T* c = cp + b * angle_batch + t * half;
      const T* s = sp + b * angle_batch + t * half;
      if (xs[3] == 1 && os[3] == 1) {  // rows of unit stride (a projection's heads): a loop the compiler vectorises
        const T* x2r = xr + half;
        T* y2r = yr + half;
#pragma omp simd
        for (int64_t i = 0; i < half; i++) {
          const T x1 = xr[i], x2 = x2r[i], si = sign * s[i];
          yr[i] = x1 * c[i] - x2 * si;
          y2r[i] = x2 * c[i] + x1 * si;
        }
        continue;
      }
      for (int64_t i = 0; i < half; i++) {
        const T x1 = xr[i * xs[3]], x2 = xr[(i + half) * xs[3]], si = sign * s[i];
        yr[i * os[3]] = x1 * c[i] - x2 * si;
        yr[(i + half) * os[3]] = x2 * c[i] + x1 * si;
      }
    }
  });
}

}  // namespace skipgrad
