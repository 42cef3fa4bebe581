// bfloat16: the top 16 bits of a float32 (sign, the same 8 exponent bits, 7 mantissa bits). The storage type of
// DType::BF16 on every device: the host, the CPU backend's loops and the CUDA kernels use this one type, so the
// rounding is the same everywhere, and its bits are those of CUDA's __nv_bfloat16 (cuBLAS reads them as
// CUDA_R_16BF). There is no bf16 arithmetic: a value is widened to float (exact), computed on in float
// (`compute_t`) and rounded back once when stored.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SG_BF16_HD __host__ __device__ __forceinline__
#else
#define SG_BF16_HD inline
#endif

namespace skipgrad {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  // Rounds to the nearest bfloat16, ties to even (as torch's float -> bfloat16 and CUDA's __float2bfloat16);
  // NaN stays a (quiet) NaN, +-inf and +-0 stay themselves, a float above the largest bfloat16 becomes inf.
  SG_BF16_HD explicit bf16(float f) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep the sign, force a quiet mantissa bit
      bits = (uint16_t)((u >> 16) | 0x40u);
      return;
    }
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    bits = (uint16_t)((u + rounding) >> 16);
  }
  // Widening is exact.
  SG_BF16_HD operator float() const { return bits_float((uint32_t)bits << 16); }

  static SG_BF16_HD bf16 from_bits(uint16_t b) {
    bf16 h;
    h.bits = b;
    return h;
  }

 private:
  static SG_BF16_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
#endif
  }
  static SG_BF16_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
  }
};
static_assert(sizeof(bf16) == 2, "bf16 must be two bytes");

// The type a kernel computes in for elements of type T: float for bf16, T itself otherwise.
template <class T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <class T> using compute_t = typename compute_type<T>::type;

}  // namespace skipgrad
