// The tape: fan-in accumulation (the folded sums: test_autograd_fan_in.cpp), retain_graph, no-grad, detach, hooks,
// anomaly mode, scoped names, deep graphs, threads, and gradients at the edges of their formulas (ties of max/min,
// x^0 at 0).
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "test_util.h"

using namespace sgtest;

namespace {
Tensor vec(std::vector<double> v) {
  const int64_t n = (int64_t)v.size();
  return Tensor::from_vector<double>(std::move(v), {n});
}
}  // namespace

TEST_SUITE("autograd") {
  TEST_CASE("y = sum(a * b + a) gives ga = b + 1, gb = a") {
    Tensor a = vec({1, 2, 3}).requires_grad_();
    Tensor b = vec({4, 5, 6}).requires_grad_();
    Tensor y = sum(a * b + a);
    CHECK(y.item() == doctest::Approx(1 * 4 + 2 * 5 + 3 * 6 + 6));
    y.backward();
    check_close(a.grad(), {5, 6, 7});
    check_close(b.grad(), {1, 2, 3});
  }

  TEST_CASE("fan-in: a tensor used three times receives the sum of its gradients") {
    Tensor x = vec({0.5, -1, 2}).requires_grad_();
    // y = 2x + x*x + exp(x):  dy/dx = 2 + 2x + exp(x)
    Tensor y = sum(x * 2.0 + x * x + exp(x));
    y.backward();
    check_close(x.grad(), {2 + 1 + std::exp(0.5), 2 - 2 + std::exp(-1.0), 2 + 4 + std::exp(2.0)});
    // an intermediate used twice (the residual stream pattern h = h + f(h))
    Tensor z = vec({1, 2}).requires_grad_();
    Tensor h = z * 3.0;
    Tensor out = sum(h + h * h);  // d/dz = 3 (1 + 2h) = 3 + 18 z
    out.backward();
    check_close(z.grad(), {21, 39});
  }

  TEST_CASE("a leaf's .grad is memory of its own, also when the gradient was shared or a view") {
    // add passes one gradient tensor to both inputs; concat hands out views of one; a root's gradient is the
    // caller's tensor. Writing into one .grad (as optimizers do) must change nothing else.
    Tensor a = Tensor::zeros({3}).requires_grad_(), b = Tensor::zeros({3}).requires_grad_();
    (a + b).backward(Tensor::ones({3}));
    CHECK_FALSE(a.grad().shares_storage(b.grad()));
    Tensor c = Tensor::zeros({2}).requires_grad_(), d = Tensor::zeros({3}).requires_grad_();
    Tensor gy = Tensor::from_vector<float>({1, 2, 3, 4, 5}, {5});
    concat({c, d}, 0).backward(gy);
    CHECK(c.grad().is_contiguous());
    CHECK(d.grad().is_contiguous());
    CHECK_FALSE(c.grad().shares_storage(d.grad()));
    CHECK_FALSE(c.grad().shares_storage(gy));
    CHECK(d.grad().to_vector<float>() == std::vector<float>{3, 4, 5});
    Tensor root = Tensor::zeros({2}).requires_grad_(), g = Tensor::ones({2});
    root.backward(g);
    CHECK_FALSE(root.grad().shares_storage(g));
    // a fresh gradient is taken as it is: still correct
    Tensor w = Tensor::from_vector<float>({1, 2}, {2}).requires_grad_();
    (w * w).sum().backward();
    CHECK(w.grad().to_vector<float>() == std::vector<float>{2, 4});
  }

  TEST_CASE("gradients accumulate in .grad across backward calls until zero_grad") {
    Tensor x = vec({1, 2}).requires_grad_();
    sum(x * 3.0).backward();
    check_close(x.grad(), {3, 3});
    sum(x * x).backward();
    check_close(x.grad(), {5, 7});
    x.zero_grad();
    CHECK(!x.grad().defined());
    sum(x).backward();
    check_close(x.grad(), {1, 1});
    // the gradient is the leaf's own storage (optimizers update it in place)
    Tensor y = vec({1, 1}).requires_grad_();
    Tensor g = vec({4, 5});
    (y * 1.0).backward(g);
    CHECK(!y.grad().shares_storage(g));
  }

  TEST_CASE("retain_graph keeps the graph for a second backward; without it the second throws") {
    Tensor x = vec({1, 2}).requires_grad_();
    Tensor y = sum(x * x);
    y.backward(Tensor(), true);
    CHECK(current_tape().size() > 0);
    y.backward();
    check_close(x.grad(), {4, 8});
    CHECK(current_tape().size() == 0);
    CHECK_THROWS_WITH_ALL(y.backward(), "backward", "retain_graph");
    // an intermediate of a freed graph cannot carry a gradient into a new graph either
    Tensor h = x * 2.0;
    sum(h).backward();
    Tensor y2 = sum(h * x);
    CHECK_THROWS_WITH_ALL(y2.backward(), "backward", "freed", "retain_graph");
    // detaching it is the way out
    x.zero_grad();
    sum(h.detach() * x).backward();
    check_close(x.grad(), {2, 4});
  }

  TEST_CASE("a tensor a node saved and written in place since is refused at backward, naming both (torch's check)") {
    Tensor w = vec({1, 2, 3}).requires_grad_();
    w.named("fc.weight");
    Tensor x = vec({4, 5, 6});
    Tensor y;
    {
      Scope s("enc.0.ffn");
      y = sum(mul(x, w));  // mul saves x and w
    }
    {
      NoGradGuard ng;
      w.copy_(vec({0, 0, 0}));  // x's gradient would now be read as 0
    }
    CHECK_THROWS_WITH_ALL(y.backward(), "backward", "enc.0.ffn.mul", "float64[3] cpu ('fc.weight')",
                          "written in place", "version 0 then, 1 now", "clone()");
    CHECK(!w.grad().defined());
    current_tape().clear();
    // a view shares its base's memory and version: writing the base is seen through a saved transpose
    Tensor m = Tensor::from_vector<double>({1, 2, 3, 4}, {2, 2}).requires_grad_();
    m.named("proj.weight");
    Tensor out = sum(matmul(vec({1, 1}).reshape({1, 2}), m.t()));
    {
      NoGradGuard ng;
      m.copy_(m * 2.0);
    }
    CHECK_THROWS_WITH_ALL(out.backward(), "matmul", "float64[2,2]", "written in place");
    current_tape().clear();
    // an optimizer step between a forward and its backward (two losses, one stepped before the other's backward)
    Tensor p = vec({1, -1}).requires_grad_();
    nn::SGD opt({{"p", p}}, {.lr = 0.1});
    Tensor loss_a = sum(p * p), loss_b = sum(p * p * p);
    loss_a.backward(Tensor(), true);  // (keeps the tape: loss_b's graph is on it too)
    opt.step();
    CHECK_THROWS_WITH_ALL(loss_b.backward(), "backward", "written in place");
    current_tape().clear();
    nn::Adam adam({{"p", p}}, {.lr = 0.1});  // (the fused kernel writes p without copy_: it bumps the version)
    const uint64_t before = p.version();
    p.zero_grad();
    sum(p * p).backward();
    adam.step();
    CHECK(p.version() == before + 1);
    Tensor strided = Tensor::zeros({3, 2}, DType::F64).t().requires_grad_();  // one write, one count (it was two)
    nn::Adam strided_adam({{"s", strided}}, {.lr = 0.1});
    sum(strided * strided + strided).backward();
    const uint64_t strided_before = strided.version();
    strided_adam.step();
    CHECK(strided.version() == strided_before + 1);
    CHECK(strided.to_vector<double>() != std::vector<double>(6, 0.0));  // written back through the view
    // every in-place writer counts: clipping scales .grad, Module::to swaps in new memory; a refused copy_ writes
    // nothing and counts nothing
    Tensor g = p.grad();
    const uint64_t g_before = g.version();
    nn::clip_grad_norm({p}, 1e-3);
    CHECK(g.version() == g_before + 1);
    const uint64_t p_before = p.version();
    CHECK_THROWS_WITH_ALL(p.copy_(vec({1, 2, 3})), "copy_");
    CHECK(p.version() == p_before);
    nn::Linear lin(2, 2);
    const uint64_t w_before = lin.weight.version();
    Tensor h = sum(lin.forward(Tensor::ones({1, 2})));
    lin.to(DType::F64);
    CHECK(lin.weight.version() == w_before + 1);
    CHECK_THROWS_WITH_ALL(h.backward(), "written in place");
    current_tape().clear();
    // writes before the forward, or to tensors no node saved, are fine; and a retained graph reruns unchanged
    Tensor q = vec({1, 2}).requires_grad_();
    {
      NoGradGuard ng;
      q.copy_(vec({3, 4}));
    }
    Tensor unrelated = vec({0, 0});
    Tensor z = sum(q * q);
    unrelated.copy_(vec({1, 1}));
    z.backward(Tensor(), true);
    z.backward();
    check_close(q.grad(), {12, 16});
  }

  TEST_CASE("copy_ with grad on refuses what would make a gradient silently wrong (torch records it instead)") {
    // writing part of an op's result: the backward would pass the overwritten elements' gradient to x
    Tensor x = vec({1, 2, 3}).requires_grad_();
    Tensor y = x * 2.0;
    CHECK_THROWS_WITH_ALL(y.narrow(0, 0, 1).copy_(vec({0})), "copy_", "float64[1] cpu", "result of a recorded op",
                          "NoGradGuard");
    CHECK_THROWS_WITH_ALL(y.copy_(vec({0, 0, 0})), "copy_", "backward would ignore the write");
    // filling a buffer from a tensor that requires grad (a KV cache): k's gradient would be lost
    Tensor cache = Tensor::zeros({2, 3}, DType::F64);
    CHECK_THROWS_WITH_ALL(cache.select(0, 1).copy_(x * 3.0), "copy_", "the source float64[3] cpu requires grad",
                          "cat, where, masked_fill");
    CHECK(cache.version() == 0);  // refused before writing
    // a view of a parameter is a recorded op's result too (torch: "a view of a leaf Variable ...")
    CHECK_THROWS_WITH_ALL(x.narrow(0, 1, 1).copy_(vec({0})), "copy_", "view of a tensor that requires grad");
    current_tape().clear();
    // allowed: a parameter itself (an op that saved it refuses its backward), and anything under NoGradGuard
    x.copy_(vec({4, 5, 6}));
    sum(x * x).backward();
    check_close(x.grad(), {8, 10, 12});
    {
      NoGradGuard no_grad;
      x.narrow(0, 0, 1).copy_(vec({0}));
      cache.select(0, 1).copy_(x * 3.0);
    }
    check_close(cache.select(0, 1), {0, 15, 18});
  }

  TEST_CASE("NoGradGuard records nothing") {
    Tensor x = vec({1, 2}).requires_grad_();
    current_tape().clear();
    const size_t before = current_tape().size();
    CHECK(grad_enabled());
    {
      NoGradGuard ng;
      CHECK(!grad_enabled());
      Tensor y = sum(exp(x * 2.0) + x);
      CHECK(!y.requires_grad());
      CHECK(y.is_leaf());
      {
        NoGradGuard inner;
        CHECK(!grad_enabled());
      }
      CHECK(!grad_enabled());
      CHECK(current_tape().size() == before);
      CHECK_THROWS_WITH_ALL(y.backward(), "backward", "does not require grad");
    }
    CHECK(grad_enabled());
    Tensor z = x * 2.0;
    CHECK(current_tape().size() == before + 1);
    current_tape().clear();
  }

  TEST_CASE("requires_grad propagates to outputs; leaves, non-leaves and int tensors") {
    Tensor a = vec({1, 2}).requires_grad_();
    Tensor b = vec({3, 4});
    CHECK(a.requires_grad());
    CHECK(a.is_leaf());
    CHECK(!b.requires_grad());
    Tensor c = a + b;
    CHECK(c.requires_grad());
    CHECK(!c.is_leaf());
    CHECK(c.node_id() >= 0);
    Tensor d = b * 2.0;
    CHECK(!d.requires_grad());
    CHECK(d.node_id() == -1);
    CHECK(a.reshape({2, 1}).requires_grad());
    sum(c * b).backward();
    check_close(a.grad(), {3, 4});
    CHECK(!b.grad().defined());
    CHECK_THROWS_WITH_ALL(c.requires_grad_(false), "requires_grad_", "non-leaf");
    a.requires_grad_(false);
    CHECK(!a.requires_grad());
    CHECK(!(a * 2.0).requires_grad());
    Tensor i = Tensor::from_vector<int64_t>({1, 2}, {2});
    CHECK(!(i + i).requires_grad());
  }

  TEST_CASE("detach shares storage and cuts the graph") {
    Tensor x = vec({1, 2, 3}).requires_grad_();
    Tensor d = x.detach();
    CHECK(d.shares_storage(x));
    CHECK(!d.requires_grad());
    CHECK(d.is_leaf());
    Tensor y = sum(d * x);  // d/dx = d = x (not 2x)
    y.backward();
    check_close(x.grad(), {1, 2, 3});
    Tensor h = (x * 2.0).detach();
    CHECK(!h.requires_grad());
    CHECK(h.is_leaf());
  }

  TEST_CASE("tensor hooks see and may replace the gradient; leaf hooks see the total once") {
    Tensor x = vec({1, 2}).requires_grad_();
    Tensor z = x * 2.0;
    int calls = 0;
    z.register_hook([&](const Tensor& g) {
      calls++;
      check_close(g, {1, 1});
      return g * 10.0;
    });
    z.register_hook([&](const Tensor& g) {  // sees the previous hook's result; keeps it
      calls++;
      check_close(g, {10, 10});
      return Tensor();
    });
    sum(z).backward();
    CHECK(calls == 2);
    check_close(x.grad(), {20, 20});

    Tensor w = vec({1, 2}).requires_grad_();
    int leaf_calls = 0;
    w.register_hook([&](const Tensor& g) {
      leaf_calls++;
      check_close(g, {1 + 2 + 3, 1 + 4 + 3});  // all three uses, summed: 1 + 2w + 3
      return g * 0.5;
    });
    sum(w + w * w + w * 3.0).backward();
    CHECK(leaf_calls == 1);
    check_close(w.grad(), {3, 4});
    CHECK_THROWS_WITH_ALL(vec({1}).register_hook([](const Tensor& g) { return g; }), "register_hook",
                          "does not require grad");
  }

  TEST_CASE("node hooks observe the output gradient; retain_grad keeps a non-leaf's gradient") {
    Tensor x = vec({1, 2}).requires_grad_();
    Tensor h = x * 3.0;
    h.retain_grad();
    Tensor y = sum(h * h);  // dy/dh = 2h
    Node* n = current_tape().find(h.node_id());
    REQUIRE(n != nullptr);
    CHECK(std::string(n->op->name) == "mul_scalar");
    std::vector<double> seen;
    n->hooks.push_back([&](const Node& node, const Tensor& g) {
      CHECK(&node == n);
      seen = g.to_vector<double>();
    });
    y.backward(Tensor(), true);
    CHECK(seen == std::vector<double>{6, 12});
    check_close(h.grad(), {6, 12});
    check_close(x.grad(), {18, 36});
    if (track_grad_norms()) CHECK(n->grad_norm == doctest::Approx(std::sqrt(36.0 + 144.0)));
    current_tape().clear();
  }

  TEST_CASE("anomaly mode names the forward op and its scope") {
    Tensor x = vec({1, -1}).requires_grad_();
    {
      Tensor quiet = log(x);  // off by default: NaN passes silently
      CHECK(std::isnan(quiet.to_vector<double>()[1]));
    }
    AnomalyGuard on;
    CHECK(anomaly_mode());
    {
      Scope s("enc.0.attn");
      CHECK_THROWS_WITH_ALL(log(x), "anomaly", "log", "enc.0.attn", "NaN");
      NoGradGuard ng;  // not recorded: still checked
      CHECK_THROWS_WITH_ALL(sqrt(x), "anomaly", "sqrt", "enc.0.attn");
    }
    current_tape().clear();
  }

  TEST_CASE("anomaly mode names the op and scope whose backward made a NaN/Inf; state stays clean") {
    Tensor x = vec({0, 4}).requires_grad_();
    Tensor y;
    {
      Scope s("dec.1.ffn");
      y = sum(sqrt(x) * 2.0);  // d sqrt(x)/dx = 1 / (2 sqrt x) = inf at 0
    }
    {
      AnomalyGuard on;
      CHECK_THROWS_WITH_ALL(y.backward(), "anomaly", "backward", "sqrt", "dec.1.ffn.sqrt");
    }
    CHECK(!anomaly_mode());
    CHECK(!x.grad().defined());
    // a failed backward leaves nothing behind: the next one is clean
    sum(x * 2.0).backward();
    check_close(x.grad(), {2, 2});
  }

  TEST_CASE("scopes prefix node names; named() renames") {
    Tensor a = vec({1}).requires_grad_(), b = vec({2}).requires_grad_();
    CHECK(current_scope() == "");
    {
      Scope s("enc.3.ffn");
      CHECK(current_scope() == "enc.3.ffn");
      Tensor c = a + b;
      CHECK(c.node_name() == "enc.3.ffn.add");
      Tensor r = (c + a).named("residual_add");
      CHECK(r.node_name() == "enc.3.ffn.residual_add");
      {
        Scope inner("fc1");
        CHECK((a * b).node_name() == "enc.3.ffn.fc1.mul");
        Scope empty("");
        CHECK(scoped("x") == "enc.3.ffn.fc1.x");
      }
    }
    {
      Scope e("enc"), l("3");
      CHECK((a - b).node_name() == "enc.3.sub");
    }
    CHECK(current_scope() == "");
    CHECK((a * 2.0).node_name() == "mul_scalar");
    Tensor p = vec({1}).requires_grad_();
    p.named("enc.0.ffn.fc1.weight");
    CHECK(p.node_name() == "enc.0.ffn.fc1.weight");
    CHECK(vec({1}).node_name() == "");
    current_tape().clear();
  }

  TEST_CASE("a chain of 100000 nodes runs backward without recursion") {
    current_tape().clear();
    Tensor x = Tensor::scalar(1.0, DType::F64).requires_grad_();
    Tensor y = x;
    const int n = 100000;
    for (int i = 0; i < n; i++) y = (i % 2) ? y * 1.00001 : y + 0.5;
    CHECK(current_tape().size() == (size_t)n);
    y.backward();
    CHECK(x.grad().item() == doctest::Approx(std::pow(1.00001, n / 2)));
    CHECK(current_tape().size() == 0);
  }

  TEST_CASE("backward of a non-scalar needs a gradient of its shape") {
    Tensor x = Tensor::ones({2, 3}, DType::F64).requires_grad_();
    Tensor y = x * 2.0;
    CHECK_THROWS_WITH_ALL(y.backward(), "backward", "one-element", "[2,3]");
    CHECK_THROWS_WITH_ALL(y.backward(Tensor::ones({3, 2}, DType::F64)), "backward", "[3,2]", "[2,3]");
    CHECK_THROWS_WITH_ALL(y.backward(Tensor::ones({2, 3}, DType::F32)), "backward", "float32", "float64");
    y.backward(Tensor::full({2, 3}, 0.5, DType::F64));
    check_close(x.grad(), {1, 1, 1, 1, 1, 1});
    // a one-element non-scalar needs none
    Tensor z = Tensor::ones({1, 1}, DType::F64).requires_grad_();
    (z * 3.0).backward();
    check_close(z.grad(), {3});
  }

  TEST_CASE("gradients flow through views back into the base's shape") {
    Tensor x = Tensor::arange(0, 6, 1, DType::F64).reshape({2, 3}).requires_grad_();
    Tensor v = x.t().reshape({6}).slice(0, 1, 6, 2);  // x.t() flat = [0,3,1,4,2,5]; picks 3,4,5
    CHECK(v.to_vector<double>() == std::vector<double>{3, 4, 5});
    sum(v * v).backward();
    check_close(x.grad(), {0, 0, 0, 6, 8, 10});
  }

  TEST_CASE("the tape is cleared after backward and ids increase") {
    Tensor x = vec({1}).requires_grad_();
    Tensor a = x * 2.0, b = a + 1.0;
    CHECK(b.node_id() > a.node_id());
    CHECK(current_tape().find(a.node_id())->name == "mul_scalar");
    CHECK(current_tape().find(-5) == nullptr);
    sum(b).backward();
    CHECK(current_tape().size() == 0);
    CHECK(b.node_id() == -1);
    CHECK(b.node_name() == "add_scalar");  // remembered after the tape is gone
  }

  TEST_CASE("a graph recorded on another thread: a clear error, live thread or ended one, never a crash") {
    Tensor x = vec({1, 2}).requires_grad_();
    Tensor y, h;
    std::thread([&] {
      y = sum(x * x);
      h = x * 3.0;
    }).join();  // the thread's tape ended with it
    CHECK_THROWS_WITH_ALL(y.backward(), "backward", "freed", "thread");
    CHECK_THROWS_WITH_ALL(sum(h * 2.0).backward(), "backward", "freed", "thread");
    CHECK_FALSE(x.grad().defined());
    // the other thread still alive, its tape too
    bool made = false, release = false;
    std::mutex mu;
    std::condition_variable cv;
    std::thread worker([&] {
      std::unique_lock<std::mutex> lock(mu);
      y = sum(x * x);
      made = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    });
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return made; });
    }
    CHECK_THROWS_WITH_ALL(y.backward(), "backward", "recorded on another thread");
    CHECK_THROWS_WITH_ALL(sum(y * 2.0).backward(), "backward", "recorded on another thread");
    {
      std::lock_guard<std::mutex> lock(mu);
      release = true;
    }
    cv.notify_all();
    worker.join();
    current_tape().clear();
    sum(x * x).backward();  // this thread's own graph still works
    check_close(x.grad(), {2, 4});
  }

  TEST_CASE("hooks: backward inside a hook is a clear error; a hook may register hooks (they run next time)") {
    Tensor x = vec({1, 2}).requires_grad_(), z = vec({3}).requires_grad_();
    Tensor q = sum(z * z);
    Tensor h = x * 2.0;
    h.register_hook([&](const Tensor&) {
      q.backward();
      return Tensor();
    });
    CHECK_THROWS_WITH_ALL(sum(h * h).backward(), "backward", "inside another backward");
    CHECK(current_tape().size() == 0);
    // nor may a hook clear the tape being walked, directly or through gradcheck
    for (int how = 0; how < 2; how++) {
      CAPTURE(how);
      Tensor c = x * 2.0;
      c.register_hook([how](const Tensor&) {
        if (how == 0) current_tape().clear();
        else gradcheck([](const std::vector<Tensor>& in) { return in[0] * 2.0; }, {vec({1}).requires_grad_()});
        return Tensor();
      });
      CHECK_THROWS_WITH_ALL(sum(c * c).backward(), "Tape::clear", "inside a backward");
      CHECK(current_tape().size() == 0);
    }
    int later = 0;
    Tensor k = x * 2.0;
    k.register_hook([&](const Tensor&) {
      for (int i = 0; i < 20; i++) k.register_hook([&](const Tensor&) { return later++, Tensor(); });
      return Tensor();
    });
    x.zero_grad();
    sum(k * k).backward();
    CHECK(later == 0);
    check_close(x.grad(), {8, 16});  // d/dx (2x)^2 = 8x
  }

  TEST_CASE("edges of the formulas, as PyTorch: x^0 has gradient 0 at 0; max/min/relu keep NaN, ties split evenly") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (Device d : devices) {
      CAPTURE(d.str());
      Tensor x = Tensor::zeros({3}, DType::F64, d).requires_grad_();
      sum(pow(x, 0.0)).backward();
      check_close(x.grad().to(Device::cpu()), {0, 0, 0});
      // a NaN on either side is the result (as PyTorch's): not the other number, whichever side it is on
      Tensor nan_first = maximum(vec({NAN, 1}).to(d), vec({1, NAN}).to(d)).to(Device::cpu());
      for (double v : nan_first.to_vector<double>()) CHECK(std::isnan(v));
      for (double v : minimum(vec({NAN, 1}).to(d), vec({1, NAN}).to(d)).to(Device::cpu()).to_vector<double>())
        CHECK(std::isnan(v));
      // and relu keeps a NaN (a NaN pre-activation would otherwise come out 0 and hide a divergence)
      const std::vector<double> r = relu(vec({NAN, -1, 2}).to(d)).to(Device::cpu()).to_vector<double>();
      CHECK(std::isnan(r[0]));
      CHECK(r[1] == 0);
      CHECK(r[2] == 2);
      // a = [1, 2, nan], b = [1, 0, 1]: max gives the tie half to each, the larger all, a NaN all to both
      Tensor a = vec({1, 2, NAN}).to(d).requires_grad_(), b = vec({1, 0, 1}).to(d).requires_grad_();
      sum(maximum(a, b)).backward();
      check_close(a.grad().to(Device::cpu()), {0.5, 1, 1});
      check_close(b.grad().to(Device::cpu()), {0.5, 0, 1});
      a.zero_grad();
      b.zero_grad();
      sum(minimum(a, b)).backward();
      check_close(a.grad().to(Device::cpu()), {0.5, 0, 1});
      check_close(b.grad().to(Device::cpu()), {0.5, 1, 1});
    }
    // gradcheck refuses an input whose elements share memory (one perturbation would move several)
    Tensor e = Tensor::ones({1, 3}, DType::F64).expand({4, 3}).detach().requires_grad_();
    CHECK_THROWS_WITH_ALL(gradcheck([](const std::vector<Tensor>& in) { return in[0] * 2.0; }, {e}), "gradcheck",
                          "stride 0", "contiguous");
    // and fails an infinite or NaN gradient (NaN compares false with any tolerance)
    GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return sqrt(in[0]); },
                                  {Tensor::zeros({2}, DType::F64).requires_grad_()});
    CHECK_FALSE(r.ok);
    CHECK(std::isnan(r.max_abs_err));
  }
  TEST_CASE("retained gradients are copies of their own; an input joins a graph only if it required grad then") {
    Tensor a = Tensor::ones({2}).requires_grad_(), b = Tensor::ones({2}).requires_grad_();
    Tensor h1 = a * 2.0;
    h1.retain_grad();
    Tensor h2 = h1 + b;
    h2.retain_grad();
    Tensor h3 = h2.reshape({1, 2});  // its backward hands the gradient on as it is
    h3.retain_grad();
    Tensor upstream = Tensor::ones({1, 2});
    h3.backward(upstream);
    h2.grad().copy_(Tensor::full({2}, 9.0));  // writing one .grad changes no other, nor the caller's tensor
    upstream.copy_(Tensor::full({1, 2}, 5.0));
    CHECK(h1.grad().to_vector<float>() == std::vector<float>{1, 1});
    CHECK(h3.grad().to_vector<float>() == std::vector<float>{1, 1});
    CHECK(a.grad().to_vector<float>() == std::vector<float>{2, 2});

    Tensor w = Tensor::randn({3, 4}).requires_grad_(), x = Tensor::randn({2, 4});
    Tensor bias = Tensor::randn({3}).requires_grad_();
    Tensor y2 = linear(x, w, bias).sum();
    x.requires_grad_();       // after the forward: not part of this graph
    w.requires_grad_(false);  // frozen after the forward: no .grad (torch's AccumulateGrad checks it again)
    y2.backward();
    CHECK_FALSE(x.grad().defined());
    CHECK_FALSE(w.grad().defined());
    REQUIRE(bias.grad().defined());
    CHECK(bias.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
  }

  TEST_CASE("a leaf hook that throws leaves every leaf's .grad as it was; the retry's gradients are counted once") {
    Tensor x = Tensor::randn({2, 4});
    Tensor w1 = Tensor::randn({4, 4}).requires_grad_(), w2 = Tensor::randn({4, 4}).requires_grad_();
    bool fail_once = true;
    w1.register_hook([&](const Tensor& g) { return fail_once ? Tensor::zeros({1}) : g; });
    auto loss = [&] { return sum(linear(linear(x, w1), w2)); };
    CHECK_THROWS_WITH_ALL(loss().backward(), "gradient hook returned");
    CHECK_FALSE(w2.grad().defined());  // the walk reached w2 first, and its gradient was ready: not kept
    CHECK_FALSE(w1.grad().defined());
    fail_once = false;
    loss().backward();
    const Tensor once = w2.grad().clone();
    w1.zero_grad();
    w2.zero_grad();
    loss().backward();
    CHECK(max_abs_diff(w2.grad(), once) == 0.0);
  }
}
