// The smallest end-to-end use of skipgrad: fit y = sin(3x) with a 2-layer MLP and print the loss curve.
//
//   h = tanh(x W1^T + b1);  y_hat = h W2^T + b2;  loss = mean((y_hat - y)^2)
// Plain gradient descent: p <- p - lr * dL/dp.
//
//   mlp_demo [--device cpu|cuda|cuda:N]      the same numbers on either device; the loss is read (a host wait on
//                                            a GPU) only when it is printed
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "skipgrad.h"

using namespace skipgrad;

int main(int argc, char** argv) try {
  ensure_passive_omp(argv);  // no OpenMP threads spinning against OpenBLAS's (backends/threads.h)
  Device device = Device::cpu();
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      device = Device::parse(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: mlp_demo [--device cpu|cuda|cuda:N]\n");
      return 2;
    }
  }
  manual_seed(0);
  const int64_t n = 256, hidden = 32;
  std::vector<float> xs(n), ys(n);
  for (int64_t i = 0; i < n; i++) {
    xs[i] = -1.0f + 2.0f * (float)i / (float)(n - 1);
    ys[i] = std::sin(3.0f * xs[i]);
  }
  Tensor x = Tensor::from_vector(xs, {n, 1}, device);
  Tensor y = Tensor::from_vector(ys, {n, 1}, device);

  // drawn on the CPU (one random stream whatever the device), then moved
  Tensor w1 = Tensor::randn({hidden, 1}, 0, 1.0).to(device).requires_grad_();
  Tensor b1 = Tensor::zeros({hidden}).to(device).requires_grad_();
  Tensor w2 = Tensor::randn({1, hidden}, 0, 1.0 / std::sqrt((double)hidden)).to(device).requires_grad_();
  Tensor b2 = Tensor::zeros({1}).to(device).requires_grad_();
  std::vector<Tensor> params = {w1, b1, w2, b2};

  const double lr = 0.1;
  const int steps = 2000;
  double loss_value = 0;
  for (int step = 0; step <= steps; step++) {
    Tensor h = tanh(linear(x, w1, b1));
    Tensor loss = mean(pow(linear(h, w2, b2) - y, 2));
    const bool print = step % 200 == 0;
    if (print) loss_value = loss.item();
    loss.backward();
    {
      NoGradGuard no_grad;
      for (Tensor& p : params) {
        p.copy_(p - lr * p.grad());
        p.zero_grad();
      }
    }
    if (print) std::printf("step %5d  loss %.6f\n", step, loss_value);
  }
  std::printf("final loss %.6f (%s, %s)\n", loss_value, loss_value < 0.01 ? "fit" : "not fit", device.str().c_str());
  return loss_value < 0.01 ? 0 : 1;
} catch (const std::exception& e) {  // a bad --device, no CUDA device present: the library's message
  std::fprintf(stderr, "mlp_demo: %s\n", e.what());
  return 2;
}
