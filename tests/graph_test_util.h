// Shared by the graph suites (test_graph.cpp, test_graph_dump.cpp): a fresh tape per test, named parameters, and
// toy Post-LN / Pre-LN stacks whose path counts are known by hand.
#pragma once
#include <cmath>
#include <string>

#include "analysis/graph.h"
#include "test_util.h"

namespace sgtest {

// Each test starts and ends with an empty tape, so the snapshot holds only what the test recorded.
struct FreshTape {
  FreshTape() { current_tape().clear(); }
  ~FreshTape() { current_tape().clear(); }
};

inline Tensor param(const Shape& s, const std::string& name, uint64_t seed) {
  Tensor t = leaf(s, seed, 0.5);
  t.named(name);  // at top level, so the name is exactly `name`
  return t;
}

inline double l2(const Tensor& t) {
  double s = 0;
  for (double v : t.to_vector<double>()) s += v * v;
  return std::sqrt(s);
}

// Toy stacks of K sublayers (k = i + 1 for layer scope enc.i), branch f(h) = tanh(h W):
//   Post-LN:       x_k = LN_k(x_{k-1} + f_k(x_{k-1}))
//   Pre-LN:        x_k = x_{k-1} + f_k(LN_k(x_{k-1})),  y = LN_f(x_K)
//   Pre-LN+q_norm: as Pre-LN with f_k(h) = tanh(q_norm(h Wq) W), q_norm a layer norm in scope "q_norm"
// and the scalar loss sum(y * head.w).
enum class Topo { PostLN, PreLN, PreLNQNorm };

inline Tensor build_stack(Topo topo, int K) {
  const int64_t d = 4;
  Generator gen(7);
  Tensor x = Tensor::randn({2, d}, 0, 1, DType::F64, Device::cpu(), &gen);  // data: an unnamed input leaf
  for (int i = 0; i < K; i++) {
    std::string L = "enc." + std::to_string(i);
    Tensor W = param({d, d}, L + ".ffn.w", 10 + i);
    Tensor Wq = param({d, d}, L + ".ffn.wq", 50 + i);
    Tensor gamma = param({d}, L + ".ln.gamma", 100 + i), beta = param({d}, L + ".ln.beta", 200 + i);
    Scope enc("enc"), layer(std::to_string(i));
    if (topo == Topo::PostLN) {
      Tensor b;
      {
        Scope f("ffn");
        b = tanh(matmul(x, W));
      }
      Tensor a = add(x, b);
      a.named("residual_add");
      Scope n("ln");
      x = layer_norm(a, gamma, beta);
    } else {
      Tensor b;
      {
        Scope f("ffn");
        Tensor h;
        {
          Scope n("ln");
          h = layer_norm(x, gamma, beta);
        }
        if (topo == Topo::PreLNQNorm) {
          Tensor q = matmul(h, Wq);
          Scope qn("q_norm");
          h = layer_norm(q, Tensor(), Tensor());
        }
        b = tanh(matmul(h, W));
      }
      x = add(x, b);
      x.named("residual_add");
    }
  }
  if (topo != Topo::PostLN) {
    Tensor gf = param({d}, "final_ln.gamma", 300), bf = param({d}, "final_ln.beta", 301);
    Scope f("final_ln");
    x = layer_norm(x, gf, bf);
  }
  Tensor w_out = param({d}, "head.w", 400);
  Scope h("head");
  return sum(mul(x, w_out));
}

inline DotOptions depth(int d) {
  DotOptions o;
  o.max_depth = d;
  return o;
}

}  // namespace sgtest
