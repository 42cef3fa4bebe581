// Reductions of a contiguous run in double over 8 independent lanes. One running double accumulator is a chain of
// dependent adds (an add's latency per element) that no compiler may reorder; 8 lanes let the loop vectorise. The
// lanes merge in a fixed order, so a result depends on n only (not on threads, alignment or the machine).
#pragma once
#include <cstdint>

namespace skipgrad::cpu {

// init ⊕ term(0) ⊕ ... ⊕ term(n-1), with step(acc, v) folding a value in and merge(a, b) combining two lanes.
template <class Term, class Step, class Merge>
inline double lane_reduce(int64_t n, double init, Term&& term, Step&& step, Merge&& merge) {
  constexpr int kLanes = 8;
  double lane[kLanes];
  for (int l = 0; l < kLanes; l++) lane[l] = init;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) lane[l] = step(lane[l], term(i + l));
  double acc = init;
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

}  // namespace skipgrad::cpu
