// Edge shapes found by a probe of the op table with zero-size dims and 0-d tensors, on the CPU and (where there is
// one) the CUDA device: what PyTorch does, or a clear error where it has no answer either.
#include <vector>

#include "cuda_test_util.h"
#include "test_util.h"

using namespace sgtest;

namespace {
std::vector<Device> devices() {
  std::vector<Device> d{Device::cpu()};
  if (cuda_available()) d.push_back(Device::cuda());
  return d;
}
}  // namespace

TEST_SUITE("edge_shapes") {
  TEST_CASE("reductions of an empty view with an offset, and the backward of concat over empty tensors") {
    for (Device dev : devices()) {
      for (DType dt : {DType::F64, DType::F32}) {
        CAPTURE(dev.str());
        CAPTURE(dtype_name(dt));
        // a view 80 bytes into a 64-byte block: the CUDA reduction used to pass its pointer to a kernel
        Tensor v = Tensor::zeros({4, 0, 5}, dt, dev).narrow(0, 2, 2);
        CHECK(v.sum().item() == 0);
        CHECK(sum(v, {1}).to(Device::cpu()).to_vector<double>() == std::vector<double>(10, 0.0));
        CHECK(norm2(v).item() == 0);
        Tensor a = Tensor::randn({2, 0, 5}, 0, 1, dt, dev).requires_grad_();
        mul(concat({a, mul(a, 2.0)}, 0), 1.0).sum().backward();  // the tracker takes norms of empty views
        REQUIRE(a.grad().defined());
        CHECK(a.grad().shape() == Shape{2, 0, 5});
      }
    }
  }

  TEST_CASE("layer_norm over an empty last dim: empty gradients for gamma and beta") {
    for (Device dev : devices()) {
      CAPTURE(dev.str());
      Tensor x = Tensor::zeros({3, 0}, DType::F32, dev).requires_grad_();
      Tensor g = Tensor::ones({0}, DType::F32, dev).requires_grad_();
      Tensor b = Tensor::zeros({0}, DType::F32, dev).requires_grad_();
      Tensor y = layer_norm(x, g, b);
      CHECK(y.shape() == Shape{3, 0});
      y.sum().backward();
      CHECK(g.grad().shape() == Shape{0});
      CHECK(b.grad().shape() == Shape{0});
      CHECK(x.grad().shape() == Shape{3, 0});
      // no rows, features present: the parameters' gradients are zeros of their shape
      Tensor x2 = Tensor::zeros({0, 4}, DType::F64, dev).requires_grad_();
      Tensor g2 = Tensor::ones({4}, DType::F64, dev).requires_grad_();
      Tensor b2 = Tensor::zeros({4}, DType::F64, dev).requires_grad_();
      layer_norm(x2, g2, b2).sum().backward();
      CHECK(g2.grad().to(Device::cpu()).to_vector<double>() == std::vector<double>(4, 0.0));
      CHECK(b2.grad().to(Device::cpu()).to_vector<double>() == std::vector<double>(4, 0.0));
    }
  }

  TEST_CASE("clip_grads_to_norm with a 0-d parameter, the norm kept on the device") {
    for (Device dev : devices()) {
      CAPTURE(dev.str());
      Tensor p = Tensor::full({}, 3.0, DType::F32, dev).requires_grad_();
      Tensor q = Tensor::full({2}, 1.0, DType::F32, dev).requires_grad_();
      add(mul(p, p), sum(mul(q, 2.0))).backward();  // grads: p 6, q [2, 2]; total sqrt(44)
      const std::vector<Tensor> params{p, q};
      nn::clip_grads_to_norm(params, 1.0, nn::total_grad_norm(params));
      CHECK(p.grad().item() == doctest::Approx(6 / std::sqrt(44.0)).epsilon(1e-5));
      CHECK(q.grad().to(Device::cpu()).to_vector<double>()[1] == doctest::Approx(2 / std::sqrt(44.0)).epsilon(1e-5));
    }
  }

  TEST_CASE("max of an empty tensor over dims that are not empty is empty; over an empty dim, an error") {
    for (Device dev : devices()) {
      CAPTURE(dev.str());
      Tensor a = Tensor::zeros({0, 4}, DType::F32, dev).requires_grad_();
      Tensor m = max(a, {1}, false);
      CHECK(m.shape() == Shape{0});
      m.sum().backward();
      CHECK(a.grad().shape() == Shape{0, 4});
      CHECK(max(Tensor::zeros({3, 0}, DType::F32, dev), {0}, true).shape() == Shape{1, 0});
      CHECK_THROWS_WITH_ALL(max(Tensor::zeros({3, 0}, DType::F32, dev), {1}, false), "max", "empty dim", "[3,0]");
      CHECK_THROWS_WITH_ALL(max(Tensor::zeros({0}, DType::F32, dev), {}, false), "max", "empty dim");
    }
  }

  TEST_CASE("split and chunk along a size-0 dim: one empty piece, and `chunks` empty pieces, as in PyTorch") {
    Tensor x = Tensor::zeros({0, 4});
    std::vector<Tensor> s = split(x, 2, 0);
    REQUIRE(s.size() == 1);
    CHECK(s[0].shape() == Shape{0, 4});
    std::vector<Tensor> c = chunk(x, 3, 0);
    REQUIRE(c.size() == 3);
    for (const Tensor& piece : c) CHECK(piece.shape() == Shape{0, 4});
    CHECK(split(Tensor::zeros({5, 4}), 2, 0).size() == 3);  // unchanged where the dim is not empty
  }

  TEST_CASE("a 0-d tensor is a line of one for reductions, squeeze and transpose; t() of 1-D is itself (torch)") {
    for (Device dev : devices()) {
      INFO(dev.str());
      Tensor x = Tensor::scalar(3.0, DType::F64).to(dev).requires_grad_();
      for (int64_t d : {0, -1}) {
        CHECK(sum(x, {d}).shape() == Shape{});
        CHECK(mean(x, {d}, true).item() == 3.0);
        CHECK(max(x, {d}).item() == 3.0);
        CHECK(min(x, {d}).item() == 3.0);
        CHECK(x.squeeze(d).shape() == Shape{});
        CHECK(x.transpose(d, 0).item() == 3.0);
      }
      sum(mul(sum(x, {0}), 2.0)).backward();
      CHECK(x.grad().item() == 2.0);
      CHECK_THROWS_WITH_ALL(sum(x, {1}), "sum", "dim 1 out of range", "a 0-d tensor takes 0 or -1");
      CHECK_THROWS_WITH_ALL(sum(x, {0, -1}), "sum", "given twice");
      CHECK_THROWS_WITH_ALL(x.squeeze(2), "squeeze", "0 or -1");
      CHECK(x.t().shape() == Shape{});
      const Tensor v = Tensor::arange(0, 3, 1, DType::F64).to(dev);
      CHECK(v.t().shape() == Shape{3});
      CHECK(Tensor::zeros({2, 3, 4}).t().shape() == Shape{2, 4, 3});  // the last two dims
    }
  }

  TEST_CASE("narrow with a negative start counts from the end; size-1 dims do not count toward the 16-dim limit") {
    const Tensor v = Tensor::arange(0, 5, 1, DType::F64);
    CHECK(v.narrow(0, -2, 2).to_vector<double>() == std::vector<double>{3, 4});
    CHECK_THROWS_WITH_ALL(v.narrow(0, -6, 1), "narrow", "out of bounds");
    CHECK_THROWS_WITH_ALL(v.narrow(0, -2, 3), "narrow", "[3, 6) (start -2, counted from the end) out of bounds");
    for (Device dev : devices()) {
      INFO(dev.str());
      Shape s(20, 1);  // [2, 1 x 18, 3]: 20 dims, 2-D really
      s.front() = 2;
      s.back() = 3;
      Tensor a = Tensor::ones(s, DType::F32, dev);
      CHECK(sum(a + a).item() == 12.0);
      Tensor c = Tensor::ones(Shape(17, 2), DType::F32, dev);  // 17 dims of 2, contiguous: they merge
      CHECK(sum(c).item() == 131072.0);
      CHECK(sum(c, {0}).shape() == Shape(16, 2));
      CHECK(sum(c, {0}).to_vector<float>() == std::vector<float>(65536, 2.0f));
      Shape alternate(17, 1);  // [2,1,2,1,...] expanded to [2]*17: strides 0 and not 0 in turn, no dims merge
      for (size_t d = 0; d < alternate.size(); d += 2) alternate[d] = 2;
      Tensor b = Tensor::zeros(alternate, DType::F32, dev).expand(Shape(17, 2));
      CHECK_THROWS_WITH_ALL(b + b, "at most 16 dims", "[2,2,2");
    }
  }
}
