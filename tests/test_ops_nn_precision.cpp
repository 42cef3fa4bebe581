// Precision where the numbers are large: the row kernels keep apart what a sum would round (a row's max and its
// log-sum in log_softmax and cross_entropy, a row's mean as hi + lo in layer_norm), on every device at hand.
#include <cmath>
#include <limits>
#include <vector>

#include "test_util.h"

using namespace sgtest;

TEST_SUITE("ops_nn") {
  TEST_CASE("log_softmax and cross_entropy keep their accuracy for large logits (max and log-sum kept apart)") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    for (const Device& device : devices)
      for (DType dtype : {DType::F32, DType::BF16}) {
        for (double b : {1e4, 1e6, 3e7}) {  // [b, b]: log p = -log 2 and an even gradient, whatever b
          CAPTURE(b);
          INFO(device.str() << " " << dtype_name(dtype));
          const double tol = dtype == DType::BF16 ? 4e-3 : 1e-6;  // (bf16 rounds -log 2 itself by 1.7e-3)
          Tensor x = Tensor::full({1, 2}, b, DType::F32, device).to(dtype).requires_grad_();
          Tensor y = log_softmax(x, -1);
          check_close(y.to(DType::F32), {-0.6931472, -0.6931472}, tol, 0);
          y.backward(Tensor::from_vector<float>({1, 0}, {1, 2}).to(dtype).to(device));
          check_close(x.grad().to(DType::F32), {0.5, -0.5}, tol, 0);
          Tensor z = x.detach().requires_grad_();
          cross_entropy(z, Tensor::zeros({1}, DType::I64, device)).backward();
          check_close(z.grad().to(DType::F32), {-0.5, 0.5}, tol, 0);
        }
      }
  }
  TEST_CASE("layer_norm's backward sees the forward's mean: a row of 1e4 + small steps in float32") {
    std::vector<Device> devices{Device::cpu()};
    if (cuda_available()) devices.push_back(Device::cuda());
    const double step = std::ldexp(1.0, -10);  // 1e4 + k·2⁻¹⁰ is exact in float32; its mean is not
    const std::vector<double> row = {1e4, 1e4 + step, 1e4 + 2 * step, 1e4 + 3 * step};
    auto grads = [&](DType dtype, const Device& device) {
      Tensor x = Tensor::from_vector<double>(row, {1, 4}).to(dtype).to(device).requires_grad_();
      Tensor gamma = Tensor::ones({4}, dtype, device).requires_grad_();
      Tensor y = layer_norm(x, gamma, Tensor(), 0.0);
      y.backward(Tensor::from_vector<double>({1, 0, 0, 0}, {1, 4}).to(dtype).to(device));
      return std::make_pair(x.grad().to(DType::F64).to_vector<double>(),
                            gamma.grad().to(DType::F64).to_vector<double>());
    };
    const auto exact = grads(DType::F64, Device::cpu());  // gx = [274.8, -366.4, -91.6, 183.2]
    for (const Device& device : devices) {
      INFO(device.str());
      const auto f32 = grads(DType::F32, device);
      for (size_t i = 0; i < 4; i++) {
        CHECK(f32.first[i] == doctest::Approx(exact.first[i]).epsilon(1e-3));
        CHECK(f32.second[i] == doctest::Approx(exact.second[i]).epsilon(1e-3).scale(1));
      }
    }
  }
  TEST_CASE("x / s in float32 where 1/s is no float32: 1e38 / 1e50 is 1e-12, 0 / 1e-40 is 0") {
    const float inf = std::numeric_limits<float>::infinity();
    Tensor x = Tensor::from_vector<float>({0.0f, 1e-30f, 1e38f, inf, -2.0f}, {5});
    const std::vector<float> tiny = (x / 1e-40).to_vector<float>(), huge = (x / -1e50).to_vector<float>();
    CHECK(tiny[0] == 0.0f);
    CHECK(tiny[1] == doctest::Approx(1e10));
    CHECK(tiny[2] == inf);
    CHECK(tiny[3] == inf);
    CHECK(tiny[4] == -inf);
    CHECK(huge[0] == 0.0f);  // (-0)
    CHECK(huge[2] == doctest::Approx(-1e-12).epsilon(1e-6));
    CHECK(huge[3] == -inf);
    CHECK((x / 4.0).to_vector<float>()[4] == -0.5f);  // the usual one multiply
  }
}
