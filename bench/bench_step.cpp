// Google Benchmark suite of whole steps of the reference model (bench_util.h), for Post-LN and Pre-LN:
//   forward_eval/<topology>      forward + loss in no-grad mode
//   forward_recorded/<topology>  forward + loss recording the tape (then dropped): the forward of a training step
//   train_step/<topology>        forward + loss + backward + Adam step + zero_grad: one training step
//   train_step_track_norms/...   the same with the tape's per-node gradient-norm tracking on (the library default;
//                                every other benchmark here turns it off)
//   decode_greedy/<topology>/cache  examples/translate translate_batch, greedy, 32 source sentences of 32 tokens,
//                                with the KV cache (nn::Transformer::decode_step: one position per new token)
//   decode_greedy/<topology>/full   the same re-running the decoder on the whole prefix each step
//                                (DecodeOptions::use_cache = false). Both built only with SKIPGRAD_EXAMPLES; a random
//                                model rarely emits eos, so every sentence runs the full 1.2·32+10 = 48 steps (the
//                                out_tok/s counter shows it). The issue-7 target: full / cache time >= 3.
//   sample_tokens/<cut>          translate::sample_tokens on [64, 32000] log-probabilities (random, std 3): one
//                                sampling decoder's draw per row, cut by none, top-k 50, top-k 50 + top-p 0.9,
//                                top-p 0.9 alone (SKIPGRAD_EXAMPLES only)
// Counters: GFLOP/s of the analytic matrix products (bench_util.cpp forward_matmul_flops), target tokens/s.
//
//   bench_step [--threads=N] [google benchmark flags]
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "bench_main.h"
#include "bench_util.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "tensor/random.h"
#ifdef SKIPGRAD_BENCH_DECODE
#include "decode.h"
#endif

using namespace skipgrad;

namespace {

const bench::ReferenceShape kShape;

struct Fixture {
  std::unique_ptr<nn::Transformer> model;
  bench::Batch batch;
  explicit Fixture(const std::string& topology) {
    manual_seed(1);
    model = std::make_unique<nn::Transformer>(bench::reference_config(topology, kShape));
    batch = bench::reference_batch(kShape);
  }
  Tensor loss() {
    return nn::label_smoothed_nll(model->forward(batch.src, batch.tgt_in), batch.tgt_out, kShape.pad_id,
                                  kShape.label_smoothing)
        .loss;
  }
};

void set_counters(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_iteration * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tgt_tok/s"] = benchmark::Counter((double)(kShape.batch * kShape.tgt_len),
                                                   benchmark::Counter::kIsIterationInvariantRate);
}

void BM_forward_eval(benchmark::State& state, std::string topology) {
  set_track_grad_norms(false);
  Fixture f(topology);
  NoGradGuard ng;
  for (auto _ : state) benchmark::DoNotOptimize(f.loss().item());
  set_counters(state, bench::forward_matmul_flops(kShape));
}

void BM_forward_recorded(benchmark::State& state, std::string topology) {
  set_track_grad_norms(false);
  Fixture f(topology);
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.loss().item());
    current_tape().clear();
  }
  set_counters(state, bench::forward_matmul_flops(kShape));
}

void BM_train_step(benchmark::State& state, std::string topology, bool track_norms) {
  set_track_grad_norms(track_norms);
  Fixture f(topology);
  nn::Adam opt(f.model->named_parameters());
  for (auto _ : state) {
    Tensor loss = f.loss();
    benchmark::DoNotOptimize(loss.item());
    loss.backward();
    opt.step();
    opt.zero_grad();
  }
  set_track_grad_norms(false);
  set_counters(state, bench::step_matmul_flops(kShape));
}

#ifdef SKIPGRAD_BENCH_DECODE
void BM_decode_greedy(benchmark::State& state, std::string topology, bool use_cache) {
  set_track_grad_norms(false);
  Fixture f(topology);
  f.model->eval();
  translate::DecodeOptions opt;  // greedy; bos 2, eos 3, pad 0
  opt.use_cache = use_cache;
  int64_t tokens = 0;
  for (auto _ : state) {
    auto out = translate::translate_batch(*f.model, f.batch.src, opt);
    for (auto& s : out) tokens += (int64_t)s.size();
  }
  state.counters["sentences/s"] =
      benchmark::Counter((double)kShape.batch, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["out_tok/s"] = benchmark::Counter((double)tokens, benchmark::Counter::kIsRate);
}

void BM_sample_tokens(benchmark::State& state, int64_t topk, double topp) {
  const int64_t R = 64, V = 32000;
  Generator init(1);
  const Tensor lp = skipgrad::log_softmax(skipgrad::mul(Tensor::randn({R, V}, 0, 1, DType::F32, Device::cpu(), &init), 3.0), -1);
  std::vector<int64_t> excluded(V, 0);
  excluded[0] = excluded[2] = 1;  // pad, bos
  const Tensor ex = Tensor::from_vector(excluded, {V});
  Generator gen(2);
  translate::DecodeOptions opt;
  opt.sampling = true, opt.sampling_topk = topk, opt.sampling_topp = topp, opt.gen = &gen;
  for (auto _ : state) benchmark::DoNotOptimize(translate::sample_tokens(lp, ex, opt));
  state.counters["rows/s"] = benchmark::Counter((double)R, benchmark::Counter::kIsIterationInvariantRate);
}
#endif

void register_all() {
  for (const char* topo : {"post_ln", "pre_ln"}) {
    const std::string t = topo;
    benchmark::RegisterBenchmark(("forward_eval/" + t).c_str(), BM_forward_eval, t)->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("forward_recorded/" + t).c_str(), BM_forward_recorded, t)
        ->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("train_step/" + t).c_str(), BM_train_step, t, false)
        ->UseRealTime()->Unit(benchmark::kMillisecond);
#ifdef SKIPGRAD_BENCH_DECODE
    for (bool cache : {true, false})
      benchmark::RegisterBenchmark(("decode_greedy/" + t + (cache ? "/cache" : "/full")).c_str(), BM_decode_greedy,
                                   t, cache)
          ->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
  }
  benchmark::RegisterBenchmark("train_step_track_norms/post_ln", BM_train_step, std::string("post_ln"), true)
      ->UseRealTime()->Unit(benchmark::kMillisecond);
#ifdef SKIPGRAD_BENCH_DECODE
  for (auto [name, topk, topp] : {std::tuple{"none", 0, 1.0}, {"topk50", 50, 1.0}, {"topk50_topp0.9", 50, 0.9},
                                  {"topp0.9", 0, 0.9}})
    benchmark::RegisterBenchmark((std::string("sample_tokens/") + name).c_str(), BM_sample_tokens, (int64_t)topk,
                                 topp)
        ->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
}

}  // namespace

int main(int argc, char** argv) { return bench::bench_main(argc, argv, register_all); }
