// index_bench: topk, sort and a sampling decoder's draw at decoding shapes, on one device, timed on the host: the
// median and range over `rounds` of (the time of `calls` calls, then one host read that waits for them) / calls.
// What issue 6's GPU session measures to settle topk's switches (cuda_reduce.cu: a thread per line up to 64
// elements, a block's k scans up to k = 32, the merge sort beyond) and what sampling costs per decoding step
// (docs/translate.md, "Sampling"). On the CPU it times the CPU backend (scans for k = 1 or lines of <= 16, else a
// partial sort), whose switch the first pair of rows straddles.
//
//   index_bench [--device cpu|cuda] [--rounds N] [--calls N] [--quick]
// Prints a Markdown table; --quick runs tiny shapes (the emulator's smoke test in CTest).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "decode.h"

using namespace skipgrad;

namespace {

struct Case {
  std::string what;
  Shape shape;  // of the input; topk works along its last dim
  std::function<Tensor(const Tensor&)> run;
  bool log_probs = false;  // the input is log_softmax of the random logits (made before the timing)
};

// The median and range of `rounds` timings of `calls` calls each, in ms per call.
struct Timing {
  double median, lo, hi;
};
Timing time_case(const Case& c, const Tensor& x, int rounds, int calls) {
  c.run(x).reshape({-1}).slice(0, 0, 1).item();  // warm-up: caches, the allocator's blocks
  std::vector<double> ms;
  for (int r = 0; r < rounds; r++) {
    const auto t0 = std::chrono::steady_clock::now();
    Tensor last;
    for (int i = 0; i < calls; i++) last = c.run(x);
    last.reshape({-1}).slice(0, 0, 1).item();  // waits for the device's queue
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / calls);
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "cpu";
  int rounds = 7, calls = 10;
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "index_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") device = value();
    else if (a == "--rounds") rounds = std::max(1, std::atoi(value().c_str()));
    else if (a == "--calls") calls = std::max(1, std::atoi(value().c_str()));
    else if (a == "--quick") quick = true;
    else {
      std::fprintf(stderr, "index_bench: unknown argument '%s' (--device, --rounds, --calls, --quick)\n", a.c_str());
      return 2;
    }
  }
  try {
    NoGradGuard no_grad;
    const Device dev = Device::parse(device);
    const int64_t V = quick ? 300 : 32000, rows = quick ? 4 : 64, many = quick ? 100 : 4096;
    // The switches each pair of rows straddles: the CPU scans for k = 1 or lines of <= 16 and sorts otherwise; the
    // GPU gives lines of <= 64 a thread each, longer ones a block's k scans for k <= 32, and merge-sorts past that.
    auto top = [](int64_t k) { return [k](const Tensor& x) { return topk(x, k).indices; }; };
    std::vector<Case> cases = {
        {"topk k = 4, lines of 16", {many, 16}, top(4)},
        {"topk k = 4, lines of 17", {many, 17}, top(4)},
        {"topk k = 1, lines of 64", {many, 64}, top(1)},
        {"topk k = 1, lines of 65", {many, 65}, top(1)},
        {"topk k = 8, lines of 64", {many, 64}, top(8)},
        {"topk k = 8, lines of 65", {many, 65}, top(8)},
        {"topk k = 1", {rows, V}, top(1)},
        {"topk k = 8", {rows, V}, top(8)},
        {"topk k = 32", {rows, V}, top(32)},
        {"topk k = 33", {rows, V}, top(33)},
        {"topk k = 50", {rows, V}, top(50)},
        {"topk k = " + std::to_string(std::min<int64_t>(1000, V)), {rows, V}, top(std::min<int64_t>(1000, V))},
        {"sort", {rows, V}, [](const Tensor& x) { return sort(x).indices; }},
        {"sort, one long line", {1, quick ? 2000 : 1 << 20}, [](const Tensor& x) { return argsort(x); }},
    };
    std::vector<int64_t> excluded(V, 0);
    excluded[0] = excluded[2] = 1;  // pad, bos
    const Tensor ex = Tensor::from_vector(excluded, {V}, dev);
    struct Cut {
      const char* name;
      int64_t topk;
      double topp;
    };
    for (const Cut& cut : {Cut{"no cut", 0, 1.0}, Cut{"top-k 50", 50, 1.0}, Cut{"top-k 50, top-p 0.9", 50, 0.9},
                           Cut{"top-p 0.9", 0, 0.9}}) {
      auto gen = std::make_shared<Generator>(3);
      cases.push_back({std::string("sample_tokens, ") + cut.name, {rows, V}, [cut, ex, gen](const Tensor& lp) {
                         translate::DecodeOptions opt;
                         opt.sampling = true, opt.sampling_topk = cut.topk, opt.sampling_topp = cut.topp;
                         opt.gen = gen.get();
                         return translate::sample_tokens(lp, ex, opt);
                       },
                       true});
    }
    std::printf("index_bench on %s: median [min, max] ms per call over %d rounds of %d calls\n\n", device.c_str(),
                rounds, calls);
    std::printf("| case | input | ms per call |\n|---|---|---|\n");
    Generator init(1);
    for (const Case& c : cases) {
      Tensor x = mul(Tensor::randn(c.shape, 0, 1, DType::F32, Device::cpu(), &init), 3.0).to(dev);
      if (c.log_probs) x = log_softmax(x, -1);
      const Timing t = time_case(c, x, rounds, calls);
      std::printf("| %s | float32[%lld,%lld] | %.4f [%.4f, %.4f] |\n", c.what.c_str(), (long long)c.shape[0],
                  (long long)c.shape[1], t.median, t.lo, t.hi);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "index_bench: %s\n", e.what());
    return 2;
  }
  return 0;
}
