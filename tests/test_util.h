// Shared test helpers: random float64 inputs, closeness checks, the gradient-check registry.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "skipgrad.h"

namespace sgtest {
using namespace skipgrad;

// Timing bounds are multiplied by this: AddressSanitizer builds (scripts/sanitize.sh) run several times slower.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr double kTimingSlack = 10;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr double kTimingSlack = 10;
#else
inline constexpr double kTimingSlack = 1;
#endif
#else
inline constexpr double kTimingSlack = 1;
#endif

// A float64 leaf that requires grad, values ~ N(0, 1) from a fixed seed.
inline Tensor leaf(const Shape& s, uint64_t seed = 1, double scale = 1.0) {
  Generator g(seed);
  Tensor t = Tensor::randn(s, 0, scale, DType::F64, Device::cpu(), &g);
  t.requires_grad_();
  return t;
}
// A float64 input that does not require grad (a gradient case checks the others).
inline Tensor constant(const Shape& s, uint64_t seed = 9) {
  Generator g(seed);
  return Tensor::randn(s, 0, 1, DType::F64, Device::cpu(), &g);
}
// A float64 leaf with values in [lo, hi).
inline Tensor leaf_uniform(const Shape& s, double lo, double hi, uint64_t seed = 1) {
  Generator g(seed);
  Tensor t = Tensor::rand(s, lo, hi, DType::F64, Device::cpu(), &g);
  t.requires_grad_();
  return t;
}
// A non-contiguous float64 leaf of shape s: the transpose of a contiguous [s1, s0] tensor (2-D s only).
inline Tensor leaf_transposed(const Shape& s, uint64_t seed = 1) {
  Generator g(seed);
  Tensor base = Tensor::randn({s[1], s[0]}, 0, 1, DType::F64, Device::cpu(), &g);
  Tensor t = base.transpose(0, 1);
  t.requires_grad_();
  return t;
}

// The largest distance in float32 ulps between got(x) and ref(x) (a double, rounded to float) over x from lo to hi,
// in steps of about step·|x|: the float kernels' exp, tanh and erf against libm. (Distances count bit patterns, so
// both values of one x must have one sign: true of exp, and of tanh and erf, whose sign is x's.)
template <class Got, class Ref>
int64_t max_ulp_distance(float lo, float hi, float step, Got got, Ref ref) {
  int64_t worst = 0;
  for (float x = lo; x <= hi; x = std::nextafter(x + std::abs(x) * step, hi + 1)) {
    const int32_t a = std::bit_cast<int32_t>((float)got(x)), b = std::bit_cast<int32_t>((float)ref((double)x));
    worst = std::max<int64_t>(worst, std::abs((int64_t)a - b));
  }
  return worst;
}

// Bit-exact equality of two tensors of the same dtype and shape (any layout).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// A tiny encoder-decoder of `topology` (d 16, 2 heads, FFN 32, 2+2 layers, no dropout, vocab 13 unless given), for
// tests that run a whole model (nn, measure, the GPU's topologies).
inline nn::TransformerConfig tiny_transformer(const std::string& topology, int64_t vocab = 13,
                                              nn::NormKind norm = nn::NormKind::LayerNorm) {
  nn::TransformerConfig c;
  c.vocab = vocab;
  c.d_model = 16;
  c.heads = 2;
  c.d_ff = 32;
  c.enc_layers = c.dec_layers = 2;
  c.dropout = c.attn_dropout = c.act_dropout = 0.0;
  c.topology = topology;
  c.norm = norm;
  c.max_positions = 64;
  return c;
}

// The fixture of a case that counts the host's waits for the GPU: it starts from an empty device cache. Frees beyond
// the cache's limit go back to the driver, each a counted wait, so the count would otherwise depend on what earlier
// cases in the same process left cached.
struct EmptyDeviceCache {
  EmptyDeviceCache() {
    if (cuda_available()) allocator_for(Device::cuda()).empty_cache();
  }
};

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); i++) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}
inline void check_close(const Tensor& a, const std::vector<double>& expected, double atol = 1e-6, double rtol = 1e-5) {
  auto x = a.to_vector<double>();
  REQUIRE(x.size() == expected.size());
  for (size_t i = 0; i < x.size(); i++) {
    INFO("element " << i << ": got " << x[i] << ", expected " << expected[i]);
    CHECK(std::abs(x[i] - expected[i]) <= atol + rtol * std::abs(expected[i]));
  }
}

// float64 cos θ and sin θ [B, T, h] of random angles: a valid rotation for every pair
inline std::pair<Tensor, Tensor> random_angles(int64_t B, int64_t T, int64_t h, uint64_t seed) {
  Generator g(seed);
  const std::vector<double> theta = Tensor::randn({B, T, h}, 0, 2, DType::F64, Device::cpu(), &g).to_vector<double>();
  std::vector<double> c, s;
  for (double t : theta) c.push_back(std::cos(t)), s.push_back(std::sin(t));
  return {Tensor::from_vector(c, {B, T, h}), Tensor::from_vector(s, {B, T, h})};
}

// ---- gradient-check registry: every op in the op table must have at least one case ----
struct GradCase {
  std::string op;     // name in the op table
  std::string label;  // what the case covers (broadcast, transposed input, ...)
  std::function<Tensor(const std::vector<Tensor>&)> f;
  std::vector<Tensor> inputs;  // float64; those that require grad are checked
  double atol = 1e-5, rtol = 1e-4;
};
const std::vector<GradCase>& grad_cases();  // every registered case (tests/test_gradcheck_all.cpp)
// A case with the default tolerances.
inline GradCase gc(const char* op, const char* label, std::function<Tensor(const std::vector<Tensor>&)> f,
                   std::vector<Tensor> inputs) {
  return GradCase{op, label, std::move(f), std::move(inputs)};
}
struct GradCaseRegistrar {
  GradCaseRegistrar(std::function<std::vector<GradCase>()> make);
};
#define SG_CONCAT2(a, b) a##b
#define SG_CONCAT(a, b) SG_CONCAT2(a, b)
// REGISTER_GRAD_CASES { return std::vector<GradCase>{...}; }  (cases are built lazily, once)
#define REGISTER_GRAD_CASES                                                                               \
  static std::vector<sgtest::GradCase> SG_CONCAT(sg_grad_cases_, __LINE__)();                            \
  static sgtest::GradCaseRegistrar SG_CONCAT(sg_grad_reg_, __LINE__)(&SG_CONCAT(sg_grad_cases_, __LINE__)); \
  static std::vector<sgtest::GradCase> SG_CONCAT(sg_grad_cases_, __LINE__)()

// Runs a throwing expression and checks the skipgrad::Error message contains every fragment.
#define CHECK_THROWS_WITH_ALL(expr, ...)                                                     \
  do {                                                                                       \
    bool thrown_ = false;                                                                    \
    try {                                                                                    \
      (void)(expr);                                                                          \
    } catch (const skipgrad::Error& e_) {                                                    \
      thrown_ = true;                                                                        \
      std::string msg_ = e_.what();                                                          \
      for (const char* frag_ : {__VA_ARGS__}) {                                              \
        INFO("message: " << msg_ << " -- expected to contain: " << frag_);                 \
        CHECK(msg_.find(frag_) != std::string::npos);                                        \
      }                                                                                      \
    }                                                                                        \
    CHECK_MESSAGE(thrown_, "expected skipgrad::Error from " #expr);                          \
  } while (0)
}  // namespace sgtest
