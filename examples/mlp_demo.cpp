// The smallest end-to-end use of skipgrad: fit y = sin(3x) with a 2-layer MLP and print the loss curve.
//
//   h = tanh(x W1^T + b1);  y_hat = h W2^T + b2;  loss = mean((y_hat - y)^2)
// Plain gradient descent: p <- p - lr * dL/dp.
#include <cmath>
#include <cstdio>
#include <vector>

#include "skipgrad.h"

using namespace skipgrad;

int main() {
  manual_seed(0);
  const int64_t n = 256, hidden = 32;
  std::vector<float> xs(n), ys(n);
  for (int64_t i = 0; i < n; i++) {
    xs[i] = -1.0f + 2.0f * (float)i / (float)(n - 1);
    ys[i] = std::sin(3.0f * xs[i]);
  }
  Tensor x = Tensor::from_vector(xs, {n, 1});
  Tensor y = Tensor::from_vector(ys, {n, 1});

  Tensor w1 = Tensor::randn({hidden, 1}, 0, 1.0).requires_grad_();
  Tensor b1 = Tensor::zeros({hidden}).requires_grad_();
  Tensor w2 = Tensor::randn({1, hidden}, 0, 1.0 / std::sqrt((double)hidden)).requires_grad_();
  Tensor b2 = Tensor::zeros({1}).requires_grad_();
  std::vector<Tensor> params = {w1, b1, w2, b2};

  const double lr = 0.1;
  double loss_value = 0;
  for (int step = 0; step <= 2000; step++) {
    Tensor h = tanh(linear(x, w1, b1));
    Tensor loss = mean(pow(linear(h, w2, b2) - y, 2));
    loss_value = loss.item();
    loss.backward();
    {
      NoGradGuard no_grad;
      for (Tensor& p : params) {
        p.copy_(p - lr * p.grad());
        p.zero_grad();
      }
    }
    if (step % 200 == 0) std::printf("step %5d  loss %.6f\n", step, loss_value);
  }
  std::printf("final loss %.6f (%s)\n", loss_value, loss_value < 0.01 ? "fit" : "not fit");
  return loss_value < 0.01 ? 0 : 1;
}
