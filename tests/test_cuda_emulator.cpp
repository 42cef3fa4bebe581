// The CUDA emulator itself (tests/cuda_emulator, built with -DSKIPGRAD_CUDA_EMULATOR=ON): the CUDA semantics the
// backend's kernels rely on, and the faults it must report rather than hide. In other builds this file is empty;
// the backend's own CPU-vs-CUDA comparisons are tests/test_cuda.cpp, which the emulator runs too.
#ifdef SKIPGRAD_CUDA_EMULATED
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "nn/optim.h"
#include "test_util.h"

namespace {

using skipgrad_emu::launch;
using skipgrad_emu::LaunchConfig;

// Device buffers for a test, freed at the end.
template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n;
  explicit DeviceBuffer(size_t n_) : n(n_) { REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
  void upload(const std::vector<T>& v) { REQUIRE(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice) == 0); }
  std::vector<T> download() const {
    std::vector<T> v(n);
    REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return v;
  }
};

// out[block] = sum of in[block * blockDim .. +blockDim): a shared-memory tree with a barrier per level.
void tree_sum_kernel(const float* in, float* out) {
  __shared__ float partial[256];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// out[lane] = sum over the warp via xor shuffles (every lane gets the total).
void warp_sum_kernel(const double* in, double* out) {
  double v = in[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[threadIdx.x] = v;
}

// Half the warp shuffles while the other half waits at a block barrier: on a GPU a hang.
void split_warp_kernel(float* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  else __syncthreads();
}

void noop_kernel(float*) {}

// out[t] = what thread t+1 wrote; with `barrier` false the read races with the write.
void neighbour_kernel(float* out, float tag, bool barrier) {
  __shared__ float v[32];
  v[threadIdx.x] = tag + threadIdx.x;
  if (barrier) __syncthreads();
  out[threadIdx.x] = v[(threadIdx.x + 1) % 32];
}

// rank[block] = the how-many-th block of the launch it was to run (counter starts at 0)
void block_rank_kernel(unsigned* counter, float* rank) {
  if (threadIdx.x == 0) rank[blockIdx.x] = (float)atomicAdd(counter, 1u);
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("emulator: barriers and shuffles mean what CUDA says, block after block") {
    const int blocks = 3, threads = 256;
    std::vector<float> in(blocks * threads);
    for (size_t i = 0; i < in.size(); i++) in[i] = (float)(i % 7);
    DeviceBuffer<float> d_in(in.size()), d_out(blocks);
    d_in.upload(in);
    launch("tree_sum", LaunchConfig(blocks, threads), tree_sum_kernel, (const float*)d_in.p, d_out.p);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<float> out = d_out.download();
    for (int b = 0; b < blocks; b++) {
      double want = 0;
      for (int t = 0; t < threads; t++) want += in[b * threads + t];
      CHECK(out[b] == want);
    }

    std::vector<double> lanes(32);
    for (int i = 0; i < 32; i++) lanes[i] = i + 1;
    DeviceBuffer<double> w_in(32), w_out(32);
    w_in.upload(lanes);
    launch("warp_sum", LaunchConfig(1, 32), warp_sum_kernel, (const double*)w_in.p, w_out.p);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    for (double v : w_out.download()) CHECK(v == 32 * 33 / 2);
  }

  TEST_CASE("emulator: faults are reported as launch errors naming the kernel") {
    DeviceBuffer<float> out(32);
    // a deadlock (here: a shuffle half a warp never joins)
    launch("split_warp", LaunchConfig(1, 32), split_warp_kernel, out.p);
    cudaError_t e = cudaGetLastError();
    CHECK(e == cudaErrorLaunchFailure);
    CHECK(std::string(cudaGetErrorString(e)).find("split_warp") != std::string::npos);
    CHECK(cudaGetLastError() == cudaSuccess);  // read once, as CUDA's non-sticky errors
    // configurations CUDA refuses: an empty grid, too many threads per block
    launch("noop", LaunchConfig(0, 32), noop_kernel, out.p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    launch("noop", LaunchConfig(1, 2048), noop_kernel, out.p);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    // host memory handed to a kernel or copied as if it were device memory
    std::vector<float> host(32);
    launch("noop", LaunchConfig(1, 32), noop_kernel, host.data());
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(host.data(), host.data() + 16, 16 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(out.p, host.data(), 33 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    (void)cudaGetLastError();
  }

  TEST_CASE("emulator: a race between threads of a block changes the result from one launch to the next") {
    DeviceBuffer<float> out(32);
    auto wrong_lanes = [&](bool barrier, float tag) {
      launch("neighbour", LaunchConfig(1, 32), neighbour_kernel, out.p, tag, barrier);
      REQUIRE(cudaGetLastError() == cudaSuccess);
      const std::vector<float> v = out.download();
      int wrong = 0;
      for (int t = 0; t < 32; t++) wrong += v[t] != tag + (t + 1) % 32;
      return wrong;
    };
    // Threads run lowest-first in one launch and highest-first in the next: with the barrier both are right,
    // without it one order reads values of the previous launch.
    CHECK(wrong_lanes(true, 100) + wrong_lanes(true, 200) == 0);
    CHECK(wrong_lanes(false, 300) + wrong_lanes(false, 400) > 0);
  }

  TEST_CASE("emulator: blocks run first-to-last in one launch and last-to-first in the next") {
    // A GPU runs blocks in no set order: a kernel that relies on one fails under one of the two.
    DeviceBuffer<unsigned> counter(1);
    DeviceBuffer<float> rank(4);
    std::vector<std::vector<float>> orders;
    for (int launch_no = 0; launch_no < 2; launch_no++) {
      counter.upload({0});
      launch("block_rank", LaunchConfig(4, 32), block_rank_kernel, counter.p, rank.p);
      REQUIRE(cudaGetLastError() == cudaSuccess);
      orders.push_back(rank.download());
    }
    const std::vector<float> first_to_last{0, 1, 2, 3}, last_to_first{3, 2, 1, 0};
    CHECK(((orders[0] == first_to_last && orders[1] == last_to_first) ||
           (orders[0] == last_to_first && orders[1] == first_to_last)));
  }

  TEST_CASE("emulator: fresh device memory is NaN, allocations beyond the device fail") {
    DeviceBuffer<float> fresh(4);
    for (float v : fresh.download()) CHECK(std::isnan(v));
    void* p = nullptr;
    size_t free_bytes = 0, total = 0;
    REQUIRE(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
    CHECK(cudaMalloc(&p, total + 1) == cudaErrorMemoryAllocation);
    CHECK(p == nullptr);
    (void)cudaGetLastError();
  }

  TEST_CASE("emulator: cuBLAS in TF32 mode / BF16 compute rounds float32 operands to 10 / 7 mantissa bits") {
    cublasHandle_t h;
    REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    const float x = 1.0f + 1.0f / 4096;  // needs 12 mantissa bits: TF32 reads 1.0
    DeviceBuffer<float> a(1), b(1), c(1);
    a.upload({x});
    b.upload({1.0f});
    const float one = 1, zero = 0;
    for (cublasMath_t mode : {CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH}) {
      REQUIRE(cublasSetMathMode(h, mode) == CUBLAS_STATUS_SUCCESS);
      REQUIRE(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.p, 1, b.p, 1, &zero, c.p, 1) ==
              CUBLAS_STATUS_SUCCESS);
      CHECK(c.download()[0] == (mode == CUBLAS_DEFAULT_MATH ? x : 1.0f));
    }
    // the ...Ex GEMMs' compute types: 1 + 2^-8 needs 9 significant bits, bfloat16 has 8 (ties to even: 1.0)
    const float y = 1.0f + 1.0f / 256;
    a.upload({y});
    REQUIRE(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS);
    for (cublasComputeType_t compute : {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_32F_FAST_16BF}) {
      REQUIRE(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.p, CUDA_R_32F, 1, b.p, CUDA_R_32F, 1, &zero,
                           c.p, CUDA_R_32F, 1, compute, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      CHECK(c.download()[0] == (compute == CUBLAS_COMPUTE_32F_FAST_16BF ? 1.0f : y));
    }
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.p, CUDA_R_32F, 1, b.p, CUDA_R_32F, 1, &zero, c.p,
                       CUDA_R_32F, 1, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
    // cuBLAS's argument checks: lda below the rows of A
    CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 1, 1, &one, a.p, 1, b.p, 1, &zero, c.p, 2) ==
          CUBLAS_STATUS_INVALID_VALUE);
    cublasDestroy(h);
  }

  TEST_CASE("emulator: cuBLASLt's bias epilogues, and the promises an algorithm was chosen for") {
    // Column-major D (2 x 3) = A (2 x 2) B (2 x 3): A = [[1, 2], [3, 4]], B = [[1, 0, 1], [0, 1, 1]].
    DeviceBuffer<float> a(2 * 2 + 1), b(2 * 3), d(2 * 3), bias(3), work(1024);
    a.upload({1, 3, 2, 4, 0});
    b.upload({1, 0, 0, 1, 1, 1});
    cublasLtHandle_t h;
    REQUIRE(cublasLtCreate(&h) == CUBLAS_STATUS_SUCCESS);
    cublasLtMatrixLayout_t la, lb, ld;
    REQUIRE(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, 2, 2, 2) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, 2, 3, 2) == CUBLAS_STATUS_SUCCESS);
    REQUIRE(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, 2, 3, 2) == CUBLAS_STATUS_SUCCESS);
    const float one = 1, zero = 0;
    // Runs D = A B with the epilogue; a_ptr may be A at an offset, pref_align_a the alignment promised for it.
    auto run = [&](cublasLtEpilogue_t epi, const float* a_ptr, uint32_t pref_align_a, size_t workspace) {
      cublasLtMatmulDesc_t desc;
      REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
      const uint32_t e = epi;
      void* bp = bias.p;
      REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)) == 0);
      REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)) == 0);
      cublasLtMatmulPreference_t pref;
      REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
      const uint64_t max_ws = 4096;
      REQUIRE(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws, 8) == 0);
      REQUIRE(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &pref_align_a,
                                                   4) == 0);
      cublasLtMatmulHeuristicResult_t r;
      int found = 0;
      REQUIRE(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, 1, &r, &found) == 0);
      REQUIRE(found == 1);
      const cublasStatus_t st = cublasLtMatmul(h, desc, &one, a_ptr, la, b.p, lb, &zero, d.p, ld, d.p, ld, &r.algo,
                                               work.p, workspace, nullptr);
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatmulDescDestroy(desc);
      return st;
    };
    bias.upload({10, 20, 30});
    REQUIRE(run(CUBLASLT_EPILOGUE_BIAS, a.p, 256, 4096) == CUBLAS_STATUS_SUCCESS);
    CHECK(d.download() == std::vector<float>{11, 23, 12, 24, 13, 27});  // A B = [[1, 2, 3], [3, 4, 7]], + bias[row]
    REQUIRE(run(CUBLASLT_EPILOGUE_BGRADB, a.p, 256, 4096) == CUBLAS_STATUS_SUCCESS);
    CHECK(bias.download() == std::vector<float>{1, 1, 2});  // bias[col] = column sums of B
    CHECK(d.download() == std::vector<float>{1, 3, 2, 4, 3, 7});
    // A 4 bytes off its allocation: refused unless the preference said 4-byte alignment; a short workspace too.
    CHECK(run(CUBLASLT_EPILOGUE_DEFAULT, a.p + 1, 256, 4096) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(run(CUBLASLT_EPILOGUE_DEFAULT, a.p + 1, 4, 4096) == CUBLAS_STATUS_SUCCESS);
    CHECK(run(CUBLASLT_EPILOGUE_DEFAULT, a.p, 256, 1024) == CUBLAS_STATUS_INVALID_VALUE);
    for (cublasLtMatrixLayout_t l : {la, lb, ld}) cublasLtMatrixLayoutDestroy(l);
    cublasLtDestroy(h);
  }

  TEST_CASE_FIXTURE(sgtest::EmptyDeviceCache,
                    "an upload that finds its staging slot busy waits for it, and the 'not ready' fails no later op") {
    // On a GPU, cudaEventQuery of a slot whose copy is in flight answers cudaErrorNotReady and the runtime keeps
    // that as the last error: left there, the next launch check would report it as that op's failure.
    using skipgrad::Device, skipgrad::Tensor;
    const Tensor host = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
    const int64_t waits = sgtest::gpu_host_waits();
    skipgrad_emu::set_events_pending(true);
    std::vector<Tensor> on_gpu;
    for (int i = 0; i < 20; i++) on_gpu.push_back(host.to(Device::cuda()));  // every slot reads as busy: 20 waits
    skipgrad_emu::set_events_pending(false);
    CHECK(sgtest::gpu_host_waits() - waits == 20);
    Tensor sum = on_gpu[0] + on_gpu[19];  // a launch and its check
    CHECK(sum.to(Device::cpu()).to_vector<float>() == std::vector<float>{2, 4, 6});
    CHECK(cudaGetLastError() == cudaSuccess);
  }

  TEST_CASE_FIXTURE(sgtest::EmptyDeviceCache,
                    "an allocation that meets a faulted kernel's sticky error names it, not 'out of memory'") {
    // On a GPU every runtime call returns the fault of an earlier kernel (cudaErrorIllegalAddress, ...) until the
    // process exits, and a cudaMalloc may be the first call to see it.
    using skipgrad::Device, skipgrad::DType, skipgrad::Tensor;
    skipgrad_emu::set_malloc_error(cudaErrorIllegalAddress);
    const uint64_t os_allocs = skipgrad::allocator_for(Device::cuda()).stats().os_allocs;
    CHECK_THROWS_WITH_ALL(Tensor::empty({1 << 20}, DType::F32, Device::cuda()), "allocate", "cudaErrorIllegalAddress",
                          "4194304 bytes", "an earlier kernel or copy failed");
    skipgrad_emu::set_malloc_error(cudaSuccess);
    CHECK(skipgrad::allocator_for(Device::cuda()).stats().os_allocs == os_allocs);
    CHECK(Tensor::ones({4}, DType::F32, Device::cuda()).sum().item() == 4);
    CHECK(cudaGetLastError() == cudaSuccess);
  }

  TEST_CASE_FIXTURE(sgtest::EmptyDeviceCache,
                    "an SGD step that runs out of device memory partway changes no parameter and no momentum") {
    using skipgrad::Device, skipgrad::DType, skipgrad::Tensor;
    Tensor a = Tensor::ones({16}, DType::F32, Device::cuda()).requires_grad_();
    Tensor b = Tensor::ones({1 << 20}, DType::F32, Device::cuda()).requires_grad_();  // 4 MiB
    skipgrad::nn::SGD sgd({{"a", a}, {"b", b}}, {.lr = 0.1, .momentum = 0.9});
    auto gradients = [&] {
      sgd.zero_grad();
      (sum(mul(a, a)) + sum(mul(b, b))).backward();
    };
    gradients();
    sgd.step();  // momentum buffers of 2·p
    gradients();
    const std::vector<float> a0 = a.to_vector<float>(), b0 = b.to_vector<float>();
    const skipgrad::nn::NamedTensors state = sgd.named_state();
    std::vector<std::vector<float>> state0;
    for (const auto& [name, t] : state) state0.push_back(t.to_vector<float>());
    skipgrad::allocator_for(Device::cuda()).empty_cache();
    skipgrad_emu::set_malloc_limit(1 << 20);  // a's update fits, b's temporaries do not
    CHECK_THROWS_WITH_ALL(sgd.step(), "out of memory");
    skipgrad_emu::set_malloc_limit(0);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(a.to_vector<float>() == a0);  // a came first: without computing every value first, it would have moved
    CHECK(b.to_vector<float>() == b0);
    for (size_t k = 0; k < state.size(); k++) CHECK(state[k].second.to_vector<float>() == state0[k]);
    CHECK(sgd.step_count() == 1);
    sgd.step();  // with memory again, the step that failed: buf = 0.9 buf + g, p -= 0.1 buf (g = 2 p)
    CHECK(a.to_vector<float>()[0] == doctest::Approx(a0[0] - 0.1f * (0.9f * state0[0][0] + 2.0f * a0[0])));
  }
}

#endif  // SKIPGRAD_CUDA_EMULATED
