// Google Benchmark suite of the ops of the reference model (bench_util.h), at its shapes:
//   matmul/<name>/<NT|NN|TN>   the linear layers' forward (x·Wᵀ) and backward (dX = dY·W, dW = dYᵀ·X) products
//                               through skipgrad's matmul; sgemm/... the same call straight to cblas_sgemm
//   layer_norm, rms_norm, dyt, softmax, attention, rotary, cross_entropy, embedding: "fwd" (no grad) and "fwd_bwd"
//   (recorded forward + backward of a random upstream gradient; backward alone ≈ fwd_bwd − fwd)
//   adam: one optimizer step over the reference model's parameters (post_ln: ~11 M floats)
// Products report a GFLOP/s counter (2·m·n·k per product).
//
//   bench_ops [--threads=N] [google benchmark flags, e.g. --benchmark_filter=matmul]
// --threads sets OpenMP and OpenBLAS together (bench_util.h set_threads); without it both keep their defaults.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "bench_main.h"
#include "bench_util.h"
#include "nn/loss.h"
#include "nn/optim.h"

using namespace skipgrad;

namespace {

const bench::ReferenceShape kShape;

Tensor randn(const Shape& s, bool grad = false) {
  static Generator g(11);
  Tensor t = Tensor::randn(s, 0, 1, DType::F32, Device::cpu(), &g);
  if (grad) t.requires_grad_();
  return t;
}

void set_gflops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------- products of the linear layers

struct LinearShape {
  const char* name;
  int64_t rows, in, out;
};
// rows = B·T = 1024 tokens (B·S on the encoder side is the same here)
const LinearShape kLinears[] = {
    {"qkvo_256x256", 1024, 256, 256},
    {"fc1_256x1024", 1024, 256, 1024},
    {"fc2_1024x256", 1024, 1024, 256},
    {"output_256x1000", 1024, 256, 1000},
};

// Which product of y = x·Wᵀ: forward Y = X·Wᵀ ("NT"), dX = dY·W ("NN"), dW = dYᵀ·X ("TN").
enum class Product { Forward, GradInput, GradWeight };
struct ProductOperands {
  Tensor a, b;
  bool ta, tb;
  int64_t m, n, k;
};
ProductOperands operands(const LinearShape& l, Product p) {
  switch (p) {
    case Product::Forward: return {randn({l.rows, l.in}), randn({l.out, l.in}), false, true, l.rows, l.out, l.in};
    case Product::GradInput: return {randn({l.rows, l.out}), randn({l.out, l.in}), false, false, l.rows, l.in, l.out};
    case Product::GradWeight:
      return {randn({l.rows, l.out}), randn({l.rows, l.in}), true, false, l.out, l.in, l.rows};
  }
  return {};
}

void BM_matmul(benchmark::State& state, LinearShape l, Product p) {
  NoGradGuard ng;
  ProductOperands o = operands(l, p);
  for (auto _ : state) benchmark::DoNotOptimize(matmul(o.a, o.b, o.ta, o.tb).data_ptr());
  set_gflops(state, 2.0 * o.m * o.n * o.k);
}

void BM_sgemm(benchmark::State& state, LinearShape l, Product p) {
  ProductOperands o = operands(l, p);
  Tensor c = Tensor::empty({o.m, o.n});
  const int lda = o.ta ? (int)o.m : (int)o.k, ldb = o.tb ? (int)o.k : (int)o.n;
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, o.ta ? CblasTrans : CblasNoTrans, o.tb ? CblasTrans : CblasNoTrans, o.m, o.n, o.k,
                1.0f, o.a.data<float>(), lda, o.b.data<float>(), ldb, 0.0f, c.data<float>(), o.n);
    benchmark::ClobberMemory();
  }
  set_gflops(state, 2.0 * o.m * o.n * o.k);
}

// ---------------------------------------------------------------- fused ops, forward and forward+backward

// Runs `forward` on leaves `inputs` under no-grad ("fwd") or recorded and followed by backward with a fixed
// random upstream gradient ("fwd_bwd"); the leaves' gradients are dropped every iteration so nothing accumulates.
template <class F>
void run_op(benchmark::State& state, bool with_backward, std::vector<Tensor> inputs, F forward) {
  if (!with_backward) {
    NoGradGuard ng;
    for (auto _ : state) benchmark::DoNotOptimize(forward(inputs).data_ptr());
    return;
  }
  Tensor upstream;
  {
    NoGradGuard ng;
    Tensor y = forward(inputs);
    upstream = y.dim() == 0 ? Tensor::scalar(1.0) : randn(y.shape());
  }
  for (auto _ : state) {
    Tensor y = forward(inputs);
    backward(y, upstream);
    for (auto& t : inputs)
      if (t.requires_grad()) t.zero_grad();
  }
}

void BM_layer_norm(benchmark::State& state, bool bwd) {  // [B·T, d]
  run_op(state, bwd, {randn({1024, 256}, true), randn({256}, true), randn({256}, true)},
         [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); });
}

void BM_rms_norm(benchmark::State& state, bool bwd) {  // [B·T, d], the --norm rms_norm variant of every norm
  run_op(state, bwd, {randn({1024, 256}, true), randn({256}, true)},
         [](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-5); });
}

void BM_dyt(benchmark::State& state, bool bwd) {  // [B·T, d], the --norm dyt variant of every norm
  run_op(state, bwd, {randn({1024, 256}, true), randn({1}, true), randn({256}, true), randn({256}, true)},
         [](const std::vector<Tensor>& in) { return dyt(in[0], in[1], in[2], in[3]); });
}

// The FFN's activations on its hidden layer [B·T, d_ffn]: --activation gelu (erf), swiglu's silu, GPT-2's tanh GELU
void BM_activation(benchmark::State& state, bool bwd, Tensor (*act)(const Tensor&)) {
  run_op(state, bwd, {randn({1024, 1024}, true)}, [act](const std::vector<Tensor>& in) { return act(in[0]); });
}
Tensor gelu_erf(const Tensor& x) { return gelu(x, GeluApprox::Erf); }
Tensor gelu_tanh(const Tensor& x) { return gelu(x, GeluApprox::Tanh); }
Tensor silu_of(const Tensor& x) { return silu(x); }
Tensor tanh_of(const Tensor& x) { return skipgrad::tanh(x); }

void BM_softmax(benchmark::State& state, bool bwd) {  // attention scores [B, H, T, T]
  run_op(state, bwd, {randn({32, 4, 32, 32}, true)},
         [](const std::vector<Tensor>& in) { return softmax(in[0], -1); });
}

// ScoreBias::Alibi: ALiBi's bias inside the softmax (the paper's slopes of 4 heads; positions 2..T+1 in every row).
// ScoreBias::Learned: an additive bias [B, H, T, T] that requires grad, a view of a [B, T, T, H] tensor as T5's
// bias is (RelativePositionBias), through AttentionOptions::bias.
enum class ScoreBias { None, Alibi, Learned };
void BM_attention(benchmark::State& state, bool bwd, bool causal, ScoreBias extra) {  // q, k, v [B, H, T, d_h]
  const Shape s{32, 4, 32, 64};
  AttentionOptions opt;
  opt.causal = causal;
  if (extra == ScoreBias::Alibi) {
    opt.alibi_slopes = Tensor::from_vector<float>({0.25f, 0.0625f, 0.015625f, 0.00390625f}, {4});
    std::vector<int64_t> pos(32 * 32);
    for (int64_t i = 0; i < (int64_t)pos.size(); i++) pos[i] = 2 + i % 32;
    opt.query_positions = opt.key_positions = Tensor::from_vector(pos, {32, 32});
  }
  std::vector<Tensor> inputs = {randn(s, true), randn(s, true), randn(s, true)};
  if (extra == ScoreBias::Learned) inputs.push_back(randn({32, 32, 32, 4}, true));
  run_op(state, bwd, inputs, [opt](const std::vector<Tensor>& in) {
    AttentionOptions o = opt;
    if (in.size() > 3) o.bias = in[3].permute({0, 3, 1, 2});
    return attention(in[0], in[1], in[2], Tensor(), o);
  });
  // Q·Kᵀ and P·V: 2 · 2·B·H·T·T·d_h; backward adds twice that
  set_gflops(state, (bwd ? 3.0 : 1.0) * 2 * 2.0 * 32 * 4 * 32 * 32 * 64);
}

// RoPE of q [B, H, T, d_h] seen as heads of a projection [B, T, H·d_h], as MultiHeadAttention rotates it; the
// angles [B, T, d_h/2] of positions 0..T-1
void BM_rotary(benchmark::State& state, bool bwd) {
  const int64_t B = 32, H = 4, T = 32, dh = 64;
  std::vector<float> c(B * T * dh / 2), s(c.size());
  for (int64_t i = 0; i < (int64_t)c.size(); i++) {
    const int64_t t = i / (dh / 2) % T, j = i % (dh / 2);
    c[i] = (float)std::cos(t * std::pow(10000.0, -2.0 * j / dh));
    s[i] = (float)std::sin(t * std::pow(10000.0, -2.0 * j / dh));
  }
  run_op(state, bwd,
         {randn({B, T, H, dh}, true), Tensor::from_vector(c, {B, T, dh / 2}), Tensor::from_vector(s, {B, T, dh / 2})},
         [](const std::vector<Tensor>& in) { return rotary(in[0].transpose(1, 2), in[1], in[2]); });
  state.SetBytesProcessed(state.iterations() * B * H * T * dh * 4 * (bwd ? 4 : 2));  // x read, y written (and back)
}

void BM_cross_entropy(benchmark::State& state, bool bwd) {  // logits [B·T, V], fairseq label smoothing 0.1
  static Generator g(5);
  Tensor targets = Tensor::rand({1024}, 1, 1000, DType::F64, Device::cpu(), &g).to(DType::I64);
  run_op(state, bwd, {randn({1024, 1000}, true)}, [targets](const std::vector<Tensor>& in) {
    return nn::label_smoothed_nll(in[0], targets, kShape.pad_id, kShape.label_smoothing).loss;
  });
}

void BM_embedding(benchmark::State& state, bool bwd) {  // E [V, d], ids [B, T]; backward is a scatter-add
  Tensor ids = bench::reference_batch().src;
  run_op(state, bwd, {randn({1000, 256}, true)},
         [ids](const std::vector<Tensor>& in) { return embedding(in[0], ids, kShape.pad_id); });
}

void BM_adam(benchmark::State& state) {
  manual_seed(1);
  nn::Transformer model(bench::reference_config("post_ln"));
  bench::Batch b = bench::reference_batch();
  nn::label_smoothed_nll(model.forward(b.src, b.tgt_in), b.tgt_out, kShape.pad_id, kShape.label_smoothing)
      .loss.backward();
  nn::Adam opt(model.named_parameters());
  for (auto _ : state) opt.step();  // the gradients stay; every step reads and writes p, g, m, v
  state.counters["params"] = (double)model.num_parameters();
  // bytes moved per step: read p, g, m, v and write p, m, v (float32)
  state.SetBytesProcessed(state.iterations() * model.num_parameters() * 7 * 4);
}

void register_all() {
  const std::pair<Product, const char*> products[] = {
      {Product::Forward, "NT"}, {Product::GradInput, "NN"}, {Product::GradWeight, "TN"}};
  for (const LinearShape& l : kLinears)
    for (auto [p, tag] : products) {
      std::string name = std::string(l.name) + "/" + tag;
      benchmark::RegisterBenchmark(("matmul/" + name).c_str(), BM_matmul, l, p)->UseRealTime()->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("sgemm/" + name).c_str(), BM_sgemm, l, p)->UseRealTime()->Unit(benchmark::kMicrosecond);
    }
  for (bool bwd : {false, true}) {
    const std::string tag = bwd ? "/fwd_bwd" : "/fwd";
    benchmark::RegisterBenchmark(("layer_norm/1024x256" + tag).c_str(), BM_layer_norm, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("rms_norm/1024x256" + tag).c_str(), BM_rms_norm, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("dyt/1024x256" + tag).c_str(), BM_dyt, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    using Act = Tensor (*)(const Tensor&);
    for (auto [name, act] : {std::pair<const char*, Act>{"gelu", gelu_erf}, {"gelu_tanh", gelu_tanh},
                             {"silu", silu_of}, {"tanh", tanh_of}})
      benchmark::RegisterBenchmark((std::string(name) + "/1024x1024" + tag).c_str(), BM_activation, bwd, act)
          ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("softmax/32x4x32x32" + tag).c_str(), BM_softmax, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (auto [name, causal, extra] : {std::tuple{"attention", false, ScoreBias::None},
                                       {"attention_causal", true, ScoreBias::None},
                                       {"attention_causal_alibi", true, ScoreBias::Alibi},
                                       {"attention_causal_bias", true, ScoreBias::Learned}})
      benchmark::RegisterBenchmark((std::string(name) + "/32x4x32x64" + tag).c_str(), BM_attention, bwd, causal, extra)
          ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("rotary/32x4x32x64" + tag).c_str(), BM_rotary, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("cross_entropy_ls/1024x1000" + tag).c_str(), BM_cross_entropy, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("embedding/1000x256_ids32x32" + tag).c_str(), BM_embedding, bwd)
        ->UseRealTime()->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("adam/reference_model", BM_adam)->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  // the graph's per-node gradient norms (an analysis feature) are off for timing, as in cuda_step and vs_libtorch:
  // fwd_bwd is the op's backward alone (until 2026-12-07 it included a norm of each gradient)
  skipgrad::set_track_grad_norms(false);
  return bench::bench_main(argc, argv, register_all);
}
