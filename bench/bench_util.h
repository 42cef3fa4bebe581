// What every benchmark here shares: the reference model of issue 7, its batch, the thread controls, the analytic
// FLOP count of a step, the sgemm ceiling on the model's own shapes, run-environment text, and small statistics.
//
// Reference model: encoder-decoder, d=256, 4 heads, FFN 1024, 6+6 layers, shared vocabulary 1000, sinusoidal
// positions, batch 32 sentence pairs x 32 tokens a side, label smoothing 0.1, Adam, dropout 0. Every size is a
// field of ReferenceShape: bench/cuda_step.cpp runs the same model at issue 6's sizes.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nn/transformer.h"
#include "tensor/tensor.h"

namespace bench {

struct ReferenceShape {
  int64_t batch = 32, src_len = 32, tgt_len = 32;
  int64_t vocab = 1000, d_model = 256, heads = 4, d_ff = 1024, enc_layers = 6, dec_layers = 6;
  int64_t pad_id = 0;
  double label_smoothing = 0.1;  // fairseq's eps (see nn/loss.h)
};

// A model size by name, for vs_libtorch --model: "reference" (the defaults above), "toy" (the main job's model,
// scripts/main.sh: d 128, FFN 512, 6+6 layers, vocabulary 4000, 64 pairs of 16 tokens, about its 1024-token
// batches) or "small" (d 64, FFN 256, 2+2 layers, vocabulary 1000, 16 pairs of 16 tokens), where per-op costs weigh
// more than the GEMMs.
ReferenceShape named_shape(const std::string& name);
std::string shape_summary(const ReferenceShape& s);  // "d=256, 4 heads, FFN 1024, 6+6 layers, V=1000, batch 32x32"

// The reference model's config for a topology ("post_ln", "pre_ln", ...), dropout 0.
skipgrad::nn::TransformerConfig reference_config(const std::string& topology, const ReferenceShape& s = {});

// A fixed random batch: ids uniform in [1, vocab) (no padding, pad_id 0 never drawn), int64 [B, S] and [B, T].
struct Batch {
  skipgrad::Tensor src, tgt_in, tgt_out;
};
Batch reference_batch(const ReferenceShape& s = {}, uint64_t seed = 3);

// Writes the model's parameters and buffers by full name, and the batch as "batch.src", "batch.tgt_in",
// "batch.tgt_out", to one safetensors file: what the other frameworks' runners load (by skipgrad's names) so
// that every framework starts from the same weights and batch. The tensors may live on any device.
void save_weights_and_batch(const std::string& path, const skipgrad::nn::Module& model, const Batch& batch,
                            const std::map<std::string, std::string>& metadata = {});

// Sets the thread count of both OpenMP (our elementwise loops) and OpenBLAS (its own pthread pool), so that
// one number owns the cores. Returns what the libraries report afterwards.
void set_threads(int n);
int omp_threads();
int blas_threads();
std::string blas_corename();
// One line: OpenBLAS core and threads, OpenMP threads, OMP_WAIT_POLICY, GLIBC_TUNABLES, MALLOC_* variables.
std::string runtime_info();

// Analytic matrix-product FLOPs (2·m·n·k per product) of one forward pass of the reference model; a training
// step (forward + backward) is 3x this: see the derivation in bench_util.cpp.
double forward_matmul_flops(const ReferenceShape& s = {});
inline double step_matmul_flops(const ReferenceShape& s = {}) { return 3.0 * forward_matmul_flops(s); }

// The GEMMs of the model's linear layers in one training step, row-major C[m,n] = op(A[m,k]) · op(B[k,n]):
// forward x·Wᵀ (NT), dX = dY·W (NN), dW = dYᵀ·X (TN), each with how many times a step runs it.
struct GemmShape {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  double count = 0;  // how often a training step runs it
  double flops() const { return 2.0 * (double)m * (double)n * (double)k; }
};
std::vector<GemmShape> linear_gemm_shapes(const ReferenceShape& s = {});

// The GEMM ceiling: a GEMM library alone on linear_gemm_shapes, each weighted by how often a step runs it;
// GFLOP/s = their FLOPs / their times. `seconds(g)` returns the best time of one run of g (see
// measure_sgemm_ceiling for OpenBLAS, bench/cuda_step.cpp for cuBLAS).
struct SgemmCeiling {
  double weighted_gflops = 0;          // the ceiling a whole step could reach on its products
  double best_single_gflops = 0;       // the fastest single shape
  std::vector<std::string> per_shape;  // "M x N x K op: GFLOP/s" for the log
};
SgemmCeiling gemm_ceiling(const ReferenceShape& s, const std::function<double(const GemmShape&)>& seconds);
// cblas_sgemm, best time over `repeats` tries, with the current thread settings.
SgemmCeiling measure_sgemm_ceiling(const ReferenceShape& s = {}, int repeats = 5);

// The arithmetic ceiling of the cores: `threads` threads each issue independent 8-wide float FMAs on registers
// (12 chains, no memory traffic); GFLOP/s over all threads, best of 3. No kernel can do float math faster on this
// machine. 0 when the CPU has no AVX2+FMA.
double measure_fma_peak(int threads);

// Memory of this process from /proc/self/status, in MiB: VmHWM (peak resident) and VmRSS (now).
double peak_rss_mib();
double current_rss_mib();

// Statistics over a sample (copied, then sorted).
struct Summary {
  double median = 0, p25 = 0, p75 = 0, min = 0, max = 0;
  size_t n = 0;
};
Summary summarize(std::vector<double> v);

}  // namespace bench
