// Reductions of a contiguous run in double over 8 independent lanes. One running double accumulator is a chain of
// dependent adds (an add's latency per element) that no compiler may reorder; 8 lanes let the loop vectorise. The
// lanes merge in a fixed order, so a result depends on n only (not on threads, alignment or the machine).
#pragma once
#include <cstdint>
#include <limits>

namespace skipgrad::cpu {

// init ⊕ term(0) ⊕ ... ⊕ term(n-1), with step(acc, v) folding a value in and merge(a, b) combining two lanes.
template <class Acc, class Term, class Step, class Merge>
inline Acc lane_reduce(int64_t n, Acc init, Term&& term, Step&& step, Merge&& merge) {
  constexpr int kLanes = 8;
  Acc lane[kLanes];
  for (int l = 0; l < kLanes; l++) lane[l] = init;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) lane[l] = step(lane[l], term(i + l));
  Acc acc = init;
  for (int l = 0; l < kLanes; l++) acc = merge(acc, lane[l]);
  for (; i < n; i++) acc = step(acc, term(i));
  return acc;
}

// sum of term(i) for i < n (the norms' row statistics)
template <class Term>
inline double lane_sum(int64_t n, Term&& term) {
  auto add = [](double a, double b) { return a + b; };
  return lane_reduce(n, 0.0, term, add, add);
}

// the largest of x[0..n), NaNs skipped; -inf when n = 0 (cross-entropy's row maximum; exact, so in T)
template <class T>
inline T lane_max(int64_t n, const T* x) {
  auto larger = [](T a, T v) { return v > a ? v : a; };
  return lane_reduce(n, -std::numeric_limits<T>::infinity(), [x](int64_t i) { return x[i]; }, larger, larger);
}

}  // namespace skipgrad::cpu
