// Several host threads using the library at once (docs/reliability.md, "Threads"): the default generator, the
// per-thread modes, data tensors shared by threads that record ops, and copies to and from the CUDA device.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

using namespace sgtest;

namespace {
// Runs f(i) on n threads, started together (each waits until all exist), and waits for them all.
template <class F>
void on_threads(int n, F f) {
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; i++)
    threads.emplace_back([&, i] {
      ready++;
      while (ready.load() < n) std::this_thread::yield();
      f(i);
    });
  for (std::thread& t : threads) t.join();
}
}  // namespace

TEST_SUITE("threads") {
  TEST_CASE("the default generator gives each draw counters of its own, whichever threads draw") {
    Generator& g = default_generator();
    const uint64_t seed = g.seed(), offset = g.offset();
    g.set_state(42, 1000);
    std::vector<std::vector<uint64_t>> got(4);
    on_threads(4, [&](int i) {
      for (int k = 0; k < 20000; k++) got[i].push_back(g.advance(1));
    });
    CHECK(g.offset() == 1000 + 4 * 20000);  // updates were lost when advance was not atomic
    std::vector<uint64_t> all;
    for (const auto& v : got) all.insert(all.end(), v.begin(), v.end());
    std::sort(all.begin(), all.end());
    CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
    Generator copy = g;  // still copyable
    CHECK(copy.offset() == g.offset());
    g.set_state(seed, offset);
  }

  TEST_CASE("anomaly mode and gradient-norm tracking are per thread, as grad mode") {
    TrackGradNormsGuard off(false);
    AnomalyGuard on(true);
    bool tracking_there = false, anomaly_there = true;
    on_threads(1, [&](int) {
      tracking_there = track_grad_norms();
      anomaly_there = anomaly_mode();
    });
    CHECK(tracking_there);  // a new thread starts from the defaults
    CHECK_FALSE(anomaly_there);
    // guards in two threads that end out of order leave each thread its own setting (a process-wide flag was left
    // off for good by: A off, B off, A ends, B ends: B's guard restored the "off" it had found)
    std::promise<void> a_set, b_set, a_ended, b_ended;
    std::shared_future<void> a_set_f = a_set.get_future().share(), b_set_f = b_set.get_future().share(),
                             a_ended_f = a_ended.get_future().share(), b_ended_f = b_ended.get_future().share();
    bool a_after = false, b_after = false;
    std::thread a([&] {
      {
        TrackGradNormsGuard a_off(false);
        a_set.set_value();
        b_set_f.wait();
      }
      a_ended.set_value();
      b_ended_f.wait();  // B's guard has ended too, after A's
      a_after = track_grad_norms();
    });
    std::thread b([&] {
      a_set_f.wait();
      {
        TrackGradNormsGuard b_off(false);
        b_set.set_value();
        a_ended_f.wait();
      }
      b_after = track_grad_norms();
      b_ended.set_value();
    });
    a.join();
    b.join();
    CHECK(a_after);
    CHECK(b_after);
    CHECK_FALSE(track_grad_norms());  // this thread's guard still holds
  }

  TEST_CASE("threads recording ops on one shared data tensor, each with its own weights") {
    for (int round = 0; round < 20; round++) {
      Tensor x = Tensor::full({4, 3}, 1.0 + round, DType::F64);  // fresh each round: no metadata yet
      std::vector<Tensor> grads(4);
      on_threads(4, [&](int i) {
        Tensor w = Tensor::full({3, 2}, 0.5 * i, DType::F64).requires_grad_();
        for (int k = 0; k < 3; k++) {
          sum(matmul(x, w)).backward();
        }
        grads[i] = w.grad();
      });
      for (const Tensor& gw : grads) {  // d sum(x w) / dw = column sums of x, three backwards
        REQUIRE(gw.defined());
        CHECK(gw.to_vector<double>() == std::vector<double>(6, 3 * 4 * (1.0 + round)));
      }
    }
  }

  TEST_CASE("threads backpropagating through one shared model: every gradient reaches the shared parameters") {
    // Each thread takes gradients of its own inputs through a shared Linear whose parameters require grad
    // (saliency, Hogwild-style training). Leaves' partial gradients were shared scratch space: a probe aborted.
    manual_seed(3);
    nn::Linear shared(3, 2);
    shared.to(DType::F64);
    const int threads = 4, rounds = 50;
    std::vector<Tensor> input_grads(threads);
    on_threads(threads, [&](int i) {
      for (int k = 0; k < rounds; k++) {
        Tensor x = Tensor::full({2, 3}, double(i + 1), DType::F64).requires_grad_();
        sum(shared.forward(x)).backward();
        input_grads[i] = x.grad();
      }
    });
    // d sum(x W^T + b) / dW = column sums of x for each output row: 2 (i + 1) per element, every round
    double per_weight = 0;
    for (int i = 0; i < threads; i++) per_weight += rounds * 2.0 * (i + 1);
    CHECK(shared.weight.grad().to_vector<double>() == std::vector<double>(6, per_weight));
    CHECK(shared.bias.grad().to_vector<double>() == std::vector<double>(2, threads * rounds * 2.0));
    const std::vector<double> w = shared.weight.to(DType::F64).to_vector<double>();
    for (int i = 0; i < threads; i++) {  // dx = column sums of W, the same for every thread
      REQUIRE(input_grads[i].defined());
      const std::vector<double> gx = input_grads[i].to_vector<double>();
      for (int c = 0; c < 3; c++) CHECK(gx[c] == doctest::Approx(w[c] + w[3 + c]));
    }
  }

  TEST_CASE("an optimizer step between another thread's forward and backward is refused (the version check)") {
    // Thread B records a forward through the shared model, thread A steps the optimizer, then B's backward would
    // read the stepped weights as its forward's: refused, as torch refuses it for threads of one process.
    manual_seed(4);
    nn::Linear shared(3, 2);
    nn::SGD opt(shared.named_parameters(), {.lr = 0.1});
    std::promise<void> recorded, stepped;
    std::string error;
    std::thread b([&] {
      Tensor loss = sum(shared.forward(Tensor::ones({1, 3})));
      recorded.set_value();
      stepped.get_future().wait();
      try {
        loss.backward();
      } catch (const Error& e) {
        error = e.what();
      }
    });
    recorded.get_future().wait();
    sum(shared.forward(Tensor::ones({1, 3}))).backward();
    opt.step();
    stepped.set_value();
    b.join();
    CHECK(error.find("written in place") != std::string::npos);
    CHECK(error.find("linear") != std::string::npos);
  }

  TEST_CASE("copies to and from the CUDA device from several threads keep each thread's data") {
    if (!cuda_available()) {
      MESSAGE("skipped: no CUDA device");
      return;
    }
    std::vector<int> wrong(4, 0);
    on_threads(4, [&](int i) {
      for (int k = 0; k < 3000; k++) {
        std::vector<float> v(1000 + i, float(i * 100000 + k));
        Tensor back = Tensor::from_vector<float>(v, {(int64_t)v.size()}).to(Device::cuda()).to(Device::cpu());
        if (back.to_vector<float>() != v) wrong[i]++;
      }
    });
    CHECK(wrong == std::vector<int>(4, 0));  // 8 of 12000 came back with another thread's values
  }
}
