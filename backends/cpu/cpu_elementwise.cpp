// CPU elementwise kernels: fills, copies, random numbers, unary/binary maps and their derivatives.
#include <cmath>

#include "backends/cpu/cpu_backend.h"
#include "backends/elementwise_math.h"
#include "backends/cpu/strided_loop.h"
#include "backends/cpu/vec_math.h"
#include "backends/in_float32.h"
#include "tensor/random.h"

namespace skipgrad {

using cpu::dispatch_all;
using cpu::dispatch_float;
using cpu::strided_rows;
using elementwise::binary_fn;
using elementwise::unary_fn;
using elementwise::unary_grad;

void CpuBackend::fill(Tensor& out, double value) {
  dispatch_all(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    const T v = static_cast<T>(value);
    strided_rows<1>(out.shape(), {&out.strides()}, [&](auto off, int64_t n, auto st) {
      for (int64_t i = 0; i < n; i++) p[off[0] + i * st[0]] = v;
    });
  });
}

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  check(src.shape() == dst.shape(), "copy", ": shapes differ: ", src.shape(), " -> ", dst.shape());
  dispatch_all(src.dtype(), [&]<class S>() {
    dispatch_all(dst.dtype(), [&]<class D>() {
      const S* s = static_cast<const S*>(src.data_ptr());
      D* d = static_cast<D*>(dst.data_ptr());
      strided_rows<2>(dst.shape(), {&dst.strides(), &src.strides()}, [&](auto off, int64_t n, auto st) {
        D* dp = d + off[0];
        const S* sp = s + off[1];
        if (st[0] == 1 && st[1] == 1)
          for (int64_t i = 0; i < n; i++) dp[i] = elementwise::convert<D>(sp[i]);
        else
          for (int64_t i = 0; i < n; i++) dp[i * st[0]] = elementwise::convert<D>(sp[i * st[1]]);
      });
    });
  });
}

void CpuBackend::arange(Tensor& out, double start, double step) {
  dispatch_all(out.dtype(), [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    for (int64_t i = 0; i < out.numel(); i++) p[i] = static_cast<T>(start + step * (double)i);
  });
}

// p[i] = low + (high - low) · random_uniform01(seed, counter(i)), i < n. Rounding to float can land on `high`
// (u within 2^-25 of 1); the interval stays half-open.
template <class T, class Counter>
static void fill_uniform(T* p, int64_t n, double low, double high, uint64_t seed, Counter counter) {
  const bool clamp = high > low;
  const T top = std::nextafter(static_cast<T>(high), static_cast<T>(low));
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    const T v = static_cast<T>(low + (high - low) * random_uniform01(seed, counter(i)));
    p[i] = clamp && v > top ? top : v;
  }
}

void CpuBackend::random_uniform(Tensor& out, double low, double high, uint64_t seed, uint64_t offset) {
  if (in_float32::random_uniform(*this, out, low, high, seed, offset)) return;
  dispatch_float(out.dtype(), "rand", [&]<class T>() {
    fill_uniform(static_cast<T*>(out.data_ptr()), out.numel(), low, high, seed,
                 [&](int64_t i) { return offset + (uint64_t)i; });
  });
}

void CpuBackend::random_uniform_rows(Tensor& out, const Tensor& row_counters, uint64_t seed) {
  check_random_rows_operands(out, row_counters);
  const int64_t C = out.size(1);
  const int64_t* rows = static_cast<const int64_t*>(row_counters.data_ptr());
  fill_uniform(static_cast<double*>(out.data_ptr()), out.numel(), 0.0, 1.0, seed,
               [&](int64_t i) { return (uint64_t)rows[i / C] + (uint64_t)(i % C); });
}

void CpuBackend::random_normal(Tensor& out, double mean, double std, uint64_t seed, uint64_t offset) {
  if (in_float32::random_normal(*this, out, mean, std, seed, offset)) return;
  dispatch_float(out.dtype(), "randn", [&]<class T>() {
    T* p = static_cast<T*>(out.data_ptr());
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) p[i] = static_cast<T>(mean + std * random_normal01(seed, offset + i));
  });
}

namespace {
// Instantiates `body` with a compile-time op so the switch leaves the inner loop.
template <class F>
void dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
#define SG_CASE(name) case UnaryOp::name: f(std::integral_constant<UnaryOp, UnaryOp::name>{}); return;
    SG_CASE(Neg) SG_CASE(Exp) SG_CASE(Log) SG_CASE(Sqrt) SG_CASE(Rsqrt) SG_CASE(Abs) SG_CASE(Tanh)
    SG_CASE(Sigmoid) SG_CASE(Relu) SG_CASE(GeluTanh) SG_CASE(GeluErf) SG_CASE(Silu) SG_CASE(Pow)
    SG_CASE(AddScalar) SG_CASE(MulScalar) SG_CASE(RsubScalar) SG_CASE(Reciprocal)
#undef SG_CASE
  }
}

template <class F>
void dispatch_binary(BinaryOp op, F&& f) {
  switch (op) {
#define SG_CASE(name) case BinaryOp::name: f(std::integral_constant<BinaryOp, BinaryOp::name>{}); return;
    SG_CASE(Add) SG_CASE(Sub) SG_CASE(Mul) SG_CASE(Div) SG_CASE(Maximum) SG_CASE(Minimum)
    SG_CASE(Eq) SG_CASE(Ne) SG_CASE(Lt) SG_CASE(Le) SG_CASE(Gt) SG_CASE(Ge)
#undef SG_CASE
  }
}
}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, double alpha) {
  if (in_float32::unary(*this, op, x, out, alpha)) return;
  dispatch_float(x.dtype(), "unary", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    T* yp = static_cast<T*>(out.data_ptr());
    const T a = static_cast<T>(alpha);
    dispatch_unary(op, [&](auto OP) {
      strided_rows<2>(out.shape(), {&out.strides(), &x.strides()}, [&](auto off, int64_t n, auto st) {
        T* y = yp + off[0];
        const T* xr = xp + off[1];
        if (st[0] == 1 && st[1] == 1)
          for (int64_t i = 0; i < n; i++) y[i] = unary_fn<T, cpu::VecMath>(OP.value, xr[i], a);
        else
          for (int64_t i = 0; i < n; i++) y[i * st[0]] = unary_fn<T, cpu::VecMath>(OP.value, xr[i * st[1]], a);
      });
    });
  });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& gy, Tensor& gx,
                                double alpha) {
  if (in_float32::unary_backward(*this, op, x, y, gy, gx, alpha)) return;
  // y may be undefined for ops whose derivative does not read it; use x in its place then.
  const Tensor& yy = y.defined() ? y : x;
  dispatch_float(x.dtype(), "unary_backward", [&]<class T>() {
    const T* xp = static_cast<const T*>(x.data_ptr());
    const T* yp = static_cast<const T*>(yy.data_ptr());
    const T* gyp = static_cast<const T*>(gy.data_ptr());
    T* gxp = static_cast<T*>(gx.data_ptr());
    const T a = static_cast<T>(alpha);
    dispatch_unary(op, [&](auto OP) {
      auto grad = [a](T g, T xv, T yv) -> T {
        return unary_grad<T, cpu::VecMath>(decltype(OP)::value, g, xv, yv, a);
      };
      strided_rows<4>(gx.shape(), {&gx.strides(), &x.strides(), &yy.strides(), &gy.strides()},
                      [&](auto off, int64_t n, auto st) {
                        T* gxr = gxp + off[0];
                        const T *xr = xp + off[1], *yr = yp + off[2], *gyr = gyp + off[3];
                        if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {  // contiguous: vectorises
                          for (int64_t i = 0; i < n; i++) {
                            const T g = gyr[i], xv = xr[i], yv = yr[i];
                            gxr[i] = grad(g, xv, yv);
                          }
                        } else {
                          for (int64_t i = 0; i < n; i++)
                            gxr[i * st[0]] = grad(gyr[i * st[3]], xr[i * st[1]], yr[i * st[2]]);
                        }
                      });
    });
  });
}

namespace {
// out = a op b with a of TA, b of TB and out of T, computed in compute_t<T> (float for bf16: one rounding, at the
// store); the operands widened as they are read.
template <class T, class TA, class TB>
void binary_loop(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  using C = compute_t<T>;
  const TA* ap = static_cast<const TA*>(a.data_ptr());
  const TB* bp = static_cast<const TB*>(b.data_ptr());
  T* op_ = static_cast<T*>(out.data_ptr());
  dispatch_binary(op, [&](auto OP) {
    strided_rows<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()}, [&](auto off, int64_t n, auto st) {
      T* o = op_ + off[0];
      const TA* x = ap + off[1];
      const TB* y = bp + off[2];
      if (st[0] == 1 && st[1] == 1 && st[2] == 1)
        for (int64_t i = 0; i < n; i++) o[i] = T(binary_fn<C>(OP.value, C(x[i]), C(y[i])));
      else if (st[0] == 1 && st[1] == 1 && st[2] == 0)
        for (int64_t i = 0; i < n; i++) o[i] = T(binary_fn<C>(OP.value, C(x[i]), C(y[0])));
      else
        for (int64_t i = 0; i < n; i++)
          o[i * st[0]] = T(binary_fn<C>(OP.value, C(x[i * st[1]]), C(y[i * st[2]])));
    });
  });
}
}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (check_binary_dtypes("binary", a, b, out)) {  // float32 out, one operand bf16
    if (a.dtype() == DType::BF16) binary_loop<float, bf16, float>(op, a, b, out);
    else binary_loop<float, float, bf16>(op, a, b, out);
    return;
  }
  dispatch_all(out.dtype(), [&]<class T>() { binary_loop<T, T, T>(op, a, b, out); });
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  dispatch_all(cond.dtype(), [&]<class C>() {
    dispatch_all(out.dtype(), [&]<class T>() {
      const C* cp = static_cast<const C*>(cond.data_ptr());
      const T* ap = static_cast<const T*>(a.data_ptr());
      const T* bp = static_cast<const T*>(b.data_ptr());
      T* op_ = static_cast<T*>(out.data_ptr());
      strided_rows<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                      [&](auto off, int64_t n, auto st) {
                        for (int64_t i = 0; i < n; i++)
                          op_[off[0] + i * st[0]] = cp[off[1] + i * st[1]] != C(0) ? ap[off[2] + i * st[2]]
                                                                                    : bp[off[3] + i * st[3]];
                      });
    });
  });
}

int64_t CpuBackend::count_nonfinite(const Tensor& x) {
  if (int64_t bad = 0; in_float32::count_nonfinite(*this, x, bad)) return bad;
  int64_t bad = 0;
  dispatch_float(x.dtype(), "count_nonfinite", [&]<class T>() {
    const T* p = static_cast<const T*>(x.data_ptr());
    strided_rows<1>(x.shape(), {&x.strides()}, [&](auto off, int64_t n, auto st) {
      int64_t local = 0;
      for (int64_t i = 0; i < n; i++) local += !std::isfinite(p[off[0] + i * st[0]]);
      if (local) {
#pragma omp atomic
        bad += local;
      }
    });
  });
  return bad;
}

}  // namespace skipgrad
