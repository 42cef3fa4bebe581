// skipgrad vs libtorch 1.13 (and, when a Python with a current `torch` is given, PyTorch eager and torch.compile)
// on the reference model of issue 7 (bench_util.h), Post-LN and Pre-LN, side by side.
//
//   vs_libtorch [--topologies post_ln,pre_ln] [--threads 1,2] [--rounds 10] [--steps 5] [--warmup 3]
//               [--python PATH | --no-python] [--no-compile] [--model reference|toy|small]
//               [--positions sinusoidal|rope|alibi|t5] [--norm layer_norm|dyt]
//       rope: RoPE in every self-attention; the libtorch and PyTorch models rotate q, k with rotate_half as Hugging
//       Face's LLaMA. alibi: ALiBi's bias in every self-attention; they add a [B, H, T, T] bias to the scores (PyTorch:
//       SDPA's float mask), as Hugging Face's BLOOM. t5: T5's relative-position bias (32 buckets up to distance 128,
//       a table per stack); they compute the buckets as Hugging Face's T5 and add the bias there too.
//       --norm dyt: DyT in every norm's place (α0 0.5); the libtorch and PyTorch models write it as its authors'
//       module does, tanh(alpha * x) * weight + bias.
//
// Method (docs/performance.md):
//  - The driver builds the skipgrad model (seed 1) and writes its parameters, buffers and a fixed batch to a
//    safetensors file. Every framework runs in its own worker process, started per (topology, thread count) with
//    OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS = n, and loads the weights BY NAME from that file.
//    Separate processes give each framework its own peak RSS and keep one framework's thread pools from running
//    against the other's.
//  - Loss check: each worker computes the loss of the batch from the initial weights; all must agree with
//    skipgrad's to a relative 1e-4. The loss after one Adam step is printed too (a check of backward + update).
//  - Timing: warm-up steps, then `rounds` rounds in which every worker runs `steps` training steps (forward, loss,
//    backward, Adam, zero_grad), the order of the workers rotating each round, so load changes on a shared machine
//    hit every framework alike. ms/step: median and IQR over all timed steps, min-max.
//  - GFLOP/s = analytic matrix FLOPs of a step (bench_util.cpp) / median step time; the ceiling is cblas_sgemm
//    on the model's linear-layer GEMMs, measured by the driver before and after the rounds (the better is kept);
//    the FMA peak is the cores' arithmetic ceiling (bench_util measure_fma_peak), which no kernel can pass.
//  - Speed-up column: (this framework's median ms/step) / (skipgrad's), i.e. skipgrad's throughput over its.
// Workers speak a line protocol on stdin/stdout: "loss" -> "loss L"; "steps K" -> "times t1..tK losses l1..lK";
// "rss" -> "rss PEAK_MIB START_MIB"; "quit". bench/pytorch_step.py implements the same protocol.
#include <cblas.h>
#include <omp.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "bench_util.h"
#include "examples/cli_lists.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"
#include "nn/optim.h"
#include "tensor/random.h"
#include "torch_reference.h"

extern char** environ;

namespace {

namespace sg = skipgrad;
using Clock = std::chrono::steady_clock;
bench::ReferenceShape kShape;  // --model (the reference model by default); workers get the same name
std::string kPositions = "sinusoidal";  // --positions; workers get the same
std::string kNorm = "layer_norm";       // --norm; workers get the same

// The reference config of `topology` with --positions and --norm.
sg::nn::TransformerConfig model_config(const std::string& topology) {
  sg::nn::TransformerConfig c = bench::reference_config(topology, kShape);
  c.positions = sg::nn::parse_position_encoding(kPositions);
  c.norm = sg::nn::parse_norm_kind(kNorm);
  return c;
}

// ================================================================ workers

// One framework's training step on the reference model and batch.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual double loss() = 0;  // loss of the batch, no update
  virtual double step() = 0;  // one training step; returns its loss
};

class SkipgradRunner : public Runner {
 public:
  SkipgradRunner(const std::string& topology, const sg::nn::SafetensorsFile& file)
      : model(model_config(topology)), opt(model.named_parameters()) {
    sg::set_track_grad_norms(false);  // an analysis feature; off for timing
    auto copy = [&](const std::vector<std::pair<std::string, sg::Tensor>>& named) {
      for (auto& [name, t] : named) {
        sg::Tensor src = file.find(name);
        sg::check(src.defined(), "vs_libtorch", ": weights file has no tensor ", name);
        sg::Tensor dst = t;  // a handle to the model's tensor
        dst.copy_(src);
      }
    };
    copy(model.named_parameters());
    copy(model.named_buffers());
    src = file.find("batch.src"), tgt_in = file.find("batch.tgt_in"), tgt_out = file.find("batch.tgt_out");
  }
  sg::Tensor loss_tensor() {
    return sg::nn::label_smoothed_nll(model.forward(src, tgt_in), tgt_out, kShape.pad_id, kShape.label_smoothing)
        .loss;
  }
  double loss() override {
    sg::NoGradGuard ng;
    return loss_tensor().item();
  }
  double step() override {
    sg::Tensor l = loss_tensor();
    double value = l.item();
    l.backward();
    opt.step();
    opt.zero_grad();
    return value;
  }

  sg::nn::Transformer model;
  sg::nn::Adam opt;
  sg::Tensor src, tgt_in, tgt_out;
};

torch::Tensor to_torch(const sg::Tensor& t) {
  sg::Tensor c = t.contiguous();
  std::vector<int64_t> shape(c.shape().begin(), c.shape().end());
  if (c.dtype() == sg::DType::I64) return torch::from_blob(c.data<int64_t>(), shape, torch::kLong).clone();
  sg::Tensor f = c.to(sg::DType::F32);
  return torch::from_blob(f.data<float>(), shape, torch::kFloat).clone();
}

class LibtorchRunner : public Runner {
 public:
  LibtorchRunner(const std::string& topology, const sg::nn::SafetensorsFile& file) : model(make_config(topology)) {
    torch::NoGradGuard ng;
    size_t copied = 0;
    auto copy = [&](const torch::OrderedDict<std::string, torch::Tensor>& named) {
      for (auto& item : named) {
        sg::Tensor src = file.find(item.key());
        sg::check(src.defined(), "vs_libtorch", ": weights file has no tensor ", item.key(), " for libtorch");
        torch::Tensor value = to_torch(src);
        sg::check(value.sizes() == item.value().sizes(), "vs_libtorch", ": shape of ", item.key(), " differs");
        item.value().copy_(value);
        copied++;
      }
    };
    copy(model->named_parameters());
    copy(model->named_buffers());
    size_t in_file = 0;  // every model tensor of the file must have found a place
    for (auto& [name, t] : file.tensors) in_file += name.rfind("batch.", 0) != 0;
    sg::check(copied == in_file, "vs_libtorch", ": libtorch model took ", copied, " tensors, the file has ", in_file);
    opt = std::make_unique<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-3));
    src = to_torch(file.find("batch.src")), tgt_in = to_torch(file.find("batch.tgt_in"));
    tgt_out = to_torch(file.find("batch.tgt_out"));
  }
  static bench::TorchModelConfig make_config(const std::string& topology) {
    sg::check(topology == "post_ln" || topology == "pre_ln", "vs_libtorch", ": libtorch model has post_ln and pre_ln, not ",
              topology);
    bench::TorchModelConfig c;
    c.vocab = kShape.vocab, c.d_model = kShape.d_model, c.heads = kShape.heads, c.d_ff = kShape.d_ff;
    c.enc_layers = kShape.enc_layers, c.dec_layers = kShape.dec_layers, c.pad_id = kShape.pad_id;
    c.pre_ln = topology == "pre_ln";
    sg::check(kPositions == "sinusoidal" || kPositions == "rope" || kPositions == "alibi" || kPositions == "t5",
              "vs_libtorch", ": the libtorch model has sinusoidal, rope, alibi and t5 positions, not ", kPositions);
    c.positions = kPositions;
    c.norm = kNorm;  // (TorchNorm refuses a kind it does not have)
    c.label_smoothing = kShape.label_smoothing;
    return c;
  }
  double loss() override {
    torch::NoGradGuard ng;
    return model->loss(src, tgt_in, tgt_out).item<double>();
  }
  double step() override {
    opt->zero_grad();
    torch::Tensor l = model->loss(src, tgt_in, tgt_out);
    double value = l.item<double>();
    l.backward();
    opt->step();
    return value;
  }

  bench::TorchTransformer model;
  std::unique_ptr<torch::optim::Adam> opt;
  torch::Tensor src, tgt_in, tgt_out;
};

int worker_main(const std::string& kind, const std::string& weights, const std::string& topology, int threads) {
  const double start_rss = bench::current_rss_mib();
  bench::set_threads(threads);
  if (kind == "libtorch") torch::set_num_threads(threads);
  sg::nn::SafetensorsFile file = sg::nn::load_safetensors(weights);
  std::unique_ptr<Runner> runner;
  if (kind == "skipgrad") runner = std::make_unique<SkipgradRunner>(topology, file);
  else if (kind == "libtorch") runner = std::make_unique<LibtorchRunner>(topology, file);
  else sg::fail("vs_libtorch", ": unknown worker kind '", kind, "'");
  std::printf("ready %s %s\n", kind == "libtorch" ? ("libtorch-" + std::string(TORCH_VERSION)).c_str() : "skipgrad",
              (bench::runtime_info() + (kind == "libtorch" ? "; torch threads " + std::to_string(torch::get_num_threads())
                                                           : std::string()))
                  .c_str());
  std::fflush(stdout);
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "loss") {
      std::printf("loss %.9g\n", runner->loss());
    } else if (line.rfind("steps ", 0) == 0) {
      const int k = std::atoi(line.c_str() + 6);
      std::vector<double> ms(k), losses(k);
      for (int i = 0; i < k; i++) {
        auto t0 = Clock::now();
        losses[i] = runner->step();
        ms[i] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      }
      std::printf("times");
      for (double t : ms) std::printf(" %.3f", t);
      std::printf(" losses");
      for (double l : losses) std::printf(" %.9g", l);
      std::printf("\n");
    } else if (line == "rss") {
      std::printf("rss %.1f %.1f\n", bench::peak_rss_mib(), start_rss);
    } else if (line == "quit") {
      break;
    } else {
      std::printf("error unknown command '%s'\n", line.c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

// ================================================================ driver side of a worker

struct Worker {
  std::string label;   // "skipgrad", "libtorch 1.13", "PyTorch 2.x eager", ...
  pid_t pid = -1;
  FILE* to = nullptr;
  FILE* from = nullptr;
  std::string info;     // the rest of its "ready" line
  std::vector<double> times_ms;
  double initial_loss = NAN, loss_after_update = NAN, peak_rss = NAN, start_rss = NAN;
  int steps_done = 0;

  // Sends one command and returns the one-line answer ("" when the worker has gone).
  std::string request(const std::string& line) {
    if (!to) return "";
    std::fprintf(to, "%s\n", line.c_str());
    std::fflush(to);
    return read_line();
  }
  std::string read_line() {
    std::string out;
    char buf[4096];
    while (from && std::fgets(buf, sizeof buf, from)) {
      out += buf;
      if (!out.empty() && out.back() == '\n') {
        out.pop_back();
        return out;
      }
    }
    return out;
  }
  void stop() {
    if (to) {
      std::fprintf(to, "quit\n");
      std::fclose(to);
      to = nullptr;
    }
    if (from) std::fclose(from), from = nullptr;
    if (pid > 0) waitpid(pid, nullptr, 0), pid = -1;
  }
};

// Starts argv[0] with argv, its stdin/stdout piped to us, stderr shared, extra "NAME=value" entries in its env.
// Returns a worker whose `to` is null when it could not start or did not say "ready".
std::unique_ptr<Worker> spawn_worker(const std::string& label, const std::vector<std::string>& argv,
                                     const std::vector<std::string>& env_overrides) {
  auto w = std::make_unique<Worker>();
  w->label = label;
  int in_pipe[2], out_pipe[2];
  if (pipe(in_pipe) != 0 || pipe(out_pipe) != 0) return w;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) posix_spawn_file_actions_addclose(&fa, fd);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; e++) {
    std::string entry = *e, key = entry.substr(0, entry.find('=') + 1);
    bool overridden = false;
    for (auto& o : env_overrides) overridden = overridden || o.rfind(key, 0) == 0;
    if (!overridden) env_strings.push_back(entry);
  }
  env_strings.insert(env_strings.end(), env_overrides.begin(), env_overrides.end());
  std::vector<char*> cargv, cenv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  for (auto& e : env_strings) cenv.push_back(const_cast<char*>(e.c_str()));
  cargv.push_back(nullptr);
  cenv.push_back(nullptr);
  int rc = posix_spawnp(&w->pid, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  close(in_pipe[0]);
  close(out_pipe[1]);
  if (rc != 0) {
    close(in_pipe[1]), close(out_pipe[0]);
    w->pid = -1;
    std::fprintf(stderr, "vs_libtorch: could not start %s: %s\n", argv[0].c_str(), std::strerror(rc));
    return w;
  }
  w->to = fdopen(in_pipe[1], "w");
  w->from = fdopen(out_pipe[0], "r");
  std::string ready = w->read_line();
  if (ready.rfind("ready ", 0) != 0) {
    std::fprintf(stderr, "vs_libtorch: %s is not available (%s)\n", label.c_str(),
                 ready.empty() ? "it exited" : ready.c_str());
    w->stop();
    return w;
  }
  // "ready LABEL INFO": the label names the framework and version the worker found
  const std::string rest = ready.substr(6);
  const size_t space = rest.find(' ');
  w->label = rest.substr(0, space);
  w->info = space == std::string::npos ? "" : rest.substr(space + 1);
  return w;
}

// Parses "times t.. losses l..", appends the times, returns the losses.
std::vector<double> parse_steps(Worker& w, const std::string& reply) {
  std::istringstream in(reply);
  std::string word;
  std::vector<double> losses;
  bool in_losses = false;
  in >> word;
  if (word != "times") {
    std::fprintf(stderr, "vs_libtorch: %s answered '%s'\n", w.label.c_str(), reply.c_str());
    w.stop();
    return losses;
  }
  while (in >> word) {
    if (word == "losses") in_losses = true;
    else if (in_losses) losses.push_back(std::atof(word.c_str()));
    else w.times_ms.push_back(std::atof(word.c_str()));
  }
  return losses;
}

double loadavg1() {
  std::ifstream f("/proc/loadavg");
  double l = NAN;
  f >> l;
  return l;
}

struct Options {
  std::vector<std::string> topologies{"post_ln", "pre_ln"};
  std::vector<int> threads{1, 2};
  int rounds = 10, steps = 5, warmup = 3;
  std::string python = "python3";
  bool use_python = true, compile = true;
  std::string model = "reference";  // bench::named_shape
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Runs one (topology, threads) comparison and prints its table rows; returns false when a loss check failed.
bool compare(const Options& o, const std::string& topology, int threads, const std::string& self,
             std::vector<std::string>& table) {
  // ---- the weights and the batch, from skipgrad's model
  const std::string weights = "/tmp/vs_libtorch_" + std::to_string(getpid()) + "_" + topology + ".safetensors";
  {
    sg::manual_seed(1);
    sg::nn::Transformer model(model_config(topology));
    bench::save_weights_and_batch(weights, model, bench::reference_batch(kShape), {{"topology", topology}});
  }
  const std::string n = std::to_string(threads);
  const std::vector<std::string> env{"OMP_NUM_THREADS=" + n, "OPENBLAS_NUM_THREADS=" + n, "MKL_NUM_THREADS=" + n};
  std::vector<std::unique_ptr<Worker>> workers;
  for (const char* kind : {"skipgrad", "libtorch"})
    workers.push_back(spawn_worker(kind, {self, "--worker", kind, "--weights", weights, "--topology", topology,
                                          "--threads", n, "--model", o.model, "--positions", kPositions,
                                          "--norm", kNorm}, env));
  if (o.use_python)
    for (const char* mode : o.compile ? std::vector<const char*>{"eager", "compile"} : std::vector<const char*>{"eager"})
      workers.push_back(spawn_worker(std::string("pytorch ") + mode,
                                     {o.python, SKIPGRAD_BENCH_PYTORCH_SCRIPT, "--worker", "--mode", mode,
                                      "--weights", weights, "--topology", topology, "--threads", n, "--sizes",
                                      std::to_string(kShape.vocab) + "," + std::to_string(kShape.d_model) + "," +
                                          std::to_string(kShape.heads) + "," + std::to_string(kShape.d_ff) + "," +
                                          std::to_string(kShape.enc_layers),
                                      "--positions", kPositions, "--norm", kNorm},
                                     env));
  std::erase_if(workers, [](auto& w) { return !w->to; });
  std::remove(weights.c_str());
  if (workers.empty() || workers[0]->label != "skipgrad") return false;
  std::printf("\n## %s, %d thread%s (load %.2f at start)\n", topology.c_str(), threads, threads > 1 ? "s" : "",
              loadavg1());
  for (auto& w : workers) std::printf("- %s: %s\n", w->label.c_str(), w->info.c_str());

  // ---- the same loss from the same weights
  bool ok = true;
  for (auto& w : workers) w->initial_loss = std::atof(w->request("loss").c_str() + 5);
  const double ref = workers[0]->initial_loss;
  for (auto& w : workers) {
    const double rel = std::fabs(w->initial_loss - ref) / std::fabs(ref);
    std::printf("- loss check %s: %.7f (rel. error vs skipgrad %.2e) %s\n", w->label.c_str(), w->initial_loss, rel,
                rel < 1e-4 ? "ok" : "MISMATCH");
    ok = ok && rel < 1e-4;
  }

  // ---- warm-up: the first step's loss is the initial one, the second's follows one Adam update
  for (auto& w : workers) {
    std::vector<double> losses = parse_steps(*w, w->request("steps " + std::to_string(std::max(o.warmup, 2))));
    if (losses.size() >= 2) w->loss_after_update = losses[1];
    w->times_ms.clear();
    std::printf("- loss after one Adam step, %s: %.7f (rel. diff vs skipgrad %.2e)\n", w->label.c_str(),
                w->loss_after_update,
                std::fabs(w->loss_after_update - workers[0]->loss_after_update) / workers[0]->loss_after_update);
  }

  // ---- timing, alternating, and the sgemm ceiling around it
  bench::set_threads(threads);
  bench::SgemmCeiling before = bench::measure_sgemm_ceiling(kShape);
  for (int r = 0; r < o.rounds; r++)
    for (size_t i = 0; i < workers.size(); i++) {
      Worker& w = *workers[(i + r) % workers.size()];
      if (w.to) parse_steps(w, w.request("steps " + std::to_string(o.steps)));
    }
  bench::SgemmCeiling after = bench::measure_sgemm_ceiling(kShape);
  const double ceiling = std::max(before.weighted_gflops, after.weighted_gflops);
  const double fma_peak = bench::measure_fma_peak(threads);
  std::printf("- sgemm ceiling on the model's GEMMs: %.1f GFLOP/s before, %.1f after the rounds (best single shape "
              "%.1f); FMA peak of %d core(s): %.1f GFLOP/s; load %.2f at end\n",
              before.weighted_gflops, after.weighted_gflops, std::max(before.best_single_gflops, after.best_single_gflops),
              threads, fma_peak, loadavg1());
  for (auto& w : workers) {
    std::istringstream in(w->request("rss"));
    std::string word;
    in >> word >> w->peak_rss >> w->start_rss;
    w->stop();
  }

  // ---- the table rows
  const double flops = bench::step_matmul_flops(kShape), tokens = (double)(kShape.batch * kShape.tgt_len);
  const double sg_median = bench::summarize(workers[0]->times_ms).median;
  // What 2x the fastest other framework would take: its matrix FLOPs alone, at that rate, against the peak.
  double fastest_other = 0;
  for (size_t i = 1; i < workers.size(); i++)
    if (!workers[i]->times_ms.empty()) {
      const double m = bench::summarize(workers[i]->times_ms).median;
      fastest_other = fastest_other == 0 ? m : std::min(fastest_other, m);
    }
  if (fastest_other > 0 && fma_peak > 0) {
    const double needed_gflops = flops / (fastest_other / 2 * 1e-3) * 1e-9;
    std::printf("- 2x the fastest other framework = %.1f ms/step = %.1f GFLOP/s of matrix products alone, %.0f%% of "
                "the FMA peak (%.0f%% of the sgemm ceiling)\n",
                fastest_other / 2, needed_gflops, 100 * needed_gflops / fma_peak, 100 * needed_gflops / ceiling);
  }
  for (auto& w : workers) {
    if (w->times_ms.empty()) continue;
    bench::Summary s = bench::summarize(w->times_ms);
    const double gflops = flops / (s.median * 1e-3) * 1e-9;
    table.push_back("| " + topology + " | " + n + " | " + w->label + " | " + fmt("%.1f", s.median) + " | " +
                    fmt("%.1f", s.p25) + "–" + fmt("%.1f", s.p75) + " | " + fmt("%.1f", s.min) + "–" +
                    fmt("%.1f", s.max) + " | " + fmt("%.0f", tokens / (s.median * 1e-3)) + " | " +
                    fmt("%.1f", gflops) + " | " + fmt("%.0f%%", 100 * gflops / ceiling) + " | " +
                    (fma_peak > 0 ? fmt("%.0f%%", 100 * gflops / fma_peak) : std::string("–")) + " | " +
                    fmt("%.0f", w->peak_rss) + " (" + fmt("%.0f", w->start_rss) + ") | " +
                    fmt("%.2f", s.median / sg_median) + " |");
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string worker, weights, topology = "pre_ln";
    int threads = 1;
    Options o;
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        sg::check(i + 1 < argc, "vs_libtorch", ": ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--worker") worker = value();
      else if (a == "--weights") weights = value();
      else if (a == "--topology") topology = value();
      else if (a == "--threads" && !worker.empty()) threads = std::atoi(value().c_str());
      else if (a == "--topologies") o.topologies = cli_lists::split_list(value());
      else if (a == "--threads") o.threads = cli_lists::split_numbers<int>(value(), "--threads", 1);
      else if (a == "--rounds") o.rounds = std::atoi(value().c_str());
      else if (a == "--steps") o.steps = std::atoi(value().c_str());
      else if (a == "--warmup") o.warmup = std::atoi(value().c_str());
      else if (a == "--python") o.python = value();
      else if (a == "--no-python") o.use_python = false;
      else if (a == "--no-compile") o.compile = false;
      else if (a == "--model") o.model = value();
      else if (a == "--positions") kPositions = value();
      else if (a == "--norm") kNorm = value();
      else sg::fail("vs_libtorch", ": unknown argument '", a, "' (see the comment at the top of vs_libtorch.cpp)");
    }
    kShape = bench::named_shape(o.model);
    (void)sg::nn::parse_position_encoding(kPositions);  // a bad name fails here
    sg::check(kNorm == "layer_norm" || kNorm == "dyt", "vs_libtorch", ": --norm is layer_norm or dyt, not ", kNorm);
    if (!worker.empty()) return worker_main(worker, weights, topology, threads);

    char self[4096];
    const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    sg::check(len > 0, "vs_libtorch", ": cannot find its own executable");
    self[len] = 0;
    std::printf("# skipgrad vs libtorch %s: %s model (%s, %s positions, %s norms, Adam), %d rounds x %d steps "
                "after %d warm-up steps\n", TORCH_VERSION, o.model.c_str(), bench::shape_summary(kShape).c_str(),
                kPositions.c_str(), kNorm.c_str(), o.rounds, o.steps, std::max(o.warmup, 2));
    std::printf("driver: %s\n", bench::runtime_info().c_str());
    std::vector<std::string> table;
    bool ok = true;
    for (const auto& topo : o.topologies)
      for (int t : o.threads) ok = compare(o, topo, t, self, table) && ok;
    std::printf("\n| topology | threads | framework | ms/step (median) | IQR | min–max | target tok/s | GFLOP/s | "
                "of sgemm ceiling | of FMA peak | peak RSS MiB (at start) | time / skipgrad's |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (auto& row : table) std::printf("%s\n", row.c_str());
    std::printf("\nanalytic matrix FLOPs of a training step: %.2f GFLOP (3x forward %.2f)\n",
                bench::step_matmul_flops(kShape) * 1e-9, bench::forward_matmul_flops(kShape) * 1e-9);
    if (!ok) std::printf("\nA LOSS CHECK FAILED: the frameworks do not compute the same model; timings are void.\n");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vs_libtorch: %s\n", e.what());
    return 2;
  }
}
