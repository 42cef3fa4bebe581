// Precision where the numbers are large: the row kernels keep apart what a sum would round (a row's max and its
// log-sum in log_softmax and cross_entropy, a row's mean as hi + lo in layer_norm), on every device at hand.
// And the float32 exp and tanh of the CPU's elementwise ops (backends/cpu/vec_math.h), against float64.
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "backends/cpu/vec_math.h"
#include "backends/elementwise_math.h"
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

  // The CPU computes these ops' exp, tanh and erf in float32 by exp_vec, tanh_vec and erf_vec (cpu::VecMath). Where
  // a formula cancels (1 + tanh u in the GELU of a large negative x, the silu derivative's 1 + x(1 - s)) float32
  // loses every digit of a tiny result with libm's functions as well, so the bound is on |got - exact| / (|exact| +
  // 1), which libm's float32 meets with at most 5.5e-7 on this sweep too.
  TEST_CASE("float32 exp, tanh, sigmoid, silu and both GELUs on the CPU: forward and backward near float64's") {
    std::vector<float> xs;
    for (float x = -20; x <= 20; x = std::nextafter(x + std::abs(x) * 2e-5f, 100.0f)) xs.push_back(x);
    const int64_t n = (int64_t)xs.size();  // ~600k: the parallel path too
    using Op = std::function<Tensor(const Tensor&)>;
    const std::pair<const char*, Op> ops[] = {
        {"exp", [](const Tensor& x) { return exp(x); }},
        {"tanh", [](const Tensor& x) { return tanh(x); }},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }},
        {"silu", [](const Tensor& x) { return silu(x); }},
        {"gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApprox::Tanh); }},
        {"gelu", [](const Tensor& x) { return gelu(x, GeluApprox::Erf); }}};
    for (const auto& entry : ops) {  // (no structured binding: clang 14 refuses one captured by a lambda)
      const std::string name = entry.first;
      const Op& op = entry.second;
      CAPTURE(name);
      auto run = [&](DType dtype, bool strided) {
        Tensor base = Tensor::from_vector<float>(xs, {n}).to(dtype);
        // strided: the same values as every other element of a [n, 2] buffer
        Tensor x = (strided ? stack({base, base}, 1).select(1, 0) : base).detach().requires_grad_();
        Tensor y = op(x);
        y.backward(Tensor::ones({n}, dtype));
        return std::make_pair(y.to(DType::F64).to_vector<double>(), x.grad().to(DType::F64).to_vector<double>());
      };
      const auto exact = run(DType::F64, false), f32 = run(DType::F32, false), f32_strided = run(DType::F32, true);
      double worst_y = 0, worst_g = 0;
      for (int64_t i = 0; i < n; i++) {
        worst_y = std::max(worst_y, std::abs(f32.first[i] - exact.first[i]) / (std::abs(exact.first[i]) + 1));
        worst_g = std::max(worst_g, std::abs(f32.second[i] - exact.second[i]) / (std::abs(exact.second[i]) + 1));
      }
      CHECK(worst_y <= 1e-6);
      CHECK(worst_g <= 1e-6);
      CHECK(f32_strided.first == f32.first);  // the strided layout takes the other loop: the same numbers
      CHECK(f32_strided.second == f32.second);
    }
  }
  TEST_CASE("float32 erf of the CPU's GELU (erf_vec) is within 2 ulp of libm (1 measured); inf, NaN, 0 kept") {
    CHECK(max_ulp_distance(1e-30f, 10.0f, 1e-5f, cpu::erf_vec, [](double x) { return std::erf(x); }) <= 2);
    CHECK(max_ulp_distance(-10.0f, -1e-30f, 1e-5f, cpu::erf_vec, [](double x) { return std::erf(x); }) <= 2);
    const float inf = std::numeric_limits<float>::infinity();
    CHECK(cpu::erf_vec(inf) == 1.0f);
    CHECK(cpu::erf_vec(-inf) == -1.0f);
    CHECK(cpu::erf_vec(4.5f) == 1.0f);
    CHECK(std::isnan(cpu::erf_vec(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::bit_cast<uint32_t>(cpu::erf_vec(0.0f)) == 0u);
    CHECK(std::bit_cast<uint32_t>(cpu::erf_vec(-0.0f)) == 0x80000000u);
    // a subnormal x: 2/√π·x, to the few digits subnormal products keep
    CHECK(cpu::erf_vec(1e-40f) == doctest::Approx(std::erf(1e-40)).epsilon(1e-4).scale(0));
  }
  TEST_CASE("the CPU's float32 exp, tanh and erf (cpu::VecMath) give libm's answers at inf, -inf, NaN, 0 and -0") {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    for (UnaryOp op : {UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::GeluTanh,
                       UnaryOp::GeluErf})
      for (float x : {inf, -inf, nan, 0.0f, -0.0f, 1e30f, -1e30f}) {
        CAPTURE((int)op);
        CAPTURE(x);
        const float got = elementwise::unary_fn<float, cpu::VecMath>(op, x, 0.0f);
        const float libm = elementwise::unary_fn<float>(op, x, 0.0f);
        if (std::isnan(libm)) CHECK(std::isnan(got));
        else CHECK(std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(libm));
        const float y = libm;
        const float g = elementwise::unary_grad<float, cpu::VecMath>(op, 1.0f, x, y, 0.0f);
        const float g_libm = elementwise::unary_grad<float>(op, 1.0f, x, y, 0.0f);
        if (std::isnan(g_libm)) CHECK(std::isnan(g));
        else CHECK(g == g_libm);
      }
  }
}
