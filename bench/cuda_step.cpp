// cuda_step: a training step of the issue-6 reference model on the GPU, timed with CUDA events, next to the cuBLAS
// GEMM ceiling measured in the same run. PyTorch's side is bench/pytorch_cuda_step.py; scripts/bench_cuda.sh runs
// both in turn and prints the table (method and results: docs/cuda_benchmark.md).
//
//   cuda_step [--topologies post_ln,pre_ln] [--precision fp32,tf32,bf16 | --fp32 | --tf32] [--warmup 5] [--rounds 5]
//             [--steps 10] [--weights-dir DIR] [--json] [--no-ceiling] [--device cuda|cpu] [--shape key=value,...]
//             [--profile DIR] [--positions sinusoidal|learned|rope|alibi|t5|none] [--norm layer_norm|rms_norm|dyt]
//
// Model: encoder-decoder, d=512, 8 heads, FFN 2048, 6+6 layers, shared vocabulary 8000, 64 sentence pairs x 64
// tokens a side, label smoothing 0.1, Adam (lr 1e-3), dropout 0, float32. --shape overrides batch, src_len,
// tgt_len, vocab, d_model, heads, d_ff, layers; with --device cpu and a tiny shape it is the smoke test of a machine
// without a GPU (host clock instead of events, OpenBLAS ceiling).
//
// What is measured, per (topology, precision):
//  - a step = forward, label-smoothed loss, backward, Adam update, zero_grad, all queued on the backend's one
//    stream; the loss is read (a host sync) only in warm-up and once after each round.
//  - ms/step: CUDA events recorded on the backend's stream around each of `rounds` rounds of `steps` steps; a round
//    gives one sample, its elapsed time / steps; median, quartiles, range over the rounds. host_ms: wall time the
//    host took to queue a round's steps, per step; close to ms/step means the host (launches), not the GPU, bounds.
//  - loss_initial: the first warm-up step's loss (initial weights); loss_after_update: the second's (one Adam step
//    later). With --weights-dir the weights and batch are written to
//    DIR/weights_<topology>[_<positions>][_dyt].safetensors (when absent; the positions' suffix unless sinusoidal),
//    which bench/pytorch_cuda_step.py loads: both must print the same losses.
//  - peak_alloc_mib: the caching allocator's peak bytes in use since the configuration began (parameters, gradients,
//    Adam moments, activations; in blocks' sizes, docs/cuda.md "Memory"); device_used_mib: total - free device memory
//    (cudaMemGetInfo) after the rounds: the process's footprint with the CUDA context and the allocator's cache.
//  - TFLOP/s = bench::step_matmul_flops (analytic matrix FLOPs of a step) / time per step; tokens/s counts target
//    tokens (batch x tgt_len).
//  - precision: fp32 (float32 throughout), tf32 (float32 products on TF32 tensor cores,
//    set_float32_matmul_precision) or bf16: bf16 mixed precision, the forward and loss inside an AutocastBF16 scope
//    (autograd/autocast.h: bf16 products and activations, float32 weights, norms and loss), what PyTorch's side runs
//    under torch.autocast for bf16.
//  - ceiling: cublasGemmEx alone on the linear layers' GEMMs (bench::linear_gemm_shapes, weighted by how often a
//    step runs each), timed with events: float32 in CUBLAS_COMPUTE_32F or _FAST_TF32, bf16 with bfloat16 operands
//    (cublas_ceiling), before and after the configurations; the better of the two is reported.
//  - with --profile DIR, one more step per configuration runs under the profiler (autograd/profiler.h; after the
//    timed ones, so they are not disturbed): DIR/profile_<topology>_<precision>.txt (device and host time per op
//    and per node name with layers as '*') and .trace.json (chrome://tracing, ui.perfetto.dev).
// --json prints one JSON object per line ("kind": "device", "step", "ceiling", "error"); the rest goes to stderr.
// A configuration that throws is reported ("error") and the others still run; the exit status is then 1.
// Without a CUDA device it prints "cuda_step: skipped: no CUDA device" and exits 0. --positions picks the model's
// position encoding (TransformerConfig::positions); bench/pytorch_cuda_step.py has sinusoidal, rope, alibi and t5 (give
// both the same --positions, e.g. through scripts/bench_cuda.sh's RUN_ARGS), so --weights-dir refuses the others.
// --norm picks the kind of every norm (TransformerConfig::norm; dyt: DyT with α0 0.5), named in each step's row;
// PyTorch's side has LayerNorm and DyT (give both the same --norm), so --weights-dir refuses rms_norm.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/graph.h"
#include "analysis/profile.h"
#include "autograd/autocast.h"
#include "autograd/profiler.h"
#include "autograd/tape.h"
#include "backends/backend.h"
#include "backends/cuda/cuda_backend.h"
#include "bench_util.h"
#include "examples/cli_lists.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "tensor/allocator.h"
#include "tensor/random.h"

namespace {

namespace sg = skipgrad;
using Clock = std::chrono::steady_clock;
constexpr double kMiB = 1024.0 * 1024.0;

void cuda_check(cudaError_t e, const char* what) {
  sg::check(e == cudaSuccess, "cuda_step", ": ", what, ": ", cudaGetErrorName(e), " ", cudaGetErrorString(e));
}
void cublas_check(cublasStatus_t s, const char* what) {
  sg::check(s == CUBLAS_STATUS_SUCCESS, "cuda_step", ": ", what, ": ", cublasGetStatusString(s));
}
sg::CudaBackend& cuda_backend() { return static_cast<sg::CudaBackend&>(sg::backend_for(sg::Device::cuda())); }

bench::ReferenceShape issue6_shape() {
  bench::ReferenceShape s;
  s.batch = s.src_len = s.tgt_len = 64;
  s.vocab = 8000, s.d_model = 512, s.heads = 8, s.d_ff = 2048, s.enc_layers = s.dec_layers = 6;
  return s;
}

// "batch=4,vocab=50,layers=2": each named field overrides the shape ("layers" sets both stacks).
void parse_shape(const std::string& spec, bench::ReferenceShape& s) {
  for (const std::string& item : cli_lists::split_list(spec)) {
    const size_t eq = item.find('=');
    sg::check(eq != std::string::npos, "cuda_step", ": --shape wants key=value, got '", item, "'");
    const std::string key = item.substr(0, eq);
    const int64_t v = std::stoll(item.substr(eq + 1));
    if (key == "batch") s.batch = v;
    else if (key == "src_len") s.src_len = v;
    else if (key == "tgt_len") s.tgt_len = v;
    else if (key == "vocab") s.vocab = v;
    else if (key == "d_model") s.d_model = v;
    else if (key == "heads") s.heads = v;
    else if (key == "d_ff") s.d_ff = v;
    else if (key == "layers") s.enc_layers = s.dec_layers = v;
    else sg::fail("cuda_step", ": unknown --shape key '", key, "'");
  }
}

// One JSON object on one line, fields in insertion order (scripts/bench_cuda.sh reads these).
class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& v) { return raw(key, quote(v)); }
  JsonLine& add(const std::string& key, double v) { return raw(key, num(v)); }
  JsonLine& add(const std::string& key, const std::vector<double>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + num(v[i]);
    return raw(key, s + "]");
  }
  JsonLine& add(const std::string& key, const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + quote(v[i]);
    return raw(key, s + "]");
  }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonLine& raw(const std::string& key, const std::string& value) {
    body_ += (body_.empty() ? "" : ", ") + quote(key) + ": " + value;
    return *this;
  }
  static std::string num(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
  }
  static std::string quote(const std::string& s) {
    std::string out;
    sg::append_json_string(out, s);
    return out;
  }
  std::string body_;
};

// Elapsed time of the work queued between start() and stop_ms(): CUDA events on the backend's stream, or the host
// clock on the CPU backend (whose ops have finished when they return). stop_ms() waits for the work.
class DeviceTimer {
 public:
  explicit DeviceTimer(sg::Device d) : cuda_(d.is_cuda()) {
    if (!cuda_) return;
    stream_ = cuda_backend().stream();
    cuda_check(cudaEventCreate(&start_), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  ~DeviceTimer() {
    if (cuda_) cudaEventDestroy(start_), cudaEventDestroy(stop_);
  }
  DeviceTimer(const DeviceTimer&) = delete;
  DeviceTimer& operator=(const DeviceTimer&) = delete;
  void start() {
    if (cuda_) cuda_check(cudaEventRecord(start_, stream_), "cudaEventRecord");
    t0_ = Clock::now();
  }
  double stop_ms() {
    if (!cuda_) return std::chrono::duration<double, std::milli>(Clock::now() - t0_).count();
    cuda_check(cudaEventRecord(stop_, stream_), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return ms;
  }
  cudaStream_t stream() const { return stream_; }

 private:
  bool cuda_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  Clock::time_point t0_;
};

// cublasGemmEx alone on the model's GEMM shapes, on the backend's stream, with its own handle. fp32 and tf32: float32
// operands and results in the precision's compute type. bf16: bfloat16 operands and results (CUDA_R_16BF, float32
// accumulation), what PyTorch's autocast runs and the tensor cores' own ceiling; where cuBLAS has no such GEMM (the
// emulator), float32 ones under CUBLAS_COMPUTE_32F_FAST_16BF, as skipgrad's bf16 option. `operands` says which.
// A shape's time is the best over 3 groups of `repeats` back-to-back calls (each group's time / repeats), after one
// warm-up call. Two calls of the largest shape go first in each group, untimed: they keep the GPU busy while the
// host queues the group, so the gaps between launches are not timed (a d x d GEMM in TF32 or bf16 takes about as
// long on an H200 as the host takes to launch one).
bench::SgemmCeiling cublas_ceiling(const bench::ReferenceShape& s, const std::string& precision,
                                   std::string& operands, int repeats = 10) {
  DeviceTimer timer(sg::Device::cuda());
  cublasHandle_t h = nullptr;
  cublas_check(cublasCreate(&h), "cublasCreate");
  struct Destroy {
    cublasHandle_t h;
    ~Destroy() { cublasDestroy(h); }
  } destroy{h};
  cublas_check(cublasSetStream(h, timer.stream()), "cublasSetStream");
  cudaDataType type = CUDA_R_32F;
  cublasComputeType_t compute = precision == "tf32"   ? CUBLAS_COMPUTE_32F_FAST_TF32
                                : precision == "bf16" ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                      : CUBLAS_COMPUTE_32F;
  sg::Generator gen(7);
  // A GEMM's operands on the device: random floats, or for bfloat16 the bytes 0x3F3F (0.746) throughout
  struct Operands {
    sg::Tensor a, b, c;
  };
  auto operands_for = [&](const bench::GemmShape& g) {
    const sg::Device dev = sg::Device::cuda();
    if (type == CUDA_R_16BF) {  // 2 bytes an element, in float32 tensors of half as many elements
      auto bf16 = [&](int64_t n) {
        sg::Tensor t = sg::Tensor::empty({(n + 1) / 2}, sg::DType::F32, dev);
        cuda_check(cudaMemsetAsync(t.data_ptr(), 0x3F, (size_t)n * 2, timer.stream()), "cudaMemsetAsync");
        return t;
      };
      return Operands{bf16(g.m * g.k), bf16(g.k * g.n), bf16(g.m * g.n)};
    }
    return Operands{sg::Tensor::rand({g.m * g.k}, -1, 1, sg::DType::F32, dev, &gen),
                    sg::Tensor::rand({g.k * g.n}, -1, 1, sg::DType::F32, dev, &gen),
                    sg::Tensor::empty({g.m * g.n}, sg::DType::F32, dev)};
  };
  // row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ (as backends/cuda/cuda_gemm.cu); data_ptr(), not
  // data<float>(), which is the host accessor and refuses a device tensor
  auto gemm = [&](const bench::GemmShape& g, Operands& x) {
    const int m = (int)g.m, n = (int)g.n, k = (int)g.k, lda = g.trans_a ? m : k, ldb = g.trans_b ? k : n;
    const float one = 1, zero = 0;
    return cublasGemmEx(h, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one,
                        x.b.data_ptr(), type, ldb, x.a.data_ptr(), type, lda, &zero, x.c.data_ptr(), type, n, compute,
                        CUBLAS_GEMM_DEFAULT);
  };
  const std::vector<bench::GemmShape> shapes = bench::linear_gemm_shapes(s);
  const bench::GemmShape big = *std::max_element(
      shapes.begin(), shapes.end(), [](const auto& x, const auto& y) { return x.flops() < y.flops(); });
  if (precision == "bf16") {  // bfloat16 operands where cuBLAS has them
    type = CUDA_R_16BF, compute = CUBLAS_COMPUTE_32F;
    Operands probe = operands_for(big);
    if (gemm(big, probe) != CUBLAS_STATUS_SUCCESS)
      type = CUDA_R_32F, compute = CUBLAS_COMPUTE_32F_FAST_16BF;
  }
  operands = type == CUDA_R_16BF ? "bfloat16" : "float32";
  Operands big_operands = operands_for(big);
  return bench::gemm_ceiling(s, [&](const bench::GemmShape& g) {
    Operands x = operands_for(g);
    cublas_check(gemm(g, x), "cublasGemmEx");
    double best = 1e30;
    for (int group = 0; group < 3; group++) {
      for (int busy = 0; busy < 2; busy++) cublas_check(gemm(big, big_operands), "cublasGemmEx");
      timer.start();
      for (int r = 0; r < repeats; r++) cublas_check(gemm(g, x), "cublasGemmEx");
      best = std::min(best, timer.stop_ms() * 1e-3 / repeats);
    }
    return best;
  });
}

struct Options {
  sg::Device device = sg::Device::cuda();
  bench::ReferenceShape shape = issue6_shape();
  std::vector<std::string> topologies{"post_ln", "pre_ln"};
  std::vector<std::string> precisions{"fp32", "tf32"};
  int warmup = 5, rounds = 5, steps = 10;
  std::string weights_dir, profile_dir;
  bool json = false, ceiling = true;
  sg::nn::PositionEncoding positions = sg::nn::PositionEncoding::Sinusoidal;
  sg::nn::NormKind norm = sg::nn::NormKind::LayerNorm;
};

struct Result {
  std::string topology, precision;
  std::vector<double> round_ms, host_ms;
  double loss_initial = NAN, loss_after_update = NAN, loss_final = NAN;
  double peak_alloc_mib = NAN, device_used_mib = NAN;
  // Per timed step: linear-layer GEMMs with the bias in a cuBLASLt epilogue, and those cuBLASLt declined.
  double fused_bias_gemms = NAN, unfused_bias_gemms = NAN;
  // Where a step's device time goes (medians over extra steps after the timed rounds): the forward with the
  // loss, the backward, the optimizer update with zeroing the gradients.
  double forward_ms = NAN, backward_ms = NAN, update_ms = NAN;
  int64_t params = 0;
};

bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// Builds the model (seed 1) and batch, moves them to the device, warms up, then times the rounds.
Result run_config(const Options& o, const std::string& topology, const std::string& precision) {
  Result res;
  res.topology = topology, res.precision = precision;
  sg::manual_seed(1);
  sg::nn::TransformerConfig cfg = bench::reference_config(topology, o.shape);
  cfg.positions = o.positions;
  cfg.norm = o.norm;
  sg::nn::Transformer model(cfg);
  bench::Batch batch = bench::reference_batch(o.shape);
  res.params = model.num_parameters();
  if (!o.weights_dir.empty()) {
    const std::string positions = sg::nn::position_encoding_name(o.positions);  // (a file per encoding)
    const std::string path = o.weights_dir + "/weights_" + topology +
                             (positions == "sinusoidal" ? "" : "_" + positions) +
                             (o.norm == sg::nn::NormKind::DynamicTanh ? "_dyt" : "") + ".safetensors";
    if (!file_exists(path)) bench::save_weights_and_batch(path, model, batch, {{"topology", topology}});
  }
  sg::CachingAllocator& alloc = sg::allocator_for(o.device);
  alloc.empty_cache();  // the previous configuration's blocks: device_used_mib is this one's footprint
  alloc.reset_peak();
  model.to(o.device);
  for (sg::Tensor* t : {&batch.src, &batch.tgt_in, &batch.tgt_out}) *t = t->to(o.device);
  sg::nn::Adam opt(model.named_parameters());  // lr 1e-3, betas (0.9, 0.999), eps 1e-8, as torch.optim.Adam
  sg::set_float32_matmul_precision(sg::parse_matmul_precision(precision));

  auto forward = [&] {
    sg::AutocastBF16 autocast(precision == "bf16");
    if (precision == "bf16") autocast.precast(model.parameters());  // the weights cast in one launch
    return sg::nn::label_smoothed_nll(model.forward(batch.src, batch.tgt_in), batch.tgt_out, o.shape.pad_id,
                                      o.shape.label_smoothing)
        .loss;
  };
  auto update = [&] {
    opt.step();
    opt.zero_grad();
  };
  auto step = [&] {
    sg::Tensor loss = forward();
    loss.backward();
    update();
    return loss.detach();
  };
  for (int i = 0; i < std::max(o.warmup, 2); i++) {
    const double l = step().item();
    if (i == 0) res.loss_initial = l;
    if (i == 1) res.loss_after_update = l;
  }
  DeviceTimer timer(o.device);
  sg::Tensor last;
  const int64_t fused0 = o.device.is_cuda() ? cuda_backend().fused_bias_gemms() : 0;
  const int64_t unfused0 = o.device.is_cuda() ? cuda_backend().unfused_bias_gemms() : 0;
  for (int r = 0; r < o.rounds; r++) {
    const auto t0 = Clock::now();
    timer.start();
    for (int i = 0; i < o.steps; i++) last = step();
    res.host_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / o.steps);
    res.round_ms.push_back(timer.stop_ms() / o.steps);
  }
  if (last.defined()) res.loss_final = last.item();
  if (o.device.is_cuda()) {
    const double timed_steps = std::max(1, o.rounds * o.steps);
    res.fused_bias_gemms = (cuda_backend().fused_bias_gemms() - fused0) / timed_steps;
    res.unfused_bias_gemms = (cuda_backend().unfused_bias_gemms() - unfused0) / timed_steps;
  }
  {  // the phases: 4 timers per step would each wait; one timer per phase, a step at a time
    std::vector<double> fwd, bwd, upd;
    DeviceTimer phase(o.device);
    for (int i = 0; i < std::max(o.steps, 3); i++) {
      phase.start();
      sg::Tensor loss = forward();
      fwd.push_back(phase.stop_ms());
      phase.start();
      loss.backward();
      bwd.push_back(phase.stop_ms());
      phase.start();
      update();
      upd.push_back(phase.stop_ms());
    }
    res.forward_ms = bench::summarize(fwd).median;
    res.backward_ms = bench::summarize(bwd).median;
    res.update_ms = bench::summarize(upd).median;
  }
  if (!o.profile_dir.empty()) {  // one step under the profiler, after the timed ones
    sg::Profiler prof(o.device);
    step();
    prof.stop();
    sg::save_profile(prof, o.profile_dir + "/profile_" + topology + "_" + precision, 40);
  }
  res.peak_alloc_mib = (double)alloc.stats().peak_bytes_in_use / kMiB;
  if (o.device.is_cuda()) {
    size_t free_bytes = 0, total_bytes = 0;
    cuda_check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    res.device_used_mib = (double)(total_bytes - free_bytes) / kMiB;
    sg::set_float32_matmul_precision(sg::MatmulPrecision::FP32);
  }
  return res;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      sg::check(i + 1 < argc, "cuda_step", ": ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--topologies") o.topologies = cli_lists::split_list(value());
    else if (a == "--precision") o.precisions = cli_lists::split_list(value());
    else if (a == "--fp32") o.precisions = {"fp32"};
    else if (a == "--tf32") o.precisions = {"tf32"};
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoi(value());
    else if (a == "--weights-dir") o.weights_dir = value();
    else if (a == "--profile") o.profile_dir = value();
    else if (a == "--json") o.json = true;
    else if (a == "--no-ceiling") o.ceiling = false;
    else if (a == "--device") o.device = sg::Device::parse(value());
    else if (a == "--shape") parse_shape(value(), o.shape);
    else if (a == "--positions") o.positions = sg::nn::parse_position_encoding(value());
    else if (a == "--norm") o.norm = sg::nn::parse_norm_kind(value());
    else sg::fail("cuda_step", ": unknown argument '", a, "' (see the comment at the top of bench/cuda_step.cpp)");
  }
  for (const auto& p : o.precisions)
    sg::check(p == "fp32" || p == "bf16" || (p == "tf32" && o.device.is_cuda()), "cuda_step", ": precision '", p,
              "' is not fp32, tf32 or bf16 (tf32 on cuda only)");
  sg::check(o.rounds > 0 && o.steps > 0, "cuda_step", ": --rounds and --steps must be positive");
  using P = sg::nn::PositionEncoding;
  const bool in_pytorch = o.positions == P::Sinusoidal || o.positions == P::Rope || o.positions == P::Alibi ||
                          o.positions == P::T5;
  sg::check(o.weights_dir.empty() || in_pytorch, "cuda_step", ": --weights-dir feeds bench/pytorch_cuda_step.py, "
            "whose model has sinusoidal, rope, alibi and t5 positions, not ", sg::nn::position_encoding_name(o.positions));
  sg::check(o.weights_dir.empty() || o.norm != sg::nn::NormKind::RMSNorm, "cuda_step", ": --weights-dir feeds "
            "bench/pytorch_cuda_step.py, whose model has LayerNorm or DyT, not ", sg::nn::norm_kind_name(o.norm));
  if (!o.profile_dir.empty()) std::filesystem::create_directories(o.profile_dir);
  if (!o.weights_dir.empty()) std::filesystem::create_directories(o.weights_dir);
  return o;
}

// The device in words: the GPU's name, SMs and memory, or the CPU's BLAS settings.
std::string device_name(sg::Device d) {
  if (!d.is_cuda()) return "cpu (" + bench::runtime_info() + ")";
  cudaDeviceProp p{};
  cuda_check(cudaGetDeviceProperties(&p, d.index), "cudaGetDeviceProperties");
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, " +
         std::to_string((long long)(p.totalGlobalMem / (1 << 20))) + " MiB";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse_options(argc, argv);
    if (o.device.is_cuda() && !sg::cuda_available()) {
      std::printf("cuda_step: skipped: no CUDA device\n");
      return 0;
    }
    sg::set_track_grad_norms(false);  // an analysis feature; off for timing
    const bench::ReferenceShape& s = o.shape;
    const double step_flops = bench::step_matmul_flops(s), tokens = (double)(s.batch * s.tgt_len);
    FILE* human = o.json ? stderr : stdout;
    const std::string device = device_name(o.device);
    if (o.json)
      std::printf("%s\n", JsonLine().add("kind", "device").add("framework", "skipgrad").add("device", device)
                              .add("batch", (double)s.batch).add("src_len", (double)s.src_len)
                              .add("tgt_len", (double)s.tgt_len).add("step_tflop", step_flops * 1e-12)
                              .str().c_str());
    std::fprintf(human, "# cuda_step on %s: %.1f GFLOP of matrix products per step, %g target tokens\n",
                 device.c_str(), step_flops * 1e-9, tokens);

    // the GEMM ceiling per precision, before and after the configurations: the better is kept. A failure (a cuBLAS
    // error, a sticky CUDA error left by a failed configuration) leaves the ceiling out, not the steps.
    std::vector<bench::SgemmCeiling> ceilings(o.precisions.size());
    std::vector<std::string> ceiling_operands(o.precisions.size(), "float32");
    auto measure_ceilings = [&](const char* when) {
      try {
        for (size_t i = 0; o.ceiling && i < o.precisions.size(); i++) {
          bench::SgemmCeiling c = o.device.is_cuda() ? cublas_ceiling(s, o.precisions[i], ceiling_operands[i])
                                                     : bench::measure_sgemm_ceiling(s);
          if (c.weighted_gflops > ceilings[i].weighted_gflops) ceilings[i] = c;
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cuda_step: the ceiling %s the configurations failed: %s\n", when, e.what());
        if (o.json)
          std::printf("%s\n", JsonLine().add("kind", "error").add("framework", "skipgrad").add("topology", "-")
                                  .add("precision", "ceiling").add("error", e.what()).str().c_str());
      }
    };
    measure_ceilings("before");
    // A configuration that fails (an error of the backend, out of memory) is reported and the others still run.
    std::vector<Result> results;
    bool failed = false;
    for (const auto& topology : o.topologies)
      for (const auto& precision : o.precisions) {
        std::fprintf(human, "# %s %s ...\n", topology.c_str(), precision.c_str());
        std::fflush(human);
        try {
          results.push_back(run_config(o, topology, precision));
        } catch (const std::exception& e) {
          failed = true;
          if (o.json)
            std::printf("%s\n", JsonLine().add("kind", "error").add("framework", "skipgrad").add("topology", topology)
                                    .add("precision", precision).add("error", e.what()).str().c_str());
          std::fprintf(human, "%s %s: FAILED: %s\n", topology.c_str(), precision.c_str(), e.what());
          std::fflush(stdout);
        }
      }
    measure_ceilings("after");

    for (size_t i = 0; o.ceiling && i < o.precisions.size(); i++) {
      const bench::SgemmCeiling& c = ceilings[i];
      if (o.json)
        std::printf("%s\n", JsonLine().add("kind", "ceiling").add("precision", o.precisions[i])
                                .add("operands", ceiling_operands[i])
                                .add("tflops", c.weighted_gflops * 1e-3)
                                .add("best_single_tflops", c.best_single_gflops * 1e-3)
                                .add("per_shape", c.per_shape).str().c_str());
      std::fprintf(human, "GEMM ceiling %s (%s operands): %.1f TFLOP/s weighted over the model's shapes (best single "
                   "%.1f)\n", o.precisions[i].c_str(), ceiling_operands[i].c_str(), c.weighted_gflops * 1e-3,
                   c.best_single_gflops * 1e-3);
    }
    for (const Result& r : results) {
      const bench::Summary t = bench::summarize(r.round_ms);
      const double tflops = step_flops / (t.median * 1e-3) * 1e-12;
      const size_t p = std::find(o.precisions.begin(), o.precisions.end(), r.precision) - o.precisions.begin();
      const double ceiling_tflops = o.ceiling ? ceilings[p].weighted_gflops * 1e-3 : NAN;
      if (o.json)
        std::printf("%s\n", JsonLine().add("kind", "step").add("framework", "skipgrad").add("topology", r.topology)
                                .add("norm", sg::nn::norm_kind_name(o.norm)).add("precision", r.precision)
                                .add("params", (double)r.params)
                                .add("warmup", (double)std::max(o.warmup, 2)).add("steps_per_round", (double)o.steps)
                                .add("round_ms", r.round_ms).add("host_ms", bench::summarize(r.host_ms).median)
                                .add("ms_median", t.median).add("ms_p25", t.p25).add("ms_p75", t.p75)
                                .add("ms_min", t.min).add("ms_max", t.max)
                                .add("tokens_per_s", tokens / (t.median * 1e-3)).add("tflops", tflops)
                                .add("peak_alloc_mib", r.peak_alloc_mib).add("device_used_mib", r.device_used_mib)
                                .add("loss_initial", r.loss_initial).add("loss_after_update", r.loss_after_update)
                                .add("loss_final", r.loss_final).add("fused_bias_gemms", r.fused_bias_gemms)
                                .add("unfused_bias_gemms", r.unfused_bias_gemms).add("forward_ms", r.forward_ms)
                                .add("backward_ms", r.backward_ms).add("update_ms", r.update_ms).str().c_str());
      std::fprintf(human,
                   "%s%s %s: %.2f ms/step [%.2f-%.2f] (host %.2f), %.0f tok/s, %.1f TFLOP/s (%.0f%% of the GEMM "
                   "ceiling), peak %.0f MiB (device %.0f MiB), loss %.6f -> %.6f -> %.6f, bias GEMMs per step "
                   "%.0f fused, %.0f declined by cuBLASLt; forward %.2f, backward %.2f, update %.2f ms\n",
                   r.topology.c_str(), o.norm == sg::nn::NormKind::LayerNorm ? "" : (std::string(" with ") +
                   sg::nn::norm_kind_name(o.norm)).c_str(), r.precision.c_str(), t.median, t.p25, t.p75,
                   bench::summarize(r.host_ms).median, tokens / (t.median * 1e-3), tflops,
                   100 * tflops / ceiling_tflops, r.peak_alloc_mib, r.device_used_mib, r.loss_initial,
                   r.loss_after_update, r.loss_final, r.fused_bias_gemms, r.unfused_bias_gemms, r.forward_ms,
                   r.backward_ms, r.update_ms);
    }
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());  // errors name their origin ("cuda_step: ...", "Transformer: ...")
    return 2;
  }
}
