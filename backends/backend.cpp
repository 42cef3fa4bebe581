#include "backends/backend.h"

#include <atomic>
#include <climits>
#include <chrono>

#include "backends/cpu/cpu_backend.h"

namespace skipgrad {

#ifdef SKIPGRAD_WITH_CUDA
bool cuda_init();  // backends/cuda/cuda_device.cu: registers the CUDA backend when a device is present
#endif

namespace {
Backend* g_cuda_backend = nullptr;

// Loads the CUDA backend the first time it is asked for (once, thread-safe).
bool ensure_cuda() {
#ifdef SKIPGRAD_WITH_CUDA
  static const bool loaded = cuda_init();
  (void)loaded;
#endif
  return g_cuda_backend != nullptr;
}
}  // namespace

Backend& backend_for(Device d) {
  if (d.is_cpu()) {
    static CpuBackend cpu;
    return cpu;
  }
#ifdef SKIPGRAD_WITH_CUDA
  if (!ensure_cuda())
    fail("backend", ": device ", d.str(), " requested but no CUDA device present");
  if (d.index != 0)
    fail("backend", ": device ", d.str(), " requested but only cuda:0 is supported so far");
#else
  if (!ensure_cuda())
    fail("backend", ": device ", d.str(),
         " requested but this build has no CUDA backend (configure with -DSKIPGRAD_CUDA=ON)");
#endif
  return *g_cuda_backend;
}

void register_backend(Device::Kind kind, Backend* b) {
  if (kind == Device::Kind::CUDA) g_cuda_backend = b;
}

bool cuda_available() { return ensure_cuda(); }

namespace {
std::atomic<MatmulPrecision> g_matmul_precision{MatmulPrecision::FP32};
}
void set_float32_matmul_precision(MatmulPrecision p) { g_matmul_precision = p; }
MatmulPrecision float32_matmul_precision() { return g_matmul_precision; }
MatmulPrecision parse_matmul_precision(const std::string& s) {
  if (s == "fp32") return MatmulPrecision::FP32;
  if (s == "tf32") return MatmulPrecision::TF32;
  if (s == "bf16") return MatmulPrecision::BF16;
  fail("matmul_precision", ": '", s, "' is not fp32, tf32 or bf16");
}
const char* matmul_precision_name(MatmulPrecision p) {
  return p == MatmulPrecision::TF32 ? "tf32" : p == MatmulPrecision::BF16 ? "bf16" : "fp32";
}

namespace {
ScanLayout scan_layout(const Tensor& x, int64_t dim) {
  ScanLayout l;
  l.n = x.size(dim);
  for (int64_t d = 0; d < dim; d++) l.outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); d++) l.inner *= x.size(d);
  return l;
}
}  // namespace

ScanLayout cumsum_layout(const Tensor& x, int64_t dim, const Tensor& out) {
  if (!(x.is_contiguous() && out.is_contiguous() && x.shape() == out.shape() && x.dtype() == out.dtype()))
    fail("cumsum", ": expected contiguous x and out of one shape and dtype, got ", x.meta_str(), " and ",
         out.meta_str());
  return scan_layout(x, dim);
}

ScanLayout topk_layout(const Tensor& x, int64_t dim, int64_t k, const Tensor& out) {
  const bool dim_ok = dim >= 0 && dim < x.dim();
  Shape out_shape = x.shape();
  if (dim_ok) out_shape[dim] = k;
  if (!(dim_ok && k >= 0 && k <= x.size(dim) && x.is_contiguous() && x.dtype() != DType::BF16 &&
        out.is_contiguous() && out.dtype() == DType::I64 && out.shape() == out_shape))
    fail("topk", ": expected contiguous x (not bfloat16) with 0 <= k <= its size at dim ", dim, ", and int64 out "
         "of its shape with size k at dim; got k ", k, ", ", x.meta_str(), " and ", out.meta_str());
  return scan_layout(x, dim);
}

void check_random_rows_operands(const Tensor& out, const Tensor& row_counters) {
  const bool ok = out.dtype() == DType::F64 && out.dim() == 2 && out.is_contiguous() &&
                  row_counters.dtype() == DType::I64 && row_counters.dim() == 1 && row_counters.is_contiguous() &&
                  row_counters.size(0) == out.size(0) && row_counters.device() == out.device();
  if (!ok)
    fail("rand_rows", ": expected a contiguous float64 [R, C] output and contiguous int64 [R] row counters on its "
         "device, got ", out.meta_str(), " and ", row_counters.meta_str());
}

void check_dropout_operands(const Tensor& x, const Tensor& y) {
  if (!(x.is_contiguous() && y.is_contiguous() && x.shape() == y.shape() && x.dtype() == y.dtype()))
    fail("dropout", ": expected contiguous x and y of one shape and dtype, got ", x.meta_str(), " and ",
         y.meta_str());
}

void check_rotary_operands(const Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& out) {
  const bool shapes = x.dim() == 4 && x.size(3) % 2 == 0 && out.shape() == x.shape() && cos.dim() == 3 &&
                      cos.shape() == sin.shape() && (cos.size(0) == x.size(0) || cos.size(0) == 1) &&
                      cos.size(1) == x.size(2) && cos.size(2) == x.size(3) / 2;
  const DType angles = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  const bool dtypes = is_floating(x.dtype()) && out.dtype() == x.dtype() && cos.dtype() == angles &&
                      sin.dtype() == angles;
  const bool places = out.device() == x.device() && cos.device() == x.device() && sin.device() == x.device();
  if (!(shapes && dtypes && places && cos.is_contiguous() && sin.is_contiguous()))
    fail("rotary", ": expected x and out [B, H, T, dh] (dh even) of one floating dtype, cos and sin contiguous ",
         "[B or 1, T, dh/2] in ", dtype_name(angles), " on x's device; got x ", x.meta_str(), ", cos ",
         cos.meta_str(), ", sin ", sin.meta_str(), ", out ", out.meta_str());
}

void check_softmax_mask(const char* op, const Tensor& x, const SoftmaxMask& mask) {
  const int64_t cols = x.dim() ? x.shape().back() : 1;
  const int64_t rows = cols ? x.numel() / cols : 0;
  check(mask.causal_queries >= 0, op, ": causal_queries must be >= 0, got ", mask.causal_queries);
  check(mask.causal_queries == 0 || rows % mask.causal_queries == 0, op, ": ", rows,
        " rows are not blocks of causal_queries = ", mask.causal_queries);
  if (mask.key_padding.defined()) {
    const Tensor& pad = mask.key_padding;
    if (!(pad.dtype() == DType::I64 && pad.is_contiguous() && pad.device() == x.device()))
      fail(op, ": key_padding must be contiguous int64 on ", x.device().str(), ", got ", pad.meta_str());
    check(mask.rows_per_batch > 0 && rows % mask.rows_per_batch == 0 &&
              pad.numel() == rows / mask.rows_per_batch * cols,
          op, ": key_padding ", pad.shape(), " does not give one row of ", cols, " columns per ",
          mask.rows_per_batch, " of x's ", rows, " rows");
  }
  if (!mask.alibi_slopes.defined() && !mask.query_positions.defined() && !mask.key_positions.defined()) return;
  // ALiBi: rows = B*H*Tq with H from the slopes, Tq and B from the query positions
  const Tensor &sl = mask.alibi_slopes, &qp = mask.query_positions, &kp = mask.key_positions;
  const DType slope_dtype = x.dtype() == DType::BF16 ? DType::F32 : x.dtype();
  auto on_x = [&](const Tensor& t, DType dtype, int64_t dim) {
    return t.defined() && t.dtype() == dtype && t.dim() == dim && t.is_contiguous() && t.device() == x.device();
  };
  const bool ok = on_x(sl, slope_dtype, 1) && on_x(qp, DType::I64, 2) && on_x(kp, DType::I64, 2) &&
                  kp.size(1) == cols && kp.size(0) == qp.size(0) && rows == qp.numel() * sl.numel() &&
                  (mask.rows_per_batch == 0 || mask.rows_per_batch == sl.numel() * qp.size(1));
  if (!ok)
    fail(op, ": ALiBi expects contiguous alibi_slopes [H] in ", dtype_name(slope_dtype), ", query_positions [B, Tq] ",
         "and key_positions [B, Tk = ", cols, "] int64, on ", x.device().str(), ", with B*H*Tq = x's ", rows,
         " rows; got slopes ", sl.meta_str(), ", query positions ", qp.meta_str(), ", key positions ", kp.meta_str());
}

bool check_binary_dtypes(const char* op, const Tensor& a, const Tensor& b, const Tensor& out) {
  if (a.dtype() == out.dtype() && b.dtype() == out.dtype()) return false;
  if (out.dtype() != DType::F32 || !float32_with_bf16(a.dtype(), b.dtype()))
    fail(op, ": operands ", a.meta_str(), " and ", b.meta_str(), " for ", out.meta_str(),
         ": expected one dtype, or a float32 and a bfloat16 operand for a float32 result");
  return true;
}

void check_gemm_dtypes(const char* op, const GemmArgs& g) {
  if (g.dtype != DType::F32 && g.dtype != DType::F64 && g.dtype != DType::BF16)
    fail(op, ": expected float32, float64 or bfloat16, got ", dtype_name(g.dtype));
  if (g.c_float32 && g.dtype != DType::BF16)
    fail(op, ": a float32 result of ", dtype_name(g.dtype), " operands was asked for; only bfloat16 operands have one");
}

void check_gemm_sizes(const char* op, const GemmArgs& g, const char* library) {
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch})
    if (v < 0 || v > INT_MAX)
      fail(op, ": size ", v, " does not fit ", library, "'s int (m=", g.m, " n=", g.n, " k=", g.k, " lda=", g.lda,
           " ldb=", g.ldb, " ldc=", g.ldc, " batch=", g.batch, ")");
}

void Backend::gemm_bias(const GemmArgs& args, const Tensor& bias, Tensor& c) {
  // C = bias on every row, then C = op(A) op(B) + 1 * C.
  copy(make_view(bias, {args.m, args.n}, {0, 1}, bias.offset()), c);
  GemmArgs g = args;
  g.beta = 1;
  gemm(g);
}

void Backend::gemm_bias_grad(const GemmArgs& args, const Tensor& a, Tensor& bias_grad) {
  gemm(args);
  // op(A)'s rows are A's columns when A is read transposed: sum over A's dim 0, else over its dim 1.
  const bool t = args.trans_a;
  Tensor out = make_view(bias_grad, t ? Shape{1, args.m} : Shape{args.m, 1}, {1, 1}, bias_grad.offset());
  reduce(ReduceOp::Sum, a, {t, !t}, out);
}

void Backend::copy_many(const std::vector<const Tensor*>& srcs, const std::vector<Tensor*>& dsts) {
  check(srcs.size() == dsts.size(), "copy_many", ": ", srcs.size(), " sources for ", dsts.size(), " destinations");
  for (size_t i = 0; i < srcs.size(); i++) {
    if (srcs[i]->shape() != dsts[i]->shape())
      fail("copy_many", ": pair ", i, " has shapes ", srcs[i]->meta_str(), " and ", dsts[i]->meta_str());
    copy(*srcs[i], *dsts[i]);
  }
}

void check_scale_many(const std::vector<Tensor*>& ts, const Tensor& scale) {
  const char* op = "scale_many";
  check(scale.defined() && scale.numel() == 1 && is_floating(scale.dtype()), op,
        ": the scale must be a floating tensor of one element, got ", scale.defined() ? scale.meta_str() : "none");
  for (size_t i = 0; i < ts.size(); i++) {
    check(ts[i]->defined() && is_floating(ts[i]->dtype()), op, ": tensor ", i, " must be a floating tensor, got ",
          ts[i]->defined() ? ts[i]->meta_str() : "none");
    check(ts[i]->device() == scale.device(), op, ": tensor ", i, " is on ", ts[i]->device().str(),
          ", the scale on ", scale.device().str());
  }
}

void Backend::scale_many(const std::vector<Tensor*>& ts, const Tensor& scale) {
  check_scale_many(ts, scale);
  // The scale in each tensor's compute dtype (one rounding, as MulScalar's float(a)): float32 for bf16 tensors,
  // which are widened, multiplied and rounded once, as the GPU kernel does (a bf16 scale was rounded to 8 bits).
  std::vector<Tensor> per_dtype;
  auto scale_in = [&](DType dt) {
    for (const Tensor& c : per_dtype)
      if (c.dtype() == dt) return c;
    Tensor s = Tensor::empty({}, dt, scale.device());  // 0-d: broadcasts to any shape, a 0-d parameter's too
    copy(scale.reshape({}), s);
    per_dtype.push_back(s);
    return s;
  };
  for (Tensor* t : ts) {
    if (t->numel() == 0) continue;
    if (t->dtype() == DType::BF16) {
      Tensor wide = Tensor::empty(t->shape(), DType::F32, t->device());
      copy(*t, wide);
      binary(BinaryOp::Mul, wide, broadcast_to(scale_in(DType::F32), wide.shape(), "scale_many"), wide);
      copy(wide, *t);
      continue;
    }
    binary(BinaryOp::Mul, *t, broadcast_to(scale_in(t->dtype()), t->shape(), "scale_many"), *t);
  }
}

void check_norm_many(const std::vector<const Tensor*>& ts, const Tensor& out) {
  const char* op = "norm_many";
  check(out.defined() && out.dtype() == DType::F64 && out.is_contiguous() && out.numel() == (int64_t)ts.size(), op,
        ": out must be a contiguous float64 tensor of ", ts.size(), " elements, got ",
        out.defined() ? out.meta_str() : "none");
  for (size_t i = 0; i < ts.size(); i++) {
    check(ts[i]->defined() && is_floating(ts[i]->dtype()), op, ": tensor ", i, " must be a floating tensor, got ",
          ts[i]->defined() ? ts[i]->meta_str() : "none");
    check(ts[i]->device() == out.device(), op, ": tensor ", i, " is on ", ts[i]->device().str(), ", out on ",
          out.device().str());
  }
}

void Backend::adam_update_many(const std::vector<AdamTensors>& ts, double lr, double beta1, double beta2, double eps,
                               bool decoupled, int64_t step) {
  for (const AdamTensors& t : ts)
    adam_update(*t.param, *t.grad, *t.m, *t.v, lr, beta1, beta2, eps, t.weight_decay, decoupled, step);
}

namespace {
struct HostTimeMark final : Backend::TimeMark {
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
};
}  // namespace

std::unique_ptr<Backend::TimeMark> Backend::time_mark() { return std::make_unique<HostTimeMark>(); }

double Backend::elapsed_ms(const TimeMark& from, const TimeMark& to) {
  auto* a = dynamic_cast<const HostTimeMark*>(&from);
  auto* b = dynamic_cast<const HostTimeMark*>(&to);
  check(a && b, name(), ".elapsed_ms", ": the marks were not made by this backend");
  return std::chrono::duration<double, std::milli>(b->at - a->at).count();
}

}  // namespace skipgrad
