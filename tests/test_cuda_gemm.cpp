// CUDA matrix products against the CPU: matmul and linear through cuBLAS, a linear layer's bias work in cuBLASLt
// epilogues (and the fallback where cuBLASLt declines), float32 products in TF32 and BF16. Attention's batched
// products are compared in test_cuda.cpp with the other nn ops. Helpers and tolerances: cuda_test_util.h.
#include <cstdlib>
#include <vector>

#include "cuda_test_util.h"

using namespace sgtest;

TEST_SUITE("cuda") {
  TEST_CASE("matmul and linear through cuBLAS") {
    if (!have_cuda()) return;
    compare_both("matmul 2-D", [](Inputs& in) { return matmul(in.rand({7, 5}, 1), in.rand({5, 9}, 2)); });
    compare_both("matmul transposed operands", [](Inputs& in) {
      return matmul(in.rand_t({7, 5}, 1), in.rand({9, 5}, 2), false, true);
    });
    compare_both("matmul batched with broadcast", [](Inputs& in) {
      return matmul(in.rand({3, 1, 4, 6}, 1), in.rand({2, 6, 5}, 2));
    });
    compare_both("matmul vector", [](Inputs& in) { return matmul(in.rand({4, 6}, 1), in.rand({6}, 2)); });
    compare_both("linear", [](Inputs& in) {
      return linear(in.rand({2, 3, 8}, 1), in.rand({5, 8}, 2), in.rand({5}, 3));
    });
  }

  TEST_CASE("linear's bias work in the GEMM (cuBLASLt epilogues): odd alignments, frozen parts, the fallback") {
    if (!have_cuda()) return;
    // float32 forward + backward: the bias GEMM and the weight-and-bias-gradient GEMM, fused unless declined
    const auto before = bias_gemms();
    compare("linear [3, 37, 24] -> 40", [](Inputs& in) {
      return linear(in.rand({3, 37, 24}, 1), in.rand({40, 24}, 2), in.rand({40}, 3));
    }, DType::F32);
    const auto after = bias_gemms();
    CHECK(after[0] + after[1] - before[0] - before[1] == 2);
#ifdef SKIPGRAD_CUDA_EMULATED
    CHECK(after[0] - before[0] == 2);  // the emulator's cuBLASLt has every configuration
#else
    MESSAGE("bias GEMMs fused by cuBLASLt: " << after[0] - before[0] << " of 2");
#endif
    // operands at 4-byte offsets (cuBLASLt must be told the alignment), a transposed weight; a bias at an odd
    // offset is never given to cuBLASLt (no alignment can be promised for it): the forward runs unfused, the
    // backward (its bias gradient is a new, aligned tensor) fused
    const auto odd_before = bias_gemms();
    compare_both("linear, weight transposed, input and bias at odd offsets", [](Inputs& in) {
      Tensor x = in.rand({8 * 24 + 1}, 1).narrow(0, 1, 8 * 24).reshape({8, 24});
      return linear(x, in.rand_t({40, 24}, 2), in.rand({41}, 3).narrow(0, 1, 40));
    });
    const auto odd_after = bias_gemms();
    CHECK(odd_after[1] - odd_before[1] >= 1);
#ifdef SKIPGRAD_CUDA_EMULATED
    CHECK(odd_after[0] - odd_before[0] == 1);
    CHECK(odd_after[1] - odd_before[1] == 1);
#endif
    compare_both("linear, frozen weight", [](Inputs& in) {
      return linear(in.rand({6, 24}, 1), in.rand({40, 24}, 2, 0, 0, false), in.rand({40}, 3));
    });
    compare_both("linear, frozen bias", [](Inputs& in) {
      return linear(in.rand({6, 24}, 1), in.rand({40, 24}, 2), in.rand({40}, 3, 0, 0, false));
    });
#ifdef SKIPGRAD_CUDA_EMULATED
    // cuBLASLt declining a configuration (a new shape: plans are kept): the bias work runs as kernels of its own
    setenv("SKIPGRAD_CUDA_EMULATOR_LT_DECLINE", "1", 1);
    const auto declined_before = bias_gemms();
    compare("linear, cuBLASLt declines", [](Inputs& in) {
      return linear(in.rand({7, 13}, 1), in.rand({11, 13}, 2), in.rand({11}, 3));
    }, DType::F32);
    unsetenv("SKIPGRAD_CUDA_EMULATOR_LT_DECLINE");
    CHECK(bias_gemms()[1] - declined_before[1] == 2);
#endif
  }

#ifdef SKIPGRAD_WITH_CUDA  // (these two read the CUDA backend's own counters: a CPU-only build has no CudaBackend)
  TEST_CASE("GEMMs with two batch dims: pointer arrays written once per operands and layout, then found") {
    if (!have_cuda()) return;
    auto& cuda = static_cast<CudaBackend&>(backend_for(Device::cuda()));
    // C[b, h] = A[b, h] B[b, h]^T with the heads inside [B, T, H, d] buffers, as attention's scores
    auto check_heads = [&](int64_t B, int64_t T, int64_t H, int64_t d, int copies) {
      Generator gen(3);
      Tensor a = Tensor::rand({B, T, H, d}, -1, 1, DType::F64, Device::cpu(), &gen);
      Tensor b = Tensor::rand({B, T, H, d}, -1, 1, DType::F64, Device::cpu(), &gen);
      Tensor ref = matmul(a.transpose(1, 2), b.transpose(1, 2), false, true);  // [B, H, T, T]
      Tensor ga = a.to(Device::cuda()), gb = b.to(Device::cuda());
      std::vector<Tensor> outs;  // `copies` outputs: as many different pointer arrays
      for (int i = 0; i < copies; i++) outs.push_back(Tensor::zeros({B, H, T, T}, DType::F64, Device::cuda()));
      GemmArgs g;
      g.dtype = DType::F64;
      g.trans_b = true;
      g.batch = B * H, g.batch_inner = H;
      g.m = T, g.n = T, g.k = d;
      g.a = ga.data_ptr(), g.lda = H * d, g.stride_a = d, g.stride_a_outer = T * H * d;
      g.b = gb.data_ptr(), g.ldb = H * d, g.stride_b = d, g.stride_b_outer = T * H * d;
      g.ldc = T, g.stride_c = T * T, g.stride_c_outer = H * T * T;
      for (int round = 0; round < 2; round++)
        for (Tensor& c : outs) {
          g.c = c.data_ptr();
          const int64_t writes = cuda.pointer_array_writes(), reuses = cuda.pointer_array_reuses();
          cuda.fill(c, 0);
          cuda.gemm(g);
          CHECK(cuda.pointer_array_writes() + cuda.pointer_array_reuses() == writes + reuses + 1);
          // the second round finds every array written, unless the arena was refilled in between
          if (round == 1 && copies == 1) CHECK(cuda.pointer_array_reuses() == reuses + 1);
          CHECK(max_abs_diff(c.to(Device::cpu()), ref) < 1e-14);
        }
    };
    check_heads(2, 3, 4, 5, 1);
    // 10 arrays of 480 KB fill the 4 MiB arena and make it start over: results stay right
    const int64_t writes = cuda.pointer_array_writes();
    check_heads(10000, 2, 2, 1, 10);
    CHECK(cuda.pointer_array_writes() - writes > 10);
  }

  TEST_CASE("GEMMs over pointer arrays use TF32/BF16 only when every entry is 16-byte aligned, else float32") {
    if (!have_cuda()) return;
    auto& cuda = static_cast<CudaBackend&>(backend_for(Device::cuda()));
    // C[b, h] = A[b, h] B[b, h]^T with heads of d floats inside [B, T, H, d]: entries 4 d bytes apart (those of
    // C 4 T T bytes)
    auto scores = [&](int64_t d, MatmulPrecision p) {
      const int64_t B = 2, T = 4, H = 3;
      Generator gen(4);
      Tensor a = Tensor::randn({B, T, H, d}, 0, 1, DType::F32, Device::cpu(), &gen).to(Device::cuda());
      Tensor b = Tensor::randn({B, T, H, d}, 0, 1, DType::F32, Device::cpu(), &gen).to(Device::cuda());
      Tensor c = Tensor::zeros({B, H, T, T}, DType::F32, Device::cuda());
      GemmArgs g;
      g.trans_b = true;
      g.batch = B * H, g.batch_inner = H;
      g.m = T, g.n = T, g.k = d;
      g.a = a.data_ptr(), g.lda = H * d, g.stride_a = d, g.stride_a_outer = T * H * d;
      g.b = b.data_ptr(), g.ldb = H * d, g.stride_b = d, g.stride_b_outer = T * H * d;
      g.c = c.data_ptr(), g.ldc = T, g.stride_c = T * T, g.stride_c_outer = H * T * T;
      set_float32_matmul_precision(p);
      cuda.gemm(g);
      set_float32_matmul_precision(MatmulPrecision::FP32);
      return c.to(Device::cpu()).to_vector<float>();
    };
    for (MatmulPrecision p : {MatmulPrecision::TF32, MatmulPrecision::BF16}) {
      CAPTURE(matmul_precision_name(p));
      CHECK(scores(3, p) == scores(3, MatmulPrecision::FP32));  // 12-byte heads: float32, exactly
      CHECK(scores(4, p) != scores(4, MatmulPrecision::FP32));  // 16-byte heads: the tensor cores' rounding
    }
  }

#endif

  TEST_CASE("matmul precision: names, and the CPU computes float32 whatever the setting") {
    CHECK(parse_matmul_precision("fp32") == MatmulPrecision::FP32);
    CHECK(parse_matmul_precision("tf32") == MatmulPrecision::TF32);
    CHECK(std::string(matmul_precision_name(parse_matmul_precision("bf16"))) == "bf16");
    CHECK_THROWS_WITH_ALL(parse_matmul_precision("fp16"), "matmul_precision", "'fp16'", "fp32, tf32 or bf16");
    Generator g(5);
    Tensor a = Tensor::randn({16, 64}, 0, 1, DType::F32, Device::cpu(), &g);
    Tensor b = Tensor::randn({64, 16}, 0, 1, DType::F32, Device::cpu(), &g);
    const std::vector<float> exact = matmul(a, b).to_vector<float>();
    set_float32_matmul_precision(MatmulPrecision::BF16);
    CHECK(matmul(a, b).to_vector<float>() == exact);
    set_float32_matmul_precision(MatmulPrecision::FP32);
  }

  TEST_CASE("float32 matrix products in TF32 and BF16: the CPU's results to their rounding") {
    if (!have_cuda()) return;
    using P = MatmulPrecision;
    // TF32 keeps 11 significant bits, bfloat16 8. The tensor cores may truncate rather than round (TF32 operands
    // are read from float32 registers; the emulator rounds to nearest): a relative error up to 2^-10 (2^-7) per
    // operand, on average half of it and of one sign, so a sum over k products of randn operands errs by about
    // 2^-10 sqrt(k) (2^-7 sqrt(k)) with k <= 40 here: ~6e-3 (5e-2). The tolerances are ~8 (5) of those, for the
    // results near 0 where the relative part gives nothing; a wrong operand or transpose errs by ~sqrt(k).
    struct Setting {
      P precision;
      Tol tol;
      const char* name;
    };
    for (const Setting& s : {Setting{P::TF32, {5e-2, 1e-2}, "tf32"}, Setting{P::BF16, {2.5e-1, 5e-2}, "bf16"}}) {
      set_float32_matmul_precision(s.precision);
      const Tol tol = s.tol;
      const std::string precision = s.name;
      CAPTURE(precision);
      compare("linear", [](Inputs& in) {
        return linear(in.rand({3, 7, 24}, 1), in.rand({40, 24}, 2), in.rand({40}, 3));
      }, DType::F32, true, tol);
      compare("attention on projection views", [](Inputs& in) {
        auto heads = [](const Tensor& x) { return x.reshape({2, x.size(1), 3, 8}).transpose(1, 2); };
        return attention(heads(in.rand({2, 5, 24}, 1)), heads(in.rand({2, 7, 24}, 2)), heads(in.rand({2, 7, 24}, 3)));
      }, DType::F32, true, tol);
      compare("matmul", [](Inputs& in) { return matmul(in.rand({7, 5}, 1), in.rand({5, 9}, 2)); }, DType::F32, true,
              tol);
    }
    // the setting reaches cuBLAS: reduced precision changes float32 results
    Generator g(5);
    Tensor a = Tensor::randn({16, 64}, 0, 1, DType::F32, Device::cpu(), &g).to(Device::cuda());
    Tensor b = Tensor::randn({64, 16}, 0, 1, DType::F32, Device::cpu(), &g).to(Device::cuda());
    set_float32_matmul_precision(P::FP32);
    const std::vector<float> exact = matmul(a, b).to_vector<float>();
    for (P p : {P::TF32, P::BF16}) {
      set_float32_matmul_precision(p);
      CHECK(matmul(a, b).to_vector<float>() != exact);
    }
    // float64 is unaffected by the setting
    set_float32_matmul_precision(P::BF16);
    compare("float64 matmul under BF16", [](Inputs& in) { return matmul(in.rand({7, 5}, 1), in.rand({5, 9}, 2)); },
            DType::F64);
    set_float32_matmul_precision(P::FP32);
  }
}
