#include "bench_util.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <tuple>

#include "backends/threads.h"
#include "nn/checkpoint.h"
#include "tensor/random.h"

namespace bench {

using namespace skipgrad;

ReferenceShape named_shape(const std::string& name) {
  ReferenceShape s;
  if (name == "toy") {
    s.batch = 64, s.src_len = s.tgt_len = 16, s.vocab = 4000, s.d_model = 128, s.d_ff = 512;
  } else if (name == "small") {
    s.batch = 16, s.src_len = s.tgt_len = 16, s.d_model = 64, s.d_ff = 256, s.enc_layers = s.dec_layers = 2;
  } else if (name != "reference") {
    fail("named_shape", ": unknown model size '", name, "' (reference, toy or small)");
  }
  return s;
}

std::string shape_summary(const ReferenceShape& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "d=%lld, %lld heads, FFN %lld, %lld+%lld layers, V=%lld, batch %lldx%lld",
                (long long)s.d_model, (long long)s.heads, (long long)s.d_ff, (long long)s.enc_layers,
                (long long)s.dec_layers, (long long)s.vocab, (long long)s.batch, (long long)s.tgt_len);
  return buf;
}

nn::TransformerConfig reference_config(const std::string& topology, const ReferenceShape& s) {
  nn::TransformerConfig cfg;
  cfg.topology = topology;
  cfg.vocab = s.vocab;
  cfg.d_model = s.d_model;
  cfg.heads = s.heads;
  cfg.d_ff = s.d_ff;
  cfg.enc_layers = s.enc_layers;
  cfg.dec_layers = s.dec_layers;
  cfg.dropout = cfg.attn_dropout = cfg.act_dropout = 0;
  cfg.pad_id = s.pad_id;
  return cfg;
}

Batch reference_batch(const ReferenceShape& s, uint64_t seed) {
  Generator g(seed);
  auto ids = [&](int64_t T) {
    return Tensor::rand({s.batch, T}, 1, (double)s.vocab, DType::F64, Device::cpu(), &g).to(DType::I64);
  };
  Batch b;
  b.src = ids(s.src_len);
  b.tgt_in = ids(s.tgt_len);
  b.tgt_out = ids(s.tgt_len);
  return b;
}

void save_weights_and_batch(const std::string& path, const nn::Module& model, const Batch& batch,
                            const std::map<std::string, std::string>& metadata) {
  auto tensors = model.named_parameters();
  for (auto& b : model.named_buffers()) tensors.push_back(b);
  tensors.emplace_back("batch.src", batch.src);
  tensors.emplace_back("batch.tgt_in", batch.tgt_in);
  tensors.emplace_back("batch.tgt_out", batch.tgt_out);
  nn::save_safetensors(path, tensors, metadata);
}

void set_threads(int n) { skipgrad::set_num_threads(n); }
int omp_threads() { return omp_get_max_threads(); }
int blas_threads() { return openblas_get_num_threads(); }
std::string blas_corename() { return openblas_get_corename(); }

std::string runtime_info() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(name) + "=" + (v ? v : "(unset)");
  };
  std::ostringstream o;
  const int parallel = openblas_get_parallel();  // how this OpenBLAS was built: 0 serial, 1 pthreads, 2 OpenMP
  o << "openblas core " << blas_corename() << " ("
    << (parallel == 2 ? "OpenMP build" : parallel == 1 ? "pthread build" : "serial build")
    << "), openblas threads " << blas_threads() << ", omp threads "
    << omp_threads() << "; " << env("OMP_WAIT_POLICY") << " " << env("GLIBC_TUNABLES") << " "
    << env("MALLOC_ARENA_MAX") << " " << env("OPENBLAS_CORETYPE");
  return o.str();
}

// Matrix-product FLOPs of one forward pass; a product of [m,k]·[k,n] costs 2·m·n·k.
// Tokens: Ns = B·S source, Nt = B·T target; d model width, f FFN width, V vocabulary, Le/Ld layers.
//   encoder layer:  Q, K, V, O projections       4 · 2·Ns·d·d
//                   scores Q·Kᵀ and probs·V      2 · 2·B·S·S·d     (summed over heads: H·d_h = d)
//                   FFN fc1 and fc2              2 · 2·Ns·d·f
//   decoder layer:  self-attention               4 · 2·Nt·d·d + 2 · 2·B·T·T·d
//                   cross-attention Q, O on Nt   2 · 2·Nt·d·d;  K, V on the encoder output: 2 · 2·Ns·d·d
//                   cross scores and probs·V     2 · 2·B·T·S·d
//                   FFN                          2 · 2·Nt·d·f
//   output projection (tied embedding)           2·Nt·d·V
// Backward: every product C = A·B needs dA = dC·Bᵀ and dB = Aᵀ·dC, each as costly as the forward product (the
// embedding lookup has none; the encoder input needs no dX but that product is a gather, not a GEMM). So a
// training step costs 3x the forward. Biases, norms, softmax and the optimizer are not counted: GFLOP/s here
// means "useful matrix FLOPs per second", the number an sgemm ceiling compares with.
double forward_matmul_flops(const ReferenceShape& s) {
  const double B = s.batch, S = s.src_len, T = s.tgt_len, d = s.d_model, f = s.d_ff, V = s.vocab;
  const double Ns = B * S, Nt = B * T;
  const double enc_layer = 4 * 2 * Ns * d * d + 2 * 2 * B * S * S * d + 2 * 2 * Ns * d * f;
  const double dec_layer = 4 * 2 * Nt * d * d + 2 * 2 * B * T * T * d     // self-attention
                           + 2 * 2 * Nt * d * d + 2 * 2 * Ns * d * d       // cross-attention projections
                           + 2 * 2 * B * T * S * d                         // cross-attention products
                           + 2 * 2 * Nt * d * f;                           // FFN
  return s.enc_layers * enc_layer + s.dec_layers * dec_layer + 2 * Nt * d * V;
}

// The linear layers of a step: (rows, in, out) -> how many such layers. Each runs forward x·Wᵀ (NT),
// dX = dY·W (NN) and dW = dYᵀ·X (TN).
std::vector<GemmShape> linear_gemm_shapes(const ReferenceShape& s) {
  const int64_t Ns = s.batch * s.src_len, Nt = s.batch * s.tgt_len, d = s.d_model, f = s.d_ff;
  std::map<std::tuple<int64_t, int64_t, int64_t>, double> linears;
  linears[{Ns, d, d}] += 4.0 * s.enc_layers + 2.0 * s.dec_layers;  // encoder QKVO, decoder cross K, V
  linears[{Nt, d, d}] += 6.0 * s.dec_layers;                       // decoder self QKVO, cross Q, O
  linears[{Ns, d, f}] += s.enc_layers;
  linears[{Ns, f, d}] += s.enc_layers;
  linears[{Nt, d, f}] += s.dec_layers;
  linears[{Nt, f, d}] += s.dec_layers;
  linears[{Nt, d, s.vocab}] += 1;  // output projection
  std::vector<GemmShape> out;
  for (auto& [key, count] : linears) {
    auto [rows, in, o] = key;
    out.push_back({false, true, rows, o, in, count});   // Y[rows,o] = X[rows,in] · W[o,in]ᵀ
    out.push_back({false, false, rows, in, o, count});  // dX[rows,in] = dY[rows,o] · W[o,in]
    out.push_back({true, false, o, in, rows, count});   // dW[o,in] = dY[rows,o]ᵀ · X[rows,in]
  }
  return out;
}

SgemmCeiling gemm_ceiling(const ReferenceShape& s, const std::function<double(const GemmShape&)>& seconds) {
  SgemmCeiling c;
  double flops = 0, total = 0;
  for (const GemmShape& g : linear_gemm_shapes(s)) {
    const double f = g.flops(), t = seconds(g);
    flops += g.count * f;
    total += g.count * t;
    c.best_single_gflops = std::max(c.best_single_gflops, f / t * 1e-9);
    std::ostringstream o;
    o << g.m << "x" << g.n << "x" << g.k << " " << (g.trans_a ? "T" : "N") << (g.trans_b ? "T" : "N") << " x"
      << g.count << ": " << (int)(f / t * 1e-9) << " GFLOP/s";
    c.per_shape.push_back(o.str());
  }
  c.weighted_gflops = flops / total * 1e-9;
  return c;
}

namespace {
using Clock = std::chrono::steady_clock;

double time_gemm(const GemmShape& g, int repeats) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> A(g.m * g.k), Bm(g.k * g.n), C(g.m * g.n);
  for (auto& x : A) x = u(rng);
  for (auto& x : Bm) x = u(rng);
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans, tb = g.trans_b ? CblasTrans : CblasNoTrans;
  const int lda = g.trans_a ? g.m : g.k, ldb = g.trans_b ? g.k : g.n;
  double best = 1e30;
  for (int r = 0; r < repeats + 1; r++) {  // the first run warms caches and the thread pool
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, ta, tb, g.m, g.n, g.k, 1.0f, A.data(), lda, Bm.data(), ldb, 0.0f, C.data(), g.n);
    double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r > 0) best = std::min(best, sec);
  }
  return best;
}
}  // namespace

SgemmCeiling measure_sgemm_ceiling(const ReferenceShape& s, int repeats) {
  return gemm_ceiling(s, [repeats](const GemmShape& g) { return time_gemm(g, repeats); });
}

namespace {
volatile float fma_sink;  // keeps the chains' results alive
// Flops done by 12 independent chains of 8-wide FMAs, `iters` times each.
__attribute__((target("avx2,fma"))) double fma_chains(long iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(1.0f + 1e-7f * (float)i);
  const __m256 mul = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-7f);
  for (long k = 0; k < iters; k++)
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  float keep = 0, lanes[8];
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(lanes, acc[i]);
    keep += lanes[0];
  }
  fma_sink = keep;
  return (double)iters * 12 * 8 * 2;
}
}  // namespace

double measure_fma_peak(int threads) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
  const long iters = 20'000'000;
  double best = 0;
  for (int rep = 0; rep < 3; rep++) {
    auto t0 = Clock::now();
    std::vector<double> flops(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++) pool.emplace_back([&flops, t, iters] { flops[t] = fma_chains(iters); });
    for (auto& th : pool) th.join();
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    double total = 0;
    for (double f : flops) total += f;
    best = std::max(best, total / sec * 1e-9);
  }
  return best;
}

static double status_field_mib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::atof(line.c_str() + std::string(field).size()) / 1024.0;  // kB
  return 0;
}
double peak_rss_mib() { return status_field_mib("VmHWM:"); }
double current_rss_mib() { return status_field_mib("VmRSS:"); }

Summary summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  // linear interpolation between order statistics (numpy's default percentile)
  auto q = [&](double p) {
    double pos = p * (double)(v.size() - 1);
    size_t i = (size_t)pos;
    double frac = pos - (double)i;
    return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
  };
  s.median = q(0.5);
  s.p25 = q(0.25);
  s.p75 = q(0.75);
  s.min = v.front();
  s.max = v.back();
  return s;
}

}  // namespace bench
