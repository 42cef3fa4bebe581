// Fan-in sums in backward: where a tensor feeds several consumers, a backward that makes one of its gradients adds
// into the gradient collected so far in place (take_grad_accumulator: a GEMM with beta = 1, a norm's gx) instead
// of a separate add kernel; values, and what hooks, retain_grad and .grad see, are unchanged.
#include <functional>

#include "test_util.h"

using namespace sgtest;

namespace {
// f's gradients pass the finite-difference check, and one backward of sum(f) makes `added` fan-in sums with an
// add kernel and folds `folded` into the backwards that make the gradients (take_grad_accumulator).
void check_fan_in(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& in,
                  int64_t added, int64_t folded) {
  GradcheckResult r = gradcheck(f, in);
  INFO(r.message);
  CHECK(r.ok);
  sum(f(in)).backward();
  CHECK(last_backward_fan_in().added == added);
  CHECK(last_backward_fan_in().folded == folded);
}
}  // namespace

TEST_SUITE("autograd") {
  TEST_CASE("fan-in into linear layers: their GEMMs add into the gradient collected so far, values unchanged") {
    // x = tanh(x0) feeds three linears and the residual: out = x + q * k + v. In the reverse walk the two adds
    // hand one gradient tensor to x, p and v; while v's own gradient is that tensor, x's may not be written
    // (v's linear reads it), so that sum is an add; k's and q's GEMMs then add into x's gradient in place.
    Tensor x0 = leaf({4, 3, 6}, 1), wq = leaf({6, 6}, 2), wk = leaf({6, 6}, 3), wv = leaf({6, 6}, 4);
    Tensor bq = leaf({6}, 5);
    auto f = [](const std::vector<Tensor>& in) {
      Tensor x = tanh(in[0]);
      Tensor q = linear(x, in[1], in[4]), k = linear(x, in[2]), v = linear(x, in[3]);
      return x + q * k + v;
    };
    check_fan_in(f, {x0, wq, wk, wv, bq}, 1, 2);

    // the linear's own upstream gradient is x's gradient so far (out = linear(h) + h): never written, an add
    Tensor h0 = leaf({5, 4}, 6), w = leaf({4, 4}, 7);
    auto g = [](const std::vector<Tensor>& in) {
      Tensor h = tanh(in[0]);
      return linear(h, in[1]) + h;
    };
    check_fan_in(g, {h0, w}, 1, 0);

    // a leaf's too: its .grad is the total, its hooks run once on it
    Tensor l = leaf({3, 4}, 8), w1 = leaf({2, 4}, 9), w2 = leaf({2, 4}, 10);
    int hook_calls = 0;
    l.register_hook([&](const Tensor&) { hook_calls++; return Tensor(); });
    sum(linear(l, w1) + linear(l, w2)).backward();
    CHECK(last_backward_fan_in().added == 0);
    CHECK(last_backward_fan_in().folded == 1);
    CHECK(hook_calls == 1);
    Tensor ones_rows = Tensor::ones({3, 2}, DType::F64);
    CHECK(max_abs_diff(l.grad(), matmul(ones_rows, w1.detach()) + matmul(ones_rows, w2.detach())) < 1e-12);
  }

  TEST_CASE("a tied embedding (two lookups and the output projection) scatters into one gradient") {
    // the projection's weight gradient arrives first; each embedding's backward scatters into it in place.
    // in: the source embedding's, the target embedding's and the projection's weight (one tensor when tied)
    auto model = [](const std::vector<Tensor>& in, int64_t padding_idx) {
      Tensor src = Tensor::from_vector<int64_t>({1, 3, 0, 3, 2, 1}, {2, 3});
      Tensor tgt = Tensor::from_vector<int64_t>({4, 4, 0, 2}, {2, 2});
      Tensor s = embedding(in[0], src, padding_idx), t = embedding(in[1], tgt, padding_idx);
      return linear(tanh(sum(s, {1}, true) + t), in[2]);
    };
    Tensor w = leaf({5, 3}, 16);
    GradcheckResult r = gradcheck([&](const std::vector<Tensor>& in) { return model({in[0], in[0], in[0]}, -1); },
                                  {w});
    INFO(r.message);
    CHECK(r.ok);
    sum(model({w, w, w}, -1)).backward();
    CHECK(last_backward_fan_in().folded == 2);
    // with a padding row (no gradient from the lookups, the projection's stays): the sum of three untied copies'
    for (int64_t padding_idx : {-1, 0}) {
      CAPTURE(padding_idx);
      w.zero_grad();
      sum(model({w, w, w}, padding_idx)).backward();
      std::vector<Tensor> untied{w.detach().clone().requires_grad_(), w.detach().clone().requires_grad_(),
                                 w.detach().clone().requires_grad_()};
      sum(model(untied, padding_idx)).backward();
      CHECK(max_abs_diff(w.grad(), untied[0].grad() + untied[1].grad() + untied[2].grad()) < 1e-12);
    }
  }

  TEST_CASE("a gradient folded in place is the one retain_grad, hooks and the inputs' .grad see") {
    // loss = sum(linear(h, A) * c1) + sum(linear(h, B) * c2): dh = c1 A + c2 B, B's GEMM first, A's into it
    Tensor z = leaf({3, 5}, 11), a = leaf({2, 5}, 12), b = leaf({4, 5}, 13);
    Tensor c1 = leaf({3, 2}, 14).detach(), c2 = leaf({3, 4}, 15).detach();
    Tensor h = z * 2.0;
    h.retain_grad();
    Tensor seen;
    h.register_hook([&](const Tensor& gh) { seen = gh.clone(); return Tensor(); });
    (sum(linear(h, a) * c1) + sum(linear(h, b) * c2)).backward();
    CHECK(last_backward_fan_in().folded == 1);
    CHECK(last_backward_fan_in().added == 0);
    Tensor expect;
    {
      NoGradGuard ng;
      expect = matmul(c1, a) + matmul(c2, b);
    }
    CHECK(max_abs_diff(h.grad(), expect) < 1e-12);
    CHECK(max_abs_diff(seen, expect) < 1e-12);
    CHECK(max_abs_diff(z.grad(), expect * 2.0) < 1e-12);
  }

  TEST_CASE("fan-in into a norm (Pre-LN's x -> norm -> sublayer, x -> residual): the norm's gx adds into it") {
    // out = x + linear(norm(x)): the residual's gradient reaches x first; once the linear has run nothing else
    // holds it, and the norm's backward adds its gx into it
    for (const char* kind : {"layer_norm", "rms_norm"}) {
      CAPTURE(kind);
      const bool ln = std::string(kind) == "layer_norm";
      auto f = [ln](const std::vector<Tensor>& in) {
        Tensor x = tanh(in[0]);
        Tensor h = ln ? layer_norm(x, in[1], in[2]) : rms_norm(x, in[1]);
        return x + linear(h, in[3]);
      };
      check_fan_in(f, {leaf({3, 4, 7}, 1), leaf({7}, 2), leaf({7}, 3), leaf({7, 7}, 4)}, 0, 1);
    }
  }

  TEST_CASE("fan-in into matmuls: the product adds into the gradient so far unless it needs a broadcast sum") {
    // h into matmul(h, A) and matmul(h, C^T): the second gradient GEMM runs with beta = 1 (1 folded)
    auto f = [](const std::vector<Tensor>& in) {
      Tensor h = tanh(in[0]);
      Tensor p = matmul(h, in[1]);
      return p + matmul(h, in[2], false, true);
    };
    check_fan_in(f, {leaf({2, 3, 4}, 21), leaf({4, 5}, 22), leaf({5, 4}, 23)}, 0, 1);
    // h [3, 4] as the broadcast right operand of a batched matmul: its gradient is summed over the batch, so it
    // cannot be the GEMM's output. Reached last (recorded first), that sum is an add; reached first, the other
    // product (h^T C, h's gradient C g^T) folds into it.
    for (bool broadcast_first : {true, false}) {
      CAPTURE(broadcast_first);
      auto g = [broadcast_first](const std::vector<Tensor>& in) {
        Tensor h = tanh(in[0]);
        Tensor p = broadcast_first ? sum(matmul(in[1], h)) : sum(matmul(h, in[2], true, false));
        Tensor q = broadcast_first ? sum(matmul(h, in[2], true, false)) : sum(matmul(in[1], h));
        return p + q;
      };
      check_fan_in(g, {leaf({3, 4}, 24), leaf({2, 5, 3}, 25), leaf({3, 2}, 26)}, broadcast_first ? 1 : 0,
                   broadcast_first ? 0 : 1);
    }
  }
}
