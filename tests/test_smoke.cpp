// A first end-to-end check of the core: tensor creation, a few ops, backward.
#include "test_util.h"

using namespace sgtest;

TEST_SUITE("autograd") {
  TEST_CASE("y = sum(a * b + a) gives ga = b + 1, gb = a") {
    Tensor a = Tensor::from_vector<double>({1, 2, 3}, {3}).requires_grad_();
    Tensor b = Tensor::from_vector<double>({4, 5, 6}, {3}).requires_grad_();
    Tensor y = sum(a * b + a);
    CHECK(y.item() == doctest::Approx(1 * 4 + 2 * 5 + 3 * 6 + 6));
    y.backward();
    check_close(a.grad(), {5, 6, 7});
    check_close(b.grad(), {1, 2, 3});
  }

  TEST_CASE("matmul and linear agree with hand-computed values") {
    Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor w = Tensor::from_vector<float>({1, 0, 1, 0, 1, 0}, {2, 3});
    Tensor b = Tensor::from_vector<float>({10, 20}, {2});
    check_close(matmul(a, w, false, true), {4, 2, 10, 5});
    check_close(linear(a, w, b), {14, 22, 20, 25});
  }
}
