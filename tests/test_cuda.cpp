// CUDA backend against the CPU backend: elementwise, reductions, views and copies, row kernels, the nn ops,
// optimizers, a whole training step's host waits and uploads, device errors. Matrix products are in
// test_cuda_gemm.cpp; the comparison helpers and tolerances in cuda_test_util.h.
//
// Every case builds the same inputs on both devices (random values made on the CPU, then moved), runs the
// public ops forward, backward with the same upstream gradient, and compares outputs and input gradients.
// Without a GPU (or in a build without CUDA) every GPU test prints "skipped: no CUDA device" and passes; the
// test file compiles either way: it checks cuda_available() at run time, and reads the CUDA backend's wait
// counter only in a CUDA build.
#include <limits>

#include "cuda_test_util.h"

using namespace sgtest;

namespace {

// y = fc2(tanh(norm(fc1(x)))): weights from the default generator seeded with `seed`.
struct SmallNet : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2;
  std::shared_ptr<nn::LayerNorm> norm;
  explicit SmallNet(uint64_t seed) : nn::Module("small") {
    manual_seed(seed);
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(8, 16));
    norm = register_module("norm", std::make_shared<nn::LayerNorm>(16));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(16, 4));
  }
  Tensor forward(const Tensor& x) { return fc2->forward(tanh(norm->forward(fc1->forward(x)))); }
};

}  // namespace

// The gradient check of to_device: x -> GPU -> (2x) -> CPU when a GPU is present (x -> CPU -> (2x) -> GPU for x
// on the GPU: the sweep in test_cuda_sweep.cpp); without one the move is the identity (no node), so the case
// only checks 2x.
REGISTER_GRAD_CASES {
  return std::vector<GradCase>{
      {"to_device", "cpu -> cuda -> cpu (identity without a GPU)",
       [](const std::vector<Tensor>& x) {
         const Device there = x[0].device().is_cpu() && cuda_available() ? Device::cuda() : Device::cpu();
         return (x[0].to(there) * 2.0).to(x[0].device());
       },
       {leaf({3, 4}, 21)}},
  };
}

TEST_SUITE("cuda") {
  TEST_CASE("without a GPU, a CUDA tensor is a clear error") {
    if (cuda_available()) {
      MESSAGE("skipped: a CUDA device is present");
      return;
    }
    CHECK_THROWS_WITH_ALL(Tensor::zeros({2, 3}, DType::F32, Device::cuda()), "cuda:0", "no CUDA device present");
    CHECK_THROWS_WITH_ALL(Tensor::ones({2}).to(Device::cuda()), "no CUDA device present");
  }

  TEST_CASE("Tensor::to round trip, dtype-changing copies, int tensors") {
    if (!have_cuda()) return;
    Tensor a = Tensor::from_vector<float>({1, -2, 3.5f, 4, 5, 6}, {2, 3});
    Tensor g = a.to(Device::cuda());
    CHECK(g.device() == Device::cuda());
    check_close(g.to(Device::cpu()), {1, -2, 3.5, 4, 5, 6});
    check_close(g.t().contiguous(), {1, 4, -2, 5, 3.5, 6});  // strided copy on the device
    Tensor ids = Tensor::from_vector<int64_t>({7, -1, 1LL << 40}, {3}, Device::cuda());
    CHECK(ids.to_vector<int64_t>() == std::vector<int64_t>{7, -1, 1LL << 40});
    Tensor d = Tensor::zeros({2, 3}, DType::F64, Device::cuda());
    d.copy_(a);  // host float32 -> device float64
    check_close(d, {1, -2, 3.5, 4, 5, 6});
    Tensor h = Tensor::zeros({2, 3}, DType::F64);
    h.copy_(g);  // device float32 -> host float64
    check_close(h, {1, -2, 3.5, 4, 5, 6});
    Tensor ht = Tensor::zeros({3, 2}, DType::F32).t();
    ht.copy_(g);  // into a non-contiguous host tensor
    check_close(ht.contiguous(), {1, -2, 3.5, 4, 5, 6});
    CHECK(Tensor::scalar(2.5, DType::F32, Device::cuda()).item() == 2.5);
    check_close(Tensor::arange(0, 5, 1, DType::F32, Device::cuda()), {0, 1, 2, 3, 4});
    CHECK(allocator_for(Device::cuda()).stats().bytes_in_use > 0);
  }

  TEST_CASE("random fills give the CPU's numbers") {
    if (!have_cuda()) return;
    for (DType dt : {DType::F32, DType::F64}) {
      Generator g1(5), g2(5);
      check_same(Tensor::rand({1000}, -2, 3, dt, Device::cuda(), &g1), Tensor::rand({1000}, -2, 3, dt, Device::cpu(), &g2),
                 {1e-12, 1e-12}, "rand");
      check_same(Tensor::randn({1001}, 1, 2, dt, Device::cuda(), &g1), Tensor::randn({1001}, 1, 2, dt, Device::cpu(), &g2),
                 tol_for(dt), "randn");
    }
    const std::vector<uint64_t> counters = {3, 1ull << 50, 3, 17};  // sampling's per-row draws
    check_same(Tensor::rand_rows(counters, 700, 9, Device::cuda()), Tensor::rand_rows(counters, 700, 9),
               {0, 0}, "rand_rows");
  }

  TEST_CASE("elementwise binary ops with broadcasting and strided inputs") {
    if (!have_cuda()) return;
    using BinFn = Tensor (*)(const Tensor&, const Tensor&);
    std::vector<std::pair<const char*, BinFn>> ops = {
        {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
        {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
        {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
        {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
        {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
        {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }},
    };
    for (auto& op : ops) {  // not a structured binding: clang 14 cannot capture one
      const char* name = op.first;
      BinFn fn = op.second;
      compare_both(std::string(name) + " broadcast", [fn](Inputs& in) {
        return fn(in.rand({4, 1, 5}, 1), in.rand({3, 1}, 2, 0.5, 2));
      });
      compare_both(std::string(name) + " transposed", [fn](Inputs& in) {
        return fn(in.rand_t({6, 7}, 3), in.rand_t({6, 7}, 4, 0.5, 2));
      });
    }
    compare_both("comparisons", [](Inputs& in) {
      Tensor a = in.rand({5, 6}, 1, 0, 0, false), b = in.rand({6}, 2, 0, 0, false);
      return eq(a, a) + gt(a, b) * 2.0 + lt(a, b) * 4.0 + ge(a, b) * 8.0 + le(a, b) * 16.0;
    }, false);
  }

  TEST_CASE("elementwise unary ops and their derivatives") {
    if (!have_cuda()) return;
    using UnFn = Tensor (*)(const Tensor&);
    std::vector<std::pair<const char*, UnFn>> any_sign = {
        {"neg", [](const Tensor& a) { return neg(a); }},
        {"add_scalar", [](const Tensor& a) { return a + 1.5; }},
        {"mul_scalar", [](const Tensor& a) { return a * -2.5; }},
        {"rsub_scalar", [](const Tensor& a) { return 3.0 - a; }},
        {"exp", [](const Tensor& a) { return exp(a); }},
        {"abs", [](const Tensor& a) { return abs(a); }},
        {"tanh", [](const Tensor& a) { return tanh(a); }},
        {"sigmoid", [](const Tensor& a) { return sigmoid(a); }},
        {"relu", [](const Tensor& a) { return relu(a); }},
        {"gelu_tanh", [](const Tensor& a) { return gelu(a, GeluApprox::Tanh); }},
        {"gelu_erf", [](const Tensor& a) { return gelu(a, GeluApprox::Erf); }},
        {"silu", [](const Tensor& a) { return silu(a); }},
    };
    std::vector<std::pair<const char*, UnFn>> positive = {
        {"log", [](const Tensor& a) { return log(a); }},
        {"sqrt", [](const Tensor& a) { return sqrt(a); }},
        {"rsqrt", [](const Tensor& a) { return rsqrt(a); }},
        {"reciprocal", [](const Tensor& a) { return reciprocal(a); }},
        {"pow", [](const Tensor& a) { return pow(a, 1.7); }},
    };
    for (auto& op : any_sign) {  // not a structured binding: clang 14 cannot capture one
      UnFn fn = op.second;
      compare_both(op.first, [fn](Inputs& in) { return fn(in.rand_t({9, 13}, 7)); });
    }
    for (auto& op : positive) {
      UnFn fn = op.second;
      compare_both(op.first, [fn](Inputs& in) { return fn(in.rand_t({9, 13}, 8, 0.3, 3)); });
    }
  }

  TEST_CASE("reductions over any dims, strided inputs") {
    if (!have_cuda()) return;
    compare_both("sum all", [](Inputs& in) { return sum(in.rand({37, 41}, 1)); });
    compare_both("sum dim 0 (columns)", [](Inputs& in) { return sum(in.rand({300, 5000}, 1), {0}); });
    compare_both("sum dim 1", [](Inputs& in) { return sum(in.rand({64, 3000}, 1), {1}, true); });
    compare_both("sum large all", [](Inputs& in) { return sum(in.rand({100000}, 1)); });
    compare_both("mean dims 0,2", [](Inputs& in) { return mean(in.rand({3, 4, 5}, 1), {0, 2}); });
    compare_both("mean transposed", [](Inputs& in) { return mean(in.rand_t({20, 30}, 1), {1}); });
    compare_both("max", [](Inputs& in) { return max(in.rand({6, 50}, 1), {1}); });
    compare_both("min", [](Inputs& in) { return min(in.rand({6, 50}, 1), {0}); });
    compare_both("argmax", [](Inputs& in) { return argmax(in.rand_t({6, 50}, 1), 1).to(DType::F64); }, false);
    compare_both("topk values (a block per line)", [](Inputs& in) { return topk(in.rand_t({6, 500}, 1), 7).values; });
    compare_both("topk indices: equal values and NaNs, short and long lines", [](Inputs& in) {
      std::vector<double> v(6 * 300);
      for (size_t i = 0; i < v.size(); i++) v[i] = i % 37 == 5 ? NAN : double((i * 7) % 5);
      Tensor x = Tensor::from_vector<double>(v, {6, 300}).to(in.dtype).to(in.dev);
      return concat({topk(x, 9, 1).indices.reshape({-1}), topk(x, 9, 1, false).indices.reshape({-1}),
                     topk(x, 6, 0).indices.reshape({-1})}, 0).to(DType::F64);
    }, false);
    compare_both("topk smallest, dim 0", [](Inputs& in) {
      return topk(in.rand({40, 3}, 1), 40, 0, false).indices.to(DType::F64);
    }, false);
    compare_both("sort and argsort: equal values and NaNs (a block ranks each line), long and strided lines",
                 [](Inputs& in) {
      std::vector<double> v(5 * 700);
      for (size_t i = 0; i < v.size(); i++) v[i] = i % 53 == 7 ? NAN : double((i * 11) % 13);
      Tensor x = Tensor::from_vector<double>(v, {5, 700}).to(in.dtype).to(in.dev);
      return concat({sort(x).indices.reshape({-1}), argsort(x, 1, true).reshape({-1}),
                     argsort(x.transpose(0, 1), 0).reshape({-1}), topk(x, 300, 1).indices.reshape({-1}),
                     topk(in.rand({3, 3000}, 1), 50, 1).indices.reshape({-1})}, 0).to(DType::F64);
    }, false);
    compare_both("sort values (their gradient: gather's)", [](Inputs& in) {
      return sort(in.rand_t({6, 400}, 1), 1, true).values;
    });
    compare("multinomial: one seed, the same draws", [](Inputs& in) {
      Generator gen(9);
      Tensor w = in.rand({3, 40}, 1, 0, 1, false);
      return concat({multinomial(w, 6, true, &gen), multinomial(w, 6, false, &gen)}, 1).to(DType::F64);
    }, DType::F64, false);
    compare_both("max small rows", [](Inputs& in) { return max(in.rand({5000, 3}, 1), {1}); });
    // Few outputs over many elements: split into chunks and combined in a second pass (cuda_reduce.cu).
    compare_both("sum dim 0, bias-gradient shape", [](Inputs& in) { return sum(in.rand({4096, 64}, 1), {0}); });
    compare_both("mean dim 0, 7 columns", [](Inputs& in) { return mean(in.rand({2000, 7}, 1), {0}); });
    compare_both("max dim 0, 5 columns", [](Inputs& in) { return max(in.rand({3000, 5}, 1), {0}); });
    compare_both("sum dims 0,2 of a transposed input", [](Inputs& in) {
      return sum(in.rand_t({40, 150}, 1).reshape({50, 3, 40}), {0, 2});
    });
    compare_both("cumsum inner dim", [](Inputs& in) { return cumsum(in.rand({7, 300}, 1), 1); });
    compare_both("cumsum outer dim, transposed", [](Inputs& in) { return cumsum(in.rand_t({50, 40}, 1), 0); });
    compare("cumsum int64 (token positions)", [](Inputs& in) {
      Tensor c = cumsum(in.ids({3, 0, 4, 4, 0, 9, 1, 1}, {2, 4}), 1);
      CHECK(c.to(Device::cpu()).to_vector<int64_t>() == std::vector<int64_t>{3, 3, 7, 11, 0, 9, 10, 11});
      CHECK(sum(in.ids({3, 0, 4, 4, 0, 9, 1, 1}, {2, 4}), {0}).to_vector<int64_t>() ==
            std::vector<int64_t>{3, 9, 5, 5});  // integer sums: exact, through cumsum
      return c.to(in.dtype);
    }, DType::F64, false);
  }

  TEST_CASE("views, copies, casts, concat and device moves") {
    if (!have_cuda()) return;
    compare_both("views", [](Inputs& in) {
      Tensor x = in.rand({2, 3, 4}, 1);
      Tensor y = x.permute({2, 0, 1}).reshape({4, 6}).slice(1, 1, 6, 2).transpose(0, 1);
      return y.contiguous() * in.rand({3, 1}, 2).expand({3, 4});
    });
    compare_both("concat and to_dtype", [](Inputs& in) {
      Tensor a = in.rand({2, 3}, 1), b = in.rand({2, 5}, 2);
      DType other = a.dtype() == DType::F32 ? DType::F64 : DType::F32;
      return concat({a, b.t().contiguous().t()}, 1).to(other).to(a.dtype()) * 2.0;
    });
    compare("to_device inside a graph", [](Inputs& in) {
      Tensor a = in.rand({4, 5}, 1);
      Tensor other = a.device().is_cpu() ? a : a.to(Device::cpu());  // GPU -> CPU -> GPU on the GPU run
      return (other * 3.0).to(in.dev);
    }, DType::F64);
  }

  TEST_CASE("softmax, norms, embedding, cross entropy") {
    if (!have_cuda()) return;
    compare_both("softmax", [](Inputs& in) { return softmax(in.rand({6, 37}, 1), -1); });
    compare_both("softmax dim 0", [](Inputs& in) { return softmax(in.rand({6, 37}, 1), 0); });
    compare_both("log_softmax long rows", [](Inputs& in) { return log_softmax(in.rand({3, 1500}, 1)); });
    // a warp per row up to 1024 columns (8 rows a block; 13 rows leave part of the second block idle), a block above
    compare_both("softmax, a warp per row", [](Inputs& in) { return softmax(in.rand({13, 64}, 1), -1); });
    compare_both("log_softmax, 1024 columns", [](Inputs& in) { return log_softmax(in.rand({5, 1024}, 1)); });
    compare_both("softmax, 1025 columns", [](Inputs& in) { return softmax(in.rand({3, 1025}, 1), -1); });
    compare_both("layer_norm", [](Inputs& in) {
      return layer_norm(in.rand({4, 7, 33}, 1), in.rand({33}, 2), in.rand({33}, 3));
    });
    compare_both("layer_norm many rows, no affine", [](Inputs& in) {
      return layer_norm(in.rand({2000, 16}, 1), Tensor(), Tensor());
    });
    compare_both("layer_norm many rows", [](Inputs& in) {
      return layer_norm(in.rand({3000, 64}, 1), in.rand({64}, 2), in.rand({64}, 3));
    });
    compare_both("rms_norm", [](Inputs& in) { return rms_norm(in.rand({5, 300}, 1), in.rand({300}, 2)); });
    // parameter gradients over 2 blocks of columns x 6 chunks of rows: each column block's last chunk sums them
    // (and sets its counter back to 0: the next case, and the other dtype, would go wrong otherwise)
    compare_both("layer_norm, 2 column blocks", [](Inputs& in) {
      return layer_norm(in.rand({200, 300}, 1), in.rand({300}, 2), in.rand({300}, 3));
    });
    compare_both("rms_norm, 2 column blocks", [](Inputs& in) {
      return rms_norm(in.rand({200, 300}, 1), in.rand({300}, 2));
    });
    // gamma and beta gradients come from one pass (column_sums with two terms); one of them alone from the same code
    compare_both("layer_norm, gamma only", [](Inputs& in) {
      return layer_norm(in.rand({300, 24}, 1), in.rand({24}, 2), Tensor());
    });
    compare_both("layer_norm, beta only", [](Inputs& in) {
      return layer_norm(in.rand({300, 24}, 1), Tensor(), in.rand({24}, 3));
    });
    // Pre-LN's fan-in: x's gradient from the residual is handed to the norm's backward, which adds into it
    // (accumulate_gx), and the linears' input GEMMs add into theirs with beta = 1 (take_grad_accumulator)
    compare_both("x + linear(layer_norm(x)): the norm's gx added into x's gradient", [](Inputs& in) {
      Tensor x = in.rand({40, 24}, 1) * 1.5;
      return x + linear(layer_norm(x, in.rand({24}, 2), in.rand({24}, 3)), in.rand({24, 24}, 4));
    });
    compare_both("x + linear(rms_norm(x)): the norm's gx added into x's gradient", [](Inputs& in) {
      Tensor x = in.rand({40, 24}, 1) * 1.5;
      return x + linear(rms_norm(x, in.rand({24}, 2)), in.rand({24, 24}, 4));
    });
    compare_both("x + linear(x) * linear(x): the GEMMs add into x's gradient", [](Inputs& in) {
      Tensor x = in.rand({2, 30, 24}, 1) * 1.5;
      return x + linear(x, in.rand({24, 24}, 2), in.rand({24}, 3)) * linear(x, in.rand({24, 24}, 4));
    });
    compare_both("l2_norm", [](Inputs& in) { return l2_norm(in.rand({5, 16}, 1)); });
    compare_both("embedding", [](Inputs& in) {
      Tensor w = in.rand({10, 6}, 1);
      return embedding(w, in.ids({1, 3, 3, 0, 9, 3, 2, 1}, {2, 4}), 2);
    });
    compare_both("cross_entropy", [](Inputs& in) {
      return cross_entropy(in.rand({6, 11}, 1), in.ids({0, 3, -100, 10, 3, 5}, {6}), -100, 0.1);
    });
    compare_both("cross_entropy no reduction", [](Inputs& in) {
      return cross_entropy(in.rand({4, 300}, 1), in.ids({299, 0, 7, 7}, {4}), -100, 0.0, Reduction::None);
    });
  }

  TEST_CASE("dropout, masked_fill, where, attention") {
    if (!have_cuda()) return;
    compare_both("dropout", [](Inputs& in) {
      Generator g(3);
      return dropout(in.rand({20, 30}, 1), 0.3, true, &g);
    });
    compare_both("masked_fill", [](Inputs& in) {
      Tensor mask = in.ids({0, 1, 0, 0, 1, 1}, {2, 3});
      return masked_fill(in.rand({4, 2, 3}, 1), mask, -7.0);
    });
    compare_both("where", [](Inputs& in) {
      Tensor cond = gt(in.rand({3, 4}, 5, 0, 0, false), Tensor::zeros({1}, in.dtype, in.dev));
      return where(cond, in.rand({3, 4}, 1), in.rand({4}, 2));
    });
    // q, k, v contiguous, or heads inside projections [B, T, H*dh] as a Transformer's (a GEMM with two batch dims
    // over pointer arrays on the GPU; the output merges back with a view)
    for (bool projections : {false, true}) {
      compare_both(projections ? "attention on projection views" : "attention causal + padding + dropout",
                   [projections](Inputs& in) {
                     auto heads = [&](int64_t T, uint64_t seed) {
                       return projections ? in.rand({2, T, 24}, seed).reshape({2, T, 3, 8}).transpose(1, 2)
                                          : in.rand({2, 3, T, 8}, seed);
                     };
                     Tensor q = heads(5, 1), k = heads(7, 2), v = heads(7, 3);
                     Tensor pad = in.ids({0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0}, {2, 7});
                     Generator g(11);
                     AttentionOptions opt;
                     opt.causal = true;
                     opt.dropout = 0.2;
                     opt.gen = &g;
                     Tensor out = attention(q, k, v, pad, opt);
                     return projections ? out.transpose(1, 2).reshape({2, 5, 24}) : out;
                   });
    }
    compare_both("attention, a float padding mask (converted on the device)", [](Inputs& in) {
      Tensor pad = in.ids({0, 0, 0, 1, 1, 1, 1, 1}, {2, 4}).to(in.dtype);  // batch 1: no key at all
      return attention(in.rand({2, 3, 5, 8}, 1), in.rand({2, 3, 4, 8}, 2), in.rand({2, 3, 4, 8}, 3), pad);
    });
  }

  TEST_CASE("fused Adam/AdamW and count_nonfinite match the CPU backend") {
    if (!have_cuda()) return;
    for (DType dt : {DType::F32, DType::F64}) {
      for (bool decoupled : {false, true}) {
        Generator g(1);
        Tensor p = Tensor::randn({1000}, 0, 1, dt, Device::cpu(), &g), gr = Tensor::randn({1000}, 0, 1, dt, Device::cpu(), &g);
        Tensor m = Tensor::zeros({1000}, dt), v = Tensor::zeros({1000}, dt);
        Tensor pg = p.to(Device::cuda()), gg = gr.to(Device::cuda()), mg = m.to(Device::cuda()), vg = v.to(Device::cuda());
        for (int64_t step = 1; step <= 3; step++) {
          backend_for(Device::cpu()).adam_update(p, gr, m, v, 1e-2, 0.9, 0.98, 1e-8, 0.01, decoupled, step);
          backend_for(Device::cuda()).adam_update(pg, gg, mg, vg, 1e-2, 0.9, 0.98, 1e-8, 0.01, decoupled, step);
        }
        check_same(pg, p, tol_for(dt), "adam param");
        check_same(mg, m, tol_for(dt), "adam m");
        check_same(vg, v, tol_for(dt), "adam v");
      }
    }
    Tensor x = Tensor::from_vector<float>({1, std::numeric_limits<float>::infinity(), 2, NAN, 3, 4}, {2, 3});
    CHECK(backend_for(Device::cuda()).count_nonfinite(x.to(Device::cuda())) == 2);
    CHECK(backend_for(Device::cuda()).count_nonfinite(x.to(Device::cuda()).t()) == 2);
  }

  TEST_CASE_FIXTURE(EmptyDeviceCache,
                    "multi-tensor Adam/AdamW: one upload, one launch per dtype over many tensors, the CPU's results") {
    if (!have_cuda()) return;
    // sizes 1, a partial chunk, over one 64K-element chunk, exactly two chunks, 2-D; decay on and off
    const std::vector<Shape> shapes = {{1}, {1000}, {70001}, {131072}, {3, 5}};
    const std::vector<double> wds = {0.0, 0.01, 0.1, 0.0, 0.05};
    for (int mix = 0; mix < 3; mix++) {  // all float32, all float64, both (one launch each)
      for (bool decoupled : {false, true}) {
        CAPTURE(mix);
        CAPTURE(decoupled);
        std::vector<std::array<Tensor, 4>> cpu, gpu;  // p, g, m, v
        std::vector<AdamTensors> ts;
        for (size_t k = 0; k < shapes.size(); k++) {
          const DType dt = mix == 0 ? DType::F32 : mix == 1 ? DType::F64 : k % 2 ? DType::F32 : DType::F64;
          Generator g(20 + k);
          Tensor p = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
          Tensor gr = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
          Tensor m = Tensor::zeros(shapes[k], dt), v = Tensor::zeros(shapes[k], dt);
          cpu.push_back({p, gr, m, v});
          gpu.push_back({p.to(Device::cuda()), gr.to(Device::cuda()), m.to(Device::cuda()), v.to(Device::cuda())});
        }
        for (size_t k = 0; k < gpu.size(); k++) ts.push_back({&gpu[k][0], &gpu[k][1], &gpu[k][2], &gpu[k][3], wds[k]});
        (void)gpu.back()[3].to(Device::cpu());  // the uploads above done: a staging slot still busy is a wait too
        for (int64_t step = 1; step <= 3; step++) {
          const int64_t uploads = gpu_uploads(), waits = gpu_host_waits();
          backend_for(Device::cuda()).adam_update_many(ts, 1e-2, 0.9, 0.98, 1e-8, decoupled, step);
          CHECK(gpu_uploads() - uploads == (mix == 2 ? 2 : 1));  // the tables, once per dtype
          CHECK(gpu_host_waits() - waits == 0);
          for (size_t k = 0; k < cpu.size(); k++) {
            auto& [p, gr, m, v] = cpu[k];
            backend_for(Device::cpu()).adam_update(p, gr, m, v, 1e-2, 0.9, 0.98, 1e-8, wds[k], decoupled, step);
          }
        }
        for (size_t k = 0; k < cpu.size(); k++) {
          const Tol tol = tol_for(cpu[k][0].dtype());
          check_same(gpu[k][0], cpu[k][0], tol, "param " + std::to_string(k));
          check_same(gpu[k][2], cpu[k][2], tol, "m " + std::to_string(k));
          check_same(gpu[k][3], cpu[k][3], tol, "v " + std::to_string(k));
        }
      }
    }
    // A strided tensor is not fused: the per-tensor path reports it.
    Tensor p = Tensor::zeros({4, 3}, DType::F32, Device::cuda()).t();
    Tensor g = Tensor::zeros({3, 4}, DType::F32, Device::cuda()), m = g.clone(), v = g.clone();
    CHECK_THROWS_WITH_ALL(backend_for(Device::cuda()).adam_update_many({{&p, &g, &m, &v, 0.0}}, 1e-2, 0.9, 0.98, 1e-8,
                                                                       true, 1),
                          "adam_update", "contiguous");
  }

  TEST_CASE_FIXTURE(EmptyDeviceCache,
                    "nn::AdamW on a small model: after 3 steps the GPU has the CPU's parameters; a step uploads once") {
    if (!have_cuda()) return;
    for (DType dt : {DType::F32, DType::F64}) {
      CAPTURE(dtype_name(dt));
      SmallNet cpu(3), gpu(3);
      cpu.to(dt);
      gpu.to(dt);
      gpu.to(Device::cuda());
      const nn::AdamOptions o{.lr = 1e-3, .weight_decay = 0.1, .no_decay_on_norms_and_biases = true};
      nn::AdamW opt_cpu(cpu.named_parameters(), o), opt_gpu(gpu.named_parameters(), o);
      Generator g(8);
      const Tensor x = Tensor::randn({6, 8}, 0, 1, dt, Device::cpu(), &g);
      const Tensor y = Tensor::randn({6, 4}, 0, 1, dt, Device::cpu(), &g);
      const Tensor xg = x.to(Device::cuda()), yg = y.to(Device::cuda());
      (void)yg.to(Device::cpu());  // the uploads so far done: a staging slot still busy is a wait too
      for (int step = 0; step < 3; step++) {
        opt_cpu.zero_grad();
        mean(pow(cpu.forward(x) - y, 2.0)).backward();
        opt_cpu.step();
        opt_gpu.zero_grad();
        mean(pow(gpu.forward(xg) - yg, 2.0)).backward();
        const int64_t uploads = gpu_uploads(), waits = gpu_host_waits();
        opt_gpu.step();
        CHECK(gpu_uploads() - uploads == 1);  // the multi-tensor tables: one launch for all parameters
        CHECK(gpu_host_waits() - waits == 0);
      }
      auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      REQUIRE(pc.size() == pg.size());
      for (size_t i = 0; i < pc.size(); i++) check_same(pg[i].second, pc[i].second, tol_for(dt), pc[i].first);
      auto sc = opt_cpu.named_state(), sg = opt_gpu.named_state();
      for (size_t i = 0; i < sc.size(); i++) check_same(sg[i].second, sc[i].second, tol_for(dt), sc[i].first);
    }
  }

  TEST_CASE("res_post_norm, rezero, admin (its profiling), b2t, layer_scale, sub_ln, normformer (both HeadScales), "
            "t_fixup, pre_ln with DyT: the CPU's loss, gradients on GPU") {
    if (!have_cuda()) return;
    const Tensor src = Tensor::from_vector<int64_t>({4, 5, 6, 7, 3, 8, 1, 1}, {2, 4});
    const Tensor tgt_in = Tensor::from_vector<int64_t>({2, 9, 4, 2, 10, 5}, {2, 3});
    const Tensor tgt_out = Tensor::from_vector<int64_t>({9, 4, 6, 10, 5, 1}, {2, 3});
    for (const std::string variant : {"res_post_norm", "rezero", "admin", "b2t", "layer_scale", "sub_ln", "normformer",
                                      "normformer_fairseq", "t_fixup", "pre_ln_dyt"}) {
      CAPTURE(variant);
      const bool fairseq = variant == "normformer_fairseq";  // normformer with fairseq's HeadScale
      const bool dyt = variant == "pre_ln_dyt";              // pre_ln with DyT in every norm's place
      nn::TransformerConfig c = tiny_transformer(fairseq ? "normformer" : dyt ? "pre_ln" : variant);
      c.normformer_fairseq_head_scale = fairseq;
      if (dyt) c.norm = nn::NormKind::DynamicTanh, c.dyt_alpha = 0.8;
      manual_seed(3);
      nn::Transformer cpu(c);
      manual_seed(3);
      nn::Transformer gpu(c);
      gpu.to(Device::cuda());
      for (nn::Transformer* m : {&cpu, &gpu})
        for (auto& np : m->named_parameters())  // ReZero: α away from 0, so that every branch and gradient counts
          if (np.first.find("rezero_alpha") != std::string::npos) np.second.copy_(Tensor::scalar(0.5));
      if (c.topology == "admin") {
        const auto rc = nn::admin_profile_init(cpu, src, tgt_in);
        const auto rg = nn::admin_profile_init(gpu, src.to(Device::cuda()), tgt_in.to(Device::cuda()));
        CHECK(rg.first == doctest::Approx(rc.first).epsilon(1e-5));
        CHECK(rg.second == doctest::Approx(rc.second).epsilon(1e-5));
      }
      Tensor lc = nn::label_smoothed_nll(cpu.forward(src, tgt_in), tgt_out, c.pad_id, 0.1).loss;
      lc.backward();
      Tensor lg = nn::label_smoothed_nll(gpu.forward(src.to(Device::cuda()), tgt_in.to(Device::cuda())),
                                         tgt_out.to(Device::cuda()), c.pad_id, 0.1)
                      .loss;
      lg.backward();
      check_same(lg, lc, tol_for(DType::F32), "loss");
      auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
      REQUIRE(pc.size() == pg.size());
      for (size_t i = 0; i < pc.size(); i++) {
        check_same(pg[i].second, pc[i].second, tol_for(DType::F32), pc[i].first);  // admin: the profiled ω
        check_same(pg[i].second.grad(), pc[i].second.grad(), tol_for(DType::F32), "grad " + pc[i].first);
      }
    }
  }

  TEST_CASE("bad ids and targets found on the GPU are reported at the next sync") {
    if (!have_cuda()) return;
    Tensor w = Tensor::ones({4, 3}, DType::F32, Device::cuda());
    Tensor ids = Tensor::from_vector<int64_t>({1, 7}, {2}, Device::cuda());
    CHECK_THROWS_WITH_ALL(embedding(w, ids).to_vector<float>(), "embedding", "out of range", "max_positions");
    Tensor logits = Tensor::zeros({2, 5}, DType::F32, Device::cuda());
    Tensor targets = Tensor::from_vector<int64_t>({1, 9}, {2}, Device::cuda());
    CHECK_THROWS_WITH_ALL(cross_entropy(logits, targets).item(), "cross_entropy", "out of range");
    // index 3 of a row of 3 would be the next row's first element: gather marks it for the lookup to flag
    Tensor idx = Tensor::from_vector<int64_t>({0, 3}, {1, 2}, Device::cuda());
    CHECK_THROWS_WITH_ALL(gather(w, 1, idx).to_vector<float>(), "gather: an index was out of range");
    Tensor rows = Tensor::from_vector<int64_t>({0, 4}, {2}, Device::cuda());  // whole rows: the same marker
    CHECK_THROWS_WITH_ALL(index_select(w, 0, rows).to_vector<float>(), "gather: an index was out of range");
    CHECK(Tensor::ones({2}, DType::F32, Device::cuda()).sum().item() == 2);  // the flag was cleared
  }

  TEST_CASE_FIXTURE(EmptyDeviceCache, "tracked gradient norms: the CPU's values, read back in one wait per backward") {
    if (!have_cuda()) return;
    REQUIRE(track_grad_norms());  // the library default
    std::vector<double> norms[2];
    int64_t waits = 0;
    for (int d = 0; d < 2; d++) {
      current_tape().clear();  // earlier cases may leave graphs they did not differentiate
      const Device dev = d ? Device::cuda() : Device::cpu();
      Generator g(5);
      Tensor x = Tensor::randn({8, 16}, 0, 1, DType::F64, Device::cpu(), &g).to(dev).requires_grad_();
      Tensor w = Tensor::randn({16, 16}, 0, 1, DType::F64, Device::cpu(), &g).to(dev).requires_grad_();
      Tensor loss = sum(layer_norm(relu(matmul(x, w)), Tensor(), Tensor()) * 3.0);
      std::vector<Node*> nodes;
      for (auto& n : current_tape().nodes()) nodes.push_back(n.get());
      const int64_t before = gpu_host_waits();
      backward(loss, Tensor(), /*retain_graph=*/true);
      waits = gpu_host_waits() - before;
      for (Node* n : nodes) norms[d].push_back(n->grad_norm);
      current_tape().clear();
    }
    REQUIRE(norms[0].size() == norms[1].size());
    for (size_t i = 0; i < norms[0].size(); i++) CHECK(norms[1][i] == doctest::Approx(norms[0][i]).epsilon(1e-9));
    CHECK(waits == 1);
  }

  TEST_CASE_FIXTURE(EmptyDeviceCache, "a graph snapshot on the GPU: the CPU's value and gradient norms, one wait") {
    if (!have_cuda()) return;
    Graph graphs[2];
    int64_t waits = 0;
    for (int d = 0; d < 2; d++) {
      current_tape().clear();
      const Device dev = d ? Device::cuda() : Device::cpu();
      Generator g(6);
      Tensor x = Tensor::randn({8, 16}, 0, 1, DType::F64, Device::cpu(), &g).to(dev).requires_grad_();
      Tensor w = Tensor::randn({16, 16}, 0, 1, DType::F64, Device::cpu(), &g).to(dev).requires_grad_();
      w.named("w");
      Tensor h = relu(matmul(x, w));
      Tensor loss = sum(layer_norm(h, Tensor(), Tensor()) * 3.0);
      backward(loss, Tensor(), /*retain_graph=*/true);
      const int64_t before = gpu_host_waits();
      graphs[d] = Graph::from_tape(current_tape());
      waits = gpu_host_waits() - before;
      current_tape().clear();
    }
    const Graph &cpu = graphs[0], &gpu = graphs[1];
    REQUIRE(cpu.nodes.size() == gpu.nodes.size());
    int values = 0;
    for (size_t i = 0; i < cpu.nodes.size(); i++) {
      CAPTURE(cpu.nodes[i].name);
      CHECK(gpu.nodes[i].value_norm == doctest::Approx(cpu.nodes[i].value_norm).epsilon(1e-9));
      CHECK(gpu.nodes[i].grad_norm == doctest::Approx(cpu.nodes[i].grad_norm).epsilon(1e-9));
      values += cpu.nodes[i].value_norm >= 0;
    }
    CHECK(values >= 4);  // x, w, h and the loss at least are alive
    REQUIRE(gpu.params.size() == 1);
    CHECK(gpu.params[0].grad_norm == doctest::Approx(cpu.params[0].grad_norm).epsilon(1e-9));
    CHECK(gpu.params[0].grad_norm > 0);
    CHECK(waits == 1);  // every norm in one read (it was one per node)
  }

  TEST_CASE("running out of device memory is a clear error, and the device keeps working") {
    if (!have_cuda()) return;
    CHECK_THROWS_WITH_ALL(Tensor::empty({int64_t(1) << 38}, DType::F32, Device::cuda()), "allocate",
                          "out of memory");  // 1 TiB
    CHECK(Tensor::ones({4}, DType::F32, Device::cuda()).sum().item() == 4);
  }

  TEST_CASE("reading a GPU value (item, to_vector) records nothing on the tape") {
    if (!have_cuda()) return;
    current_tape().clear();
    Tensor x = Tensor::ones({3}, DType::F32, Device::cuda()).requires_grad_();
    Tensor loss = (x * 2.0).sum();
    const size_t recorded = current_tape().nodes().size();
    CHECK(loss.item() == 6);
    CHECK(x.to_vector<float>() == std::vector<float>{1, 1, 1});
    CHECK(current_tape().nodes().size() == recorded);  // a graph dump shows the model's nodes only
    loss.backward();
    CHECK(x.grad().to_vector<float>() == std::vector<float>{2, 2, 2});
  }

  TEST_CASE_FIXTURE(EmptyDeviceCache,
                    "a read from the GPU waits once; giving memory back to the driver waits visibly") {
    if (!have_cuda()) return;
    Tensor x = Tensor::full({1000}, 2.0, DType::F32, Device::cuda());
    int64_t waits = gpu_host_waits();
    CHECK(x.sum().item() == 2000);  // the data and the device's error flags: one wait, not two
    CHECK(gpu_host_waits() - waits == 1);
    waits = gpu_host_waits();
    CHECK(x.to(Device::cpu()).to_vector<float>()[999] == 2);
    CHECK(gpu_host_waits() - waits == 1);
    // a device error found by a read is still reported (and cleared) by that read
    Tensor table = Tensor::ones({4, 2}, DType::F32, Device::cuda());
    Tensor bad = embedding(table, Tensor::full({1}, 9.0, DType::I64, Device::cuda()));
    CHECK_THROWS_WITH_ALL((void)bad.to(Device::cpu()), "embedding", "out of range");
    CHECK(x.sum().item() == 2000);
    // cudaFree may synchronise the device: the caching allocator's frees wait for the stream, counted
    CachingAllocator& gpu_memory = allocator_for(Device::cuda());
    { Tensor scratch = Tensor::empty({1 << 20}, DType::F32, Device::cuda()); }  // cached on release
    waits = gpu_host_waits();
    gpu_memory.empty_cache();
    CHECK(gpu_host_waits() - waits >= 1);
  }

  TEST_CASE("mixing devices in one op is a clear error") {
    if (!have_cuda()) return;
    Tensor a = Tensor::ones({2}), b = Tensor::ones({2}, DType::F32, Device::cuda());
    CHECK_THROWS_WITH_ALL(add(a, b), "add", "cpu", "cuda:0");
  }
}
