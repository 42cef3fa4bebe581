// Seedable, counter-based random numbers.
//
// A Generator is (seed, offset). Element i of a random fill is a pure function of (seed, offset + i), so the
// result does not depend on thread count or device, and a training run is reproducible from its seed. Each fill
// advances the offset by the number of elements it drew. `state()`/`set_state()` let checkpoints save it.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>

namespace skipgrad {

// Threads may draw from one generator (the default one, which nn's layers use) at the same time: `advance` is
// atomic, so each draw gets counters of its own. Which thread gets which counters then depends on timing; seed it
// (manual_seed, set_state) before threads start drawing.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : seed_(seed), offset_(0) {}
  Generator(const Generator& o) : seed_(o.seed()), offset_(o.offset()) {}
  Generator& operator=(const Generator& o) {
    set_state(o.seed(), o.offset());
    return *this;
  }
  void manual_seed(uint64_t seed) { set_state(seed, 0); }
  uint64_t seed() const { return seed_.load(std::memory_order_relaxed); }
  uint64_t offset() const { return offset_.load(std::memory_order_relaxed); }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_.store(seed, std::memory_order_relaxed);
    offset_.store(offset, std::memory_order_relaxed);
  }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) { return offset_.fetch_add(n, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> seed_, offset_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

// splitmix64 of the (seed, counter) pair: 64 well-mixed bits. Usable from host and device code.
#if defined(__CUDACC__)
#define SKIPGRAD_HD __host__ __device__
#else
#define SKIPGRAD_HD
#endif
SKIPGRAD_HD inline uint64_t random_bits(uint64_t seed, uint64_t counter) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + counter + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z = z ^ (z >> 31);
  // second round so that neighbouring counters decorrelate fully
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
// Uniform double in [0, 1) with 53 random bits.
SKIPGRAD_HD inline double random_uniform01(uint64_t seed, uint64_t counter) {
  return (double)(random_bits(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}
// Standard normal by Box-Muller from two counters (2*counter, 2*counter+1) of a stream keyed apart from the
// uniform one, so a rand() drawn right after a randn() never reuses its bits.
SKIPGRAD_HD inline double random_normal01(uint64_t seed, uint64_t counter) {
  const uint64_t key = seed ^ 0x6A09E667F3BCC909ull;
  double u1 = random_uniform01(key, 2 * counter);
  double u2 = random_uniform01(key, 2 * counter + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

}  // namespace skipgrad
