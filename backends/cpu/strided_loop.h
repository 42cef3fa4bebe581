// Iteration over N operands that share one shape but have their own strides (broadcast views have zero
// strides). Dims that are contiguous for every operand are merged first, then the innermost dim (or, when it is
// short, the longest) becomes a plain loop the compiler can vectorise, and the outer index space is split across
// OpenMP threads.
#pragma once
#include <array>
#include <cstdint>
#include <utility>

#include "tensor/tensor.h"

namespace skipgrad::cpu {

// Calls body(offsets, n, inner_strides) for each innermost row: offsets[k] is operand k's element offset of
// the row's first element, n its length and inner_strides[k] the operand's stride along it.
template <size_t N, class Body>
void strided_rows(const Shape& shape_in, const std::array<const Shape*, N>& strides_in, Body&& body,
                  int64_t parallel_threshold = 1 << 15) {
  // Merge dims (drop size-1 dims, fuse neighbours that are contiguous in every operand).
  int64_t nd = 0;
  int64_t shape[16];
  int64_t st[N][16];
  for (size_t d = 0; d < shape_in.size(); d++) {
    if (shape_in[d] == 1) continue;
    if (shape_in[d] == 0) return;
    bool fuse = nd > 0;
    for (size_t k = 0; k < N && fuse; k++) fuse = st[k][nd - 1] == (*strides_in[k])[d] * shape_in[d];
    if (fuse) {
      shape[nd - 1] *= shape_in[d];
      for (size_t k = 0; k < N; k++) st[k][nd - 1] = (*strides_in[k])[d];
    } else {
      check(nd < 16, "strided_rows", ": at most 16 dims supported (after dropping size-1 dims and merging "
            "contiguous ones), got ", shape_in);
      shape[nd] = shape_in[d];
      for (size_t k = 0; k < N; k++) st[k][nd] = (*strides_in[k])[d];
      nd++;
    }
  }
  if (nd == 0) {  // a single element
    std::array<int64_t, N> off{}, inner{};
    body(off, (int64_t)1, inner);
    return;
  }
  // A short innermost dim (a permuted view whose last dim is a few heads: [B, T, T, H] of a [B, H, T, T] tensor)
  // would make a row per few elements: loop innermost over the longest dim instead, preferring one that some
  // operand walks with stride 1. The order of the rows is free: every body treats its elements independently.
  if (nd > 1 && shape[nd - 1] < 16) {
    int64_t best = nd - 1;
    auto unit = [&](int64_t d) {
      for (size_t k = 0; k < N; k++)
        if (st[k][d] == 1) return true;
      return false;
    };
    for (int64_t d = 0; d < nd - 1; d++)
      if (shape[d] > shape[best] && (unit(d) || !unit(best))) best = d;
    if (best != nd - 1) {
      std::swap(shape[best], shape[nd - 1]);
      for (size_t k = 0; k < N; k++) std::swap(st[k][best], st[k][nd - 1]);
    }
  }
  const int64_t inner_n = shape[nd - 1];
  std::array<int64_t, N> inner{};
  for (size_t k = 0; k < N; k++) inner[k] = st[k][nd - 1];
  int64_t outer = 1;
  for (int64_t d = 0; d < nd - 1; d++) outer *= shape[d];
#pragma omp parallel for schedule(static) if (outer * inner_n >= parallel_threshold && outer > 1)
  for (int64_t o = 0; o < outer; o++) {
    std::array<int64_t, N> off{};
    int64_t rem = o;
    for (int64_t d = nd - 2; d >= 0; d--) {
      int64_t i = rem % shape[d];
      rem /= shape[d];
      for (size_t k = 0; k < N; k++) off[k] += i * st[k][d];
    }
    body(off, inner_n, inner);
  }
}

// Calls f.template operator()<T>() with T the C++ type of `dt`, for floating dtypes only.
template <class F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f.template operator()<float>(); return;
    case DType::F64: f.template operator()<double>(); return;
    default: fail(op, ": expected a floating dtype, got ", dtype_name(dt));
  }
}
template <class F>
void dispatch_all(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f.template operator()<float>(); return;
    case DType::F64: f.template operator()<double>(); return;
    case DType::I64: f.template operator()<int64_t>(); return;
    case DType::I32: f.template operator()<int32_t>(); return;
    case DType::BF16: f.template operator()<bf16>(); return;
  }
}

}  // namespace skipgrad::cpu
