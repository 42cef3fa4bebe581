// CPU vs CUDA at random shapes and layouts: each kernel family (elementwise with broadcasting, reductions, softmax,
// norms, products, cross entropy, embedding, attention, cumsum) on shapes drawn from a seeded generator, so row
// lengths, tails of blocks and warps, broadcast patterns and strides that no hand-picked case names get covered.
// Forward and backward, float64 and float32, with cuda_test_util.h's tolerances. The draws are the same on every
// run (the seed is fixed); a failure names the op, its shapes and the layout.
#include <random>
#include <sstream>

#include "cuda_test_util.h"

using namespace sgtest;

namespace {

constexpr int kDraws = 20;  // per family

struct Draw {
  std::mt19937_64 rng;
  explicit Draw(uint64_t seed) : rng(seed) {}
  int64_t in(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  bool coin(double p = 0.5) { return std::bernoulli_distribution(p)(rng); }
  Shape shape(int64_t rank_lo, int64_t rank_hi, int64_t dim_hi) {
    Shape s((size_t)in(rank_lo, rank_hi));
    for (auto& d : s) d = in(1, dim_hi);
    return s;
  }
};

std::string str(const Shape& s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

// Leaf layouts: 0 contiguous; 1 a permuted view (the leaf is stored with its dims reversed); 2 every other element
// of the last dim (the leaf is twice as wide). The gradient compared is the stored leaf's.
const char* kLayoutName[] = {"contiguous", "reversed dims", "stride 2"};
Tensor leaf(Inputs& in, const Shape& s, uint64_t seed, int layout, double lo = 0, double hi = 0) {
  if (layout == 1 && s.size() > 1) {
    Shape reversed(s.rbegin(), s.rend()), order(s.size());
    for (size_t i = 0; i < s.size(); i++) order[i] = (int64_t)(s.size() - 1 - i);
    return in.rand(reversed, seed, lo, hi).permute(order);
  }
  if (layout == 2) {
    Shape wide = s;
    wide.back() *= 2;
    return in.rand(wide, seed, lo, hi).slice((int64_t)s.size() - 1, 0, wide.back(), 2);
  }
  return in.rand(s, seed, lo, hi);
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("random shapes: elementwise with broadcasting, unary maps, reductions, cumsum") {
    if (!have_cuda()) return;
    Draw d(1);
    for (int i = 0; i < kDraws; i++) {
      const Shape a = d.shape(1, 4, 7);
      Shape b(a.begin() + d.in(0, (int64_t)a.size() - 1), a.end());  // trailing dims, some of them 1
      for (auto& x : b) x = d.coin(0.3) ? 1 : x;
      const int op = (int)d.in(0, 4), la = (int)d.in(0, 2), lb = (int)d.in(0, 2);
      const std::string name = std::string("binary op ") + std::to_string(op) + " " + str(a) + " " +
                               kLayoutName[la] + " with " + str(b) + " " + kLayoutName[lb];
      compare_both(name, [=](Inputs& in) {
        Tensor x = leaf(in, a, 1, la), y = leaf(in, b, 2, lb, 0.5, 2.0);
        switch (op) {
          case 0: return x + y;
          case 1: return x - y;
          case 2: return x * y;
          case 3: return x / y;
          default: return maximum(x, y);
        }
      });
    }
    for (int i = 0; i < kDraws; i++) {
      const Shape s = d.shape(1, 4, 9);
      const int op = (int)d.in(0, 9), layout = (int)d.in(0, 2);
      compare_both("unary op " + std::to_string(op) + " " + str(s) + " " + kLayoutName[layout], [=](Inputs& in) {
        const bool positive = op == 8 || op == 9;
        Tensor x = positive ? leaf(in, s, 1, layout, 0.2, 3.0) : leaf(in, s, 1, layout);
        switch (op) {
          case 0: return exp(x);
          case 1: return tanh(x);
          case 2: return sigmoid(x);
          case 3: return gelu(x);
          case 4: return gelu(x, GeluApprox::Tanh);
          case 5: return silu(x);
          case 6: return relu(x);
          case 7: return pow(x, 3.0);
          case 8: return log(x);
          default: return rsqrt(x);
        }
      });
    }
    for (int i = 0; i < kDraws; i++) {
      const Shape s = d.shape(1, 4, 9);
      Shape dims;
      for (int64_t k = 0; k < (int64_t)s.size(); k++)
        if (d.coin()) dims.push_back(k);
      if (dims.empty()) dims.push_back(d.in(0, (int64_t)s.size() - 1));
      const int op = (int)d.in(0, 2), layout = (int)d.in(0, 2);
      const bool keepdim = d.coin();
      compare_both("reduction " + std::to_string(op) + " of " + str(s) + " " + kLayoutName[layout] + " over " +
                       str(dims) + (keepdim ? " keepdim" : ""),
                   [=](Inputs& in) {
                     Tensor x = leaf(in, s, 1, layout);
                     return op == 0 ? sum(x, dims, keepdim) : op == 1 ? mean(x, dims, keepdim) : max(x, dims, keepdim);
                   });
      const int64_t dim = d.in(0, (int64_t)s.size() - 1);
      compare_both("cumsum of " + str(s) + " " + kLayoutName[layout] + " along " + std::to_string(dim),
                   [=](Inputs& in) { return cumsum(leaf(in, s, 1, layout), dim); });
    }
  }

  TEST_CASE("random shapes: softmax, layer_norm, rms_norm, matmul") {
    if (!have_cuda()) return;
    Draw d(2);
    for (int i = 0; i < kDraws; i++) {
      // row lengths around the warp path's limit (1024 columns) and below and above it
      const int64_t rows = d.in(1, 40), bucket = d.in(0, 2);
      const int64_t cols = bucket == 0 ? d.in(1, 70) : bucket == 1 ? d.in(990, 1060) : d.in(1500, 2100);
      const bool log_form = d.coin(), transposed = d.coin(0.3);
      compare_both(std::string(log_form ? "log_softmax " : "softmax ") + std::to_string(rows) + " x " +
                       std::to_string(cols) + (transposed ? " (over dim 0 of the transpose)" : ""),
                   [=](Inputs& in) {
                     Tensor x = transposed ? in.rand({rows, cols}, 1).transpose(0, 1) : in.rand({rows, cols}, 1);
                     const int64_t dim = transposed ? 0 : -1;
                     return log_form ? log_softmax(x, dim) : softmax(x, dim);
                   });
    }
    for (int i = 0; i < kDraws; i++) {
      const int64_t rows = d.in(1, 300), cols = d.in(1, 600);
      const bool rms = d.coin(), affine = d.coin(0.7), transposed = d.coin(0.3);
      compare_both(std::string(rms ? "rms_norm " : "layer_norm ") + std::to_string(rows) + " x " +
                       std::to_string(cols) + (affine ? "" : " no affine") + (transposed ? " of a transpose" : ""),
                   [=](Inputs& in) {
                     Tensor x = transposed ? in.rand({cols, rows}, 1).transpose(0, 1) : in.rand({rows, cols}, 1);
                     if (rms) return rms_norm(x, affine ? in.rand({cols}, 2) : Tensor());
                     return layer_norm(x, affine ? in.rand({cols}, 2) : Tensor(), affine ? in.rand({cols}, 3) : Tensor());
                   });
    }
    for (int i = 0; i < kDraws; i++) {
      const int64_t m = d.in(1, 40), n = d.in(1, 40), k = d.in(1, 40);
      Shape batch_a = d.shape(0, 2, 3), batch_b = batch_a;
      for (auto& x : batch_b) x = d.coin(0.3) ? 1 : x;  // broadcast over some batch dims
      const bool ta = d.coin(), tb = d.coin();
      Shape sa = batch_a, sb = batch_b;
      sa.push_back(ta ? k : m), sa.push_back(ta ? m : k);
      sb.push_back(tb ? n : k), sb.push_back(tb ? k : n);
      compare_both("matmul " + str(sa) + (ta ? "^T" : "") + " @ " + str(sb) + (tb ? "^T" : ""),
                   [=](Inputs& in) { return matmul(in.rand(sa, 1), in.rand(sb, 2), ta, tb); });
    }
  }

  TEST_CASE("random shapes: cross entropy, embedding, attention") {
    if (!have_cuda()) return;
    Draw d(3);
    for (int i = 0; i < kDraws; i++) {
      const int64_t n = d.in(1, 40), classes = d.in(2, 1500);
      std::vector<int64_t> targets(n);
      for (auto& t : targets) t = d.coin(0.15) ? -100 : d.in(0, classes - 1);
      const double smoothing = d.coin() ? 0.1 : 0.0;
      const Reduction reduction = d.coin(0.7) ? Reduction::Mean : d.coin() ? Reduction::Sum : Reduction::None;
      compare_both("cross_entropy " + std::to_string(n) + " x " + std::to_string(classes) + " smoothing " +
                       std::to_string(smoothing) + " reduction " + std::to_string((int)reduction),
                   [=](Inputs& in) {
                     return cross_entropy(in.rand({n, classes}, 1), in.ids(targets, {n}), -100, smoothing, reduction);
                   });
    }
    for (int i = 0; i < kDraws; i++) {
      const int64_t vocab = d.in(2, 50), dim = d.in(1, 40);
      const Shape ids_shape = d.shape(1, 2, 7);
      std::vector<int64_t> ids((size_t)numel_of(ids_shape));
      for (auto& t : ids) t = d.in(0, vocab - 1);
      const int64_t padding = d.coin() ? d.in(0, vocab - 1) : -1;
      compare_both("embedding " + std::to_string(vocab) + " x " + std::to_string(dim) + " ids " + str(ids_shape) +
                       " padding " + std::to_string(padding),
                   [=](Inputs& in) { return embedding(in.rand({vocab, dim}, 1), in.ids(ids, ids_shape), padding); });
    }
    for (int i = 0; i < kDraws; i++) {
      const int64_t B = d.in(1, 3), H = d.in(1, 3), tq = d.in(1, 9), tk = d.in(1, 9), dh = d.in(1, 16);
      const bool causal = d.coin(), padded = d.coin();
      std::vector<int64_t> pad(B * tk);
      for (auto& p : pad) p = d.coin(0.25);
      compare_both("attention B " + std::to_string(B) + " H " + std::to_string(H) + " Tq " + std::to_string(tq) +
                       " Tk " + std::to_string(tk) + " dh " + std::to_string(dh) + (causal ? " causal" : "") +
                       (padded ? " padded" : ""),
                   [=](Inputs& in) {
                     AttentionOptions opt;
                     opt.causal = causal;
                     return attention(in.rand({B, H, tq, dh}, 1), in.rand({B, H, tk, dh}, 2),
                                      in.rand({B, H, tk, dh}, 3), padded ? in.ids(pad, {B, tk}) : Tensor(), opt);
                   });
    }
  }
}
