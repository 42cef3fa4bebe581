#include "autograd/gradcheck.h"

#include <cmath>
#include <sstream>

#include "autograd/ops.h"
#include "autograd/tape.h"
#include "backends/backend.h"

namespace skipgrad {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, std::vector<Tensor> inputs,
                          double eps, double atol, double rtol) {
  GradcheckResult res;
  // A fixed projection so the scalar depends on every output element with a different weight.
  Tensor w;
  auto scalar = [&](const std::vector<Tensor>& xs) {
    Tensor y = f(xs);
    if (!w.defined()) {
      Generator g(1234);
      w = Tensor::randn(y.shape(), 0, 1, y.dtype(), y.device(), &g);
    }
    return sum(mul(y, w));
  };
  current_tape().clear();  // first: inside a backward (a hook) this is an error, before anything changed
  for (size_t i = 0; i < inputs.size(); i++) {
    Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    if (x.dtype() != DType::F64)
      fail("gradcheck", ": input ", i, " must be a float64 tensor, got ", x.meta_str());
    // Perturbing one element must change one element: an expanded input (stride 0) would move several at once.
    for (int64_t d = 0; d < x.dim(); d++)
      if (x.strides()[d] == 0 && x.size(d) > 1)
        fail("gradcheck", ": input ", i, " ", x.meta_str(), " has stride 0 in dim ", d,
             " (its elements share memory, e.g. an expand()); pass .contiguous() of it");
    x.zero_grad();
  }
  Tensor L = scalar(inputs);
  check(L.requires_grad(), "gradcheck", ": the function output does not depend on any input that requires grad");
  L.backward();
  for (size_t i = 0; i < inputs.size(); i++) {
    Tensor& x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    std::vector<double> ga = analytic.defined() ? analytic.to_vector<double>() : std::vector<double>(x.numel(), 0.0);
    const std::vector<double> values = x.detach().to_vector<double>();  // in the walk's order, one copy
    Backend& be = backend_for(x.device());
    // Perturb through a contiguous index walk over the (possibly strided) input.
    Shape idx(x.dim(), 0);
    for (int64_t e = 0; e < x.numel(); e++) {
      int64_t off = x.offset();
      for (int64_t d = 0; d < x.dim(); d++) off += idx[d] * x.strides()[d];
      // the element as a 0-d view, read and written through its device's backend (a GPU input works too)
      Tensor elem = make_view(x, {}, {}, off);
      const double orig = values[e];
      double lp, lm;
      {
        NoGradGuard ng;
        be.fill(elem, orig + eps);
        lp = scalar(inputs).item();
        be.fill(elem, orig - eps);
        lm = scalar(inputs).item();
        be.fill(elem, orig);
      }
      const double num = (lp - lm) / (2 * eps);
      const double err = std::abs(num - ga[e]);
      const double rel = err / std::max(std::abs(num), 1e-12);
      // NaN (an infinite or undefined gradient on either side) fails and shows in the maxima
      if (std::isnan(err) || err > res.max_abs_err) res.max_abs_err = err;
      if (!(err <= atol) && (std::isnan(rel) || rel > res.max_rel_err)) res.max_rel_err = rel;
      if (!(err <= atol + rtol * std::abs(num)) && res.ok) {
        res.ok = false;
        std::ostringstream os;
        os << "input " << i << " " << x.meta_str() << " element " << e << ": analytic " << ga[e] << " vs numeric "
           << num << " (abs err " << err << ")";
        res.message = os.str();
      }
      for (int64_t d = x.dim() - 1; d >= 0; d--) {
        if (++idx[d] < x.size(d)) break;
        idx[d] = 0;
      }
    }
  }
  return res;
}

}  // namespace skipgrad
