// Adam's multi-tensor update (Backend::adam_update_many; one launch for all parameters on a GPU): on the CPU the
// base class's loop must equal per-tensor updates bit for bit, and Optimizer::step must give per-parameter results.
// The GPU side is compared with the CPU in tests/test_cuda.cpp.
#include <array>

#include "nn/optim.h"
#include "test_util.h"

using namespace sgtest;
using namespace skipgrad::nn;

TEST_SUITE("train") {
  TEST_CASE("adam_update_many (the base class's, used by the CPU) equals adam_update per tensor, bit for bit") {
    Backend& cpu = backend_for(Device::cpu());
    // sizes 1, 7, over a 64K-element chunk, 2-D; float64 and float32 mixed; decay on and off
    const std::vector<Shape> shapes = {{1}, {7}, {70001}, {3, 5}};
    const std::vector<double> wds = {0.0, 0.01, 0.1, 0.0};
    for (bool decoupled : {false, true}) {
      std::vector<std::array<Tensor, 4>> many, each;  // p, g, m, v
      for (size_t k = 0; k < shapes.size(); k++) {
        const DType dt = k % 2 ? DType::F32 : DType::F64;
        Generator g(10 + k);
        Tensor p = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
        Tensor gr = Tensor::randn(shapes[k], 0, 1, dt, Device::cpu(), &g);
        many.push_back({p, gr, Tensor::zeros(shapes[k], dt), Tensor::zeros(shapes[k], dt)});
        each.push_back({p.clone(), gr, Tensor::zeros(shapes[k], dt), Tensor::zeros(shapes[k], dt)});
      }
      std::vector<AdamTensors> ts;
      for (size_t k = 0; k < many.size(); k++)
        ts.push_back({&many[k][0], &many[k][1], &many[k][2], &many[k][3], wds[k]});
      for (int64_t step = 1; step <= 3; step++) {
        cpu.adam_update_many(ts, 1e-2, 0.9, 0.98, 1e-8, decoupled, step);
        for (size_t k = 0; k < each.size(); k++) {
          auto& [p, gr, m, v] = each[k];
          cpu.adam_update(p, gr, m, v, 1e-2, 0.9, 0.98, 1e-8, wds[k], decoupled, step);
        }
      }
      for (size_t k = 0; k < many.size(); k++)
        for (int j : {0, 2, 3})
          CHECK_MESSAGE(same_bits(many[k][j], each[k][j]), "decoupled " << decoupled << ", tensor " << k << "." << j);
    }
  }

  TEST_CASE("Adam's step updates every parameter at once: per-parameter results, strided ones written back") {
    // "w" is strided (a transpose), "n" 1-D and spared from decay, "skip" has no gradient
    Generator g(4);
    Tensor w = Tensor::randn({5, 3}, 0, 1, DType::F64, Device::cpu(), &g).t().requires_grad_();
    Tensor n = Tensor::randn({3}, 0, 1, DType::F64, Device::cpu(), &g).requires_grad_();
    Tensor b = Tensor::randn({2, 2}, 0, 1, DType::F64, Device::cpu(), &g).requires_grad_();
    Tensor skip = Tensor::from_vector<double>({2, -1}, {2}).requires_grad_();
    REQUIRE_FALSE(w.is_contiguous());
    std::vector<Tensor> params = {w, n, b}, ref, ref_m, ref_v;
    for (const Tensor& p : params) {
      ref.push_back(p.detach().contiguous().clone());
      ref_m.push_back(Tensor::zeros(p.shape(), p.dtype()));
      ref_v.push_back(Tensor::zeros(p.shape(), p.dtype()));
    }
    AdamW opt({{"w", w}, {"n", n}, {"b", b}, {"skip", skip}},
              {.lr = 0.05, .weight_decay = 0.1, .no_decay_on_norms_and_biases = true});
    for (int64_t step = 1; step <= 3; step++) {
      for (size_t k = 0; k < params.size(); k++) {
        Tensor gr = Tensor::randn(params[k].shape(), 0, 1, DType::F64, Device::cpu(), &g);
        params[k].set_grad(gr);
        const double wd = k == 1 ? 0.0 : 0.1;  // "n" is 1-D
        backend_for(Device::cpu()).adam_update(ref[k], gr, ref_m[k], ref_v[k], 0.05, 0.9, 0.999, 1e-8, wd, true, step);
      }
      opt.step();
    }
    const NamedTensors st = opt.named_state();  // m.w, m.n, m.b, m.skip, v.w, ...
    for (size_t k = 0; k < params.size(); k++) {
      CAPTURE(k);
      CHECK(same_bits(params[k], ref[k]));
      CHECK(same_bits(st[k].second, ref_m[k]));
      CHECK(same_bits(st[4 + k].second, ref_v[k]));
    }
    CHECK(skip.to_vector<double>() == std::vector<double>{2, -1});
  }
}
