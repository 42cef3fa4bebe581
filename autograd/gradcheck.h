// Gradient checking against central finite differences (run in float64).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace skipgrad {

struct GradcheckResult {
  bool ok = true;
  double max_abs_err = 0, max_rel_err = 0;
  std::string message;  // the worst element, when not ok
};

// f maps the inputs to any tensor; the check compares d(sum(f * w))/d(input) for a fixed random weight w
// (so every output element matters) from backward against (L(x+h) - L(x-h)) / 2h, for every element of every
// input that requires grad. Inputs that require grad must be float64, on the CPU or a GPU, with no elements that
// share memory (an expand()ed input is an error). Side effects: the calling thread's tape is cleared first (graphs
// recorded before can no longer be backwarded), and each input's .grad is replaced by the analytic gradient.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                          double eps = 1e-6, double atol = 1e-5, double rtol = 1e-4);

}  // namespace skipgrad
